"""The peer side of bench.peer: Hugging Face TRL's `GRPOTrainer` (CPU, no vLLM) on the
task bench.peer gives it, in a process of its own, timed the way asyncrl's runs are.

    python -m bench.peer_trl SPEC.json OUT.json

SPEC (written by bench.peer): the policy directory, the prompts (rendered by the
policy's own chat template, as asyncrl's engine sees them) with their task seeds,
the env that scores a completion, and the matched hyper-parameters; for a multi-turn
task also the opening messages and `max_turns`: TRL then runs its own tool loop
(`GRPOTrainer(tools=...)`) with the env's calculator (its latency included) as the tool,
on the messages it renders itself, which must render byte for byte as the prompts. OUT: the process
and loop clocks (`process_s`, `startup_s`: process start to the first step, `loop_s`,
`shutdown_s`), and per step its end time in the loop and the mean reward of its
completions, plus where the trained policy was saved (for bench.peer's held-out
evaluation). Needs the `peer` extra (`pip install -e ".[peer]"`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

PROCESS_START = time.perf_counter()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from bench.peer_tasks import assistant_turns, replay

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.began: float | None = None
            self.steps: list[dict[str, float]] = []
            self.rewards: list[float] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.began = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if logs and "reward" in logs:
                self.rewards.append(float(logs["reward"]))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.steps.append({"loop_s": time.perf_counter() - self.began})

    multi_turn = "messages" in spec

    def reward(completions: list[Any], seed: list[int], **_: Any) -> list[float]:
        # multi-turn: each completion is the assistant and tool messages TRL's loop made
        turns = [assistant_turns(c) if multi_turn else [c] for c in completions]
        return [replay(spec["env"], s, t)[0] for s, t in zip(seed, turns, strict=True)]

    tokenizer = AutoTokenizer.from_pretrained(spec["policy"])
    model = AutoModelForCausalLM.from_pretrained(spec["policy"])
    hp = spec["hyper"]
    tools: dict[str, Any] = {}
    if multi_turn:
        tools = _tool_loop(spec, tokenizer)
        dataset = Dataset.from_dict({"prompt": spec["messages"], "seed": spec["seeds"]})
    else:
        dataset = Dataset.from_dict({"prompt": spec["prompts"], "seed": spec["seeds"]})
    config = GRPOConfig(
        output_dir=str(out.parent / "trl-run"),
        per_device_train_batch_size=hp["prompts_per_step"] * hp["group_size"],
        num_generations=hp["group_size"],
        max_completion_length=hp["max_completion_tokens" if multi_turn else "max_new_tokens"],
        learning_rate=hp["lr"],
        lr_scheduler_type="constant",
        beta=0.0,
        temperature=1.0,
        max_steps=hp["steps"],
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_vllm=False,
        use_cpu=True,
        bf16=False,
        seed=hp["seed"],
        max_grad_norm=1.0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **({"max_tool_calling_iterations": spec["max_turns"] - 1} if multi_turn else {}),
    )
    clock = Clock()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[clock],
        **tools,
    )
    trainer.train()
    loop_end = time.perf_counter()
    final = out.parent / "trl-final"
    trainer.model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    for step, reward_mean in zip(clock.steps, clock.rewards, strict=False):
        step["reward"] = reward_mean
    result = {
        "startup_s": clock.began - PROCESS_START,
        "loop_s": loop_end - clock.began,
        "steps": clock.steps,
        "final_model": str(final),
    }
    result["shutdown_s"] = time.perf_counter() - loop_end
    result["process_s"] = time.perf_counter() - PROCESS_START
    out.write_text(json.dumps(result))


def _tool_loop(spec: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """GRPOTrainer's `tools` argument for the spec's env: its calculator (latency
    included), with TRL's Qwen3 response schema on `tokenizer` (the policy's template
    writes tool calls as Qwen3's does; TRL does not recognise the template by itself),
    once TRL's render of the opening messages is checked to be the prompt asyncrl's
    engine sees."""
    from trl.chat_template_utils import qwen3_template

    calculator = trl_calculator(spec["env"]["kwargs"].get("tool_latency_s", 0.0))
    tokenizer.response_template = qwen3_template
    check_render(tokenizer, spec["messages"][0], [calculator], spec["prompts"][0])
    return {"tools": [calculator]}


def trl_calculator(latency_s: float) -> Callable[..., Awaitable[str]]:
    """The env's calculator (envs.tools.calculator) as TRL takes a tool: a function whose
    signature and docstring TRL turns into the schema, here the env's own."""
    from envs.tools.calculator import Calculator

    tool = Calculator(latency_s)

    async def calculator(expression: str):  # no return type: TRL would put it in the schema
        """Evaluate an arithmetic expression.

        Args:
            expression: e.g. 37 * 12 + 5
        """
        return await tool(expression)

    return calculator


def check_render(tokenizer: Any, messages: list[dict], tools: list[Any], prompt: str) -> None:
    """Exit with the two renders unless TRL's render of `messages` with `tools` (its
    apply_chat_template) is `prompt`, asyncrl's render of the same task."""
    rendered = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=True
    )
    if rendered != prompt:
        raise SystemExit(
            "TRL renders the task's prompt differently from asyncrl (the calculator's schema "
            f"drifted from envs.tools.calculator?):\n{rendered!r}\n!=\n{prompt!r}"
        )


if __name__ == "__main__":
    main()
