"""The task families, by ``task.kind``: adding a family is one module and one entry here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import InvalidInput
from pipelines.job.spec import Job
from pipelines.tasks.base import Family
from pipelines.tasks.classify import ClassifyFamily
from pipelines.tasks.embed import EmbedFamily
from pipelines.tasks.generate import GenerateFamily
from pipelines.tasks.image import ImageFamily
from pipelines.tasks.task import Task
from pipelines.tasks.transcribe import TranscribeFamily
from pipelines.tasks.translate import TranslateFamily

# kind → how to make the family for a job, its model and the kept columns
FAMILIES: dict[str, Callable[[Job, ModelInfo, Sequence[str]], Family]] = {
    "embed": EmbedFamily,
    "classify": ClassifyFamily,
    "translate": TranslateFamily,
    "transcribe": TranscribeFamily,
    "generate": GenerateFamily,
    "image": ImageFamily,
}


def make_task(job: Job, model: ModelInfo, keep: Sequence[str]) -> Task:
    """The task for ``job.task.kind``, bound to ``job``."""
    try:
        family = FAMILIES[job.task.kind]
    except KeyError:
        raise InvalidInput(f"task kind {job.task.kind!r} is not supported yet") from None
    return Task(family(job, model, keep), job, model, keep)
