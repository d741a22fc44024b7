"""The rules of an image job: its templates, its seed, its folder and the model's params.

An image job (``task.kind: image``) draws one picture per row from ``task.prompt`` (and
``task.negative_prompt``, for models that take one), both templates
(:mod:`pipelines.job.templates`); ``task.seed_column`` names a column holding each row's
seed, for models that take a seed. The files go to the folder ``output.images``;
``output.path`` is their Parquet index. ``task.params`` are checked against the model's
published input schema (types, enums, minimum and maximum: in :mod:`pipelines.job.checks`)
and here for what an image job cannot send: img2img inputs, a size of 0, a seed both fixed
and per row. Every problem is reported at its field.
"""

from __future__ import annotations

from typing import Any

from pipelines.catalog.models import ModelInfo, schema_properties
from pipelines.job.problems import Loc, Problems
from pipelines.job.spec import Job
from pipelines.job.templates import TemplateProblem, parse_template

IMAGE_ONLY = ("negative_prompt", "seed_column")
# img2img and inpainting inputs of the Stable Diffusion schemas: image jobs draw from prompts
IMG2IMG = ("image", "image_b64", "mask", "strength")


def check_image_fields(job: Job, problems: Problems) -> None:
    """Fields only an image job may set, and what an image job must set."""
    task = job.task
    if task.kind != "image":
        for name in IMAGE_ONLY:
            if getattr(task, name) is not None:
                problems.add(("task", name), "only applies to task.kind: image")
        if job.output.images is not None:
            problems.add(("output", "images"), "only image jobs write image files")
        return
    if task.input is not None:
        problems.add(
            ("task", "input"),
            "image jobs read the columns their prompt names: use {{ column }} in task.prompt",
        )
    if task.truncate:
        problems.add(("task", "truncate"), "does not apply to image jobs (prompts are not cut)")
    if task.prompt is None:
        problems.add(("task", "prompt"), "image jobs need a prompt: what to draw, a template")
    if job.output.images is not None and "\0" in job.output.images:
        problems.add(("output", "images"), "contains a NUL character (\\0), which no name can hold")
    if job.output.images is None:
        problems.add(
            ("output", "images"),
            "image jobs need a folder for the image files (e.g. images: ../out/images); "
            "output.path is their Parquet index",
        )
    for name in ("prompt", "negative_prompt"):
        source = getattr(task, name)
        if source is None:
            continue
        try:
            parse_template(source)
        except TemplateProblem as exc:
            problems.add(("task", name), str(exc))


def check_image_model(
    job: Job, model: ModelInfo | None, params: dict[str, Any], problems: Problems
) -> None:
    """What the job asks of its model: a negative prompt, a seed, sizes and steps it takes."""
    task = job.task
    if model is None or model.image is None or task.kind != "image":
        return
    takes = schema_properties(model.input_schema)
    if task.negative_prompt is not None and "negative_prompt" not in takes:
        problems.add(
            ("task", "negative_prompt"),
            f"{model.id} takes no negative prompt (its published input has none); remove it",
        )
    if task.seed_column is not None:
        if "seed" not in takes:
            problems.add(
                ("task", "seed_column"),
                f"{model.id} takes no seed, so its images cannot be reproduced; remove "
                "task.seed_column",
            )
        elif "seed" in params:
            problems.add(
                ("task", "params", "seed"),
                "give params.seed (every row) or task.seed_column (per row), not both",
            )
    _check_image_params(model, params, problems)


def _check_image_params(model: ModelInfo, params: dict[str, Any], problems: Problems) -> None:
    for name in IMG2IMG:
        if name in params:
            problems.add(
                ("task", "params", name),
                "image jobs draw from prompts; img2img and inpainting inputs "
                f"({', '.join(IMG2IMG)}) are not supported: remove it",
            )
    for side in ("width", "height"):
        if params.get(side) == 0:
            loc: Loc = ("task", "params", side)
            problems.add(loc, "must be at least 1 (0 would leave the size, and the price, unknown)")
    steps = [name for name in ("steps", "num_steps") if name in params]
    if len(steps) > 1:
        problems.add(
            ("task", "params", "num_steps"),
            f"{model.id} takes steps or num_steps: give one of them, not both",
        )
