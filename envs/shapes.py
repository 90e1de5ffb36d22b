"""Shapes-v0: questions about a rendered image of coloured shapes (for vision-language models).

Owns the scenes and their questions. A task is a few flat-coloured circles, squares
and triangles drawn with PIL (no anti-aliasing, so every pixel is one of the
palette's colours) at random sizes, one per cell of a 3x3 grid so none overlap,
and one question about them:

- `count_colour`: how many shapes of a colour there are (0 is a valid answer);
- `count_kind`: how many circles / squares / triangles there are;
- `largest_colour`: the colour of the shape with the most pixels (asked only
  when it beats the runner-up by a clear margin, else a count is asked).

The opening user message carries the image as a content part,
`[{"type": "image", "image": <PIL.Image>}, {"type": "text", "text": question}]`,
which Hugging Face chat templates for vision-language models and asyncrl's codec
both read. The model answers in one turn as `<answer>...</answer>`, scored by
exact match. There are no tools (a turn that tries one is told so, within
`max_turns`). How images reach the engine is the codec's and the agent's business.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from envs.base import ToolEnv, chat_space
from rewards import RewardSpec

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 190, 30),
}
KINDS = ("circle", "square", "triangle")
QUESTIONS = ("count_colour", "count_kind", "largest_colour")
BACKGROUND = (255, 255, 255)
GRID = 3
LARGEST_MARGIN = 1.2
"""The largest shape must have this many times the runner-up's pixels to be asked about."""
SYSTEM_PROMPT = (
    "You are shown an image of coloured shapes. Answer the question about it as "
    "<answer>...</answer>: a number for a count, a colour name for a colour."
)


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    x: int
    y: int
    radius: int
    """Half the side of a square; the circumradius of a triangle."""


def draw_shape(draw: Any, shape: Shape, fill: Any) -> None:
    """Draw `shape` on a PIL ImageDraw with `fill`."""
    x, y, r = shape.x, shape.y, shape.radius
    if shape.kind == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape.kind == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    else:  # an upward equilateral triangle inscribed in the circle of radius r
        half = round(r * 0.866)
        draw.polygon([(x, y - r), (x - half, y + r // 2), (x + half, y + r // 2)], fill=fill)


def render(shapes: list[Shape], size: int) -> Any:
    """The RGB PIL image of `shapes` on a white background."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        draw_shape(draw, shape, COLOURS[shape.colour])
    return image


def pixel_area(shape: Shape, size: int) -> int:
    """How many pixels `shape` covers when rendered."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    draw_shape(ImageDraw.Draw(mask), shape, 255)
    return int(np.count_nonzero(np.asarray(mask)))


def sample_shapes(rng: np.random.Generator, count: int, size: int) -> list[Shape]:
    """`count` shapes in distinct grid cells, each wholly inside its cell."""
    cell = size // GRID
    min_radius, max_radius = max(3, cell // 6), cell // 2 - 2
    cells = rng.choice(GRID * GRID, size=count, replace=False)
    shapes = []
    for index in cells:
        row, col = divmod(int(index), GRID)
        radius = int(rng.integers(min_radius, max_radius + 1))
        low = radius + 1
        high = cell - radius - 2
        shapes.append(
            Shape(
                kind=KINDS[int(rng.integers(len(KINDS)))],
                colour=list(COLOURS)[int(rng.integers(len(COLOURS)))],
                x=col * cell + int(rng.integers(low, high + 1)),
                y=row * cell + int(rng.integers(low, high + 1)),
                radius=radius,
            )
        )
    return shapes


class ShapesEnv(ToolEnv):
    """One question about one rendered image; see the module docstring."""

    def __init__(
        self,
        image_size: int = 112,
        min_shapes: int = 2,
        max_shapes: int = 5,
        questions: tuple[str, ...] | list[str] = QUESTIONS,
        reward_fn: RewardSpec = "exact_match",
        reward_weights: dict[str, float] | None = None,
        max_turns: int = 1,
    ):
        if not 1 <= min_shapes <= max_shapes <= GRID * GRID:
            raise ValueError(f"need 1 <= min_shapes <= max_shapes <= {GRID * GRID}")
        if image_size < 8 * GRID:
            raise ValueError(f"image_size must be at least {8 * GRID} pixels")
        unknown = set(questions) - set(QUESTIONS)
        if not questions or unknown:
            raise ValueError(f"questions must be a non-empty subset of {QUESTIONS}")
        self.image_size = image_size
        self.min_shapes = min_shapes
        self.max_shapes = max_shapes
        self.questions = tuple(questions)
        weights = {"correct": 1.0, "format": 0.1} if reward_weights is None else reward_weights
        super().__init__(reward_fn, weights, max_turns)
        self.observation_space = chat_space(multimodal=True)

    def sample_task(self, rng: np.random.Generator) -> dict[str, Any]:
        count = int(rng.integers(self.min_shapes, self.max_shapes + 1))
        shapes = sample_shapes(rng, count, self.image_size)
        areas = [pixel_area(shape, self.image_size) for shape in shapes]
        kind = self.questions[int(rng.integers(len(self.questions)))]
        if kind == "largest_colour" and not _clear_largest(areas):
            kind = "count_colour" if "count_colour" in self.questions else "count_kind"
        if kind == "largest_colour":
            question = "What colour is the largest shape in the image?"
            answer = shapes[int(np.argmax(areas))].colour
        elif kind == "count_colour":
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            question = f"How many {colour} shapes are in the image?"
            answer = str(sum(shape.colour == colour for shape in shapes))
        else:
            shape_kind = KINDS[int(rng.integers(len(KINDS)))]
            question = f"How many {shape_kind}s are in the image?"
            answer = str(sum(shape.kind == shape_kind for shape in shapes))
        return {
            "question": question,
            "answer": answer,
            "question_kind": kind,
            "image_size": self.image_size,
            "shapes": [
                asdict(shape) | {"area": area} for shape, area in zip(shapes, areas, strict=True)
            ],
        }

    def opening_messages(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        shapes = [Shape(**{k: v for k, v in s.items() if k != "area"}) for s in task["shapes"]]
        image = render(shapes, task["image_size"])
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": image},
                    {"type": "text", "text": task["question"]},
                ],
            },
        ]


def _clear_largest(areas: list[int]) -> bool:
    if len(areas) < 2:
        return True
    first, second = sorted(areas, reverse=True)[:2]
    return first >= LARGEST_MARGIN * second


def scripted_reply(task: dict[str, Any]) -> str:
    """What an assistant that sees the image correctly answers."""
    return f"<answer>{task['answer']}</answer>"
