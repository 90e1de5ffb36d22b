"""The peer side of bench.peer: Hugging Face TRL's `GRPOTrainer` (CPU, no vLLM) on the
task bench.peer gives it, in a process of its own, timed the way asyncrl's runs are.

    python -m bench.peer_trl SPEC.json OUT.json

SPEC (written by bench.peer): the policy directory, the prompts (rendered by the
policy's own chat template, as asyncrl's engine sees them) with their task seeds,
the env that scores a completion, and the matched hyper-parameters. OUT: the process
and loop clocks (`process_s`, `startup_s`: process start to the first step, `loop_s`,
`shutdown_s`), and per step its end time in the loop and the mean reward of its
completions, plus where the trained policy was saved (for bench.peer's held-out
evaluation). Needs the `peer` extra (`pip install -e ".[peer]"`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

PROCESS_START = time.perf_counter()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from bench.peer_tasks import score

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

    def reward(completions: list[str], seed: list[int], **_: Any) -> list[float]:
        return [score(spec["env"], s, text) for s, text in zip(seed, completions, strict=True)]

    tokenizer = AutoTokenizer.from_pretrained(spec["policy"])
    model = AutoModelForCausalLM.from_pretrained(spec["policy"])
    dataset = Dataset.from_dict({"prompt": spec["prompts"], "seed": spec["seeds"]})
    hp = spec["hyper"]
    config = GRPOConfig(
        output_dir=str(out.parent / "trl-run"),
        per_device_train_batch_size=hp["prompts_per_step"] * hp["group_size"],
        num_generations=hp["group_size"],
        max_completion_length=hp["max_new_tokens"],
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
    )
    clock = Clock()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[clock],
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


if __name__ == "__main__":
    main()
