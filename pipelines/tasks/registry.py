"""The task families, by ``task.kind``: adding a family is one module and one entry here."""

from __future__ import annotations

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import InvalidInput
from pipelines.job.spec import Job
from pipelines.tasks.base import Task
from pipelines.tasks.classify import ClassifyTask
from pipelines.tasks.embed import EmbedTask
from pipelines.tasks.transcribe import TranscribeTask
from pipelines.tasks.translate import TranslateTask

TASKS: dict[str, type[Task]] = {
    "embed": EmbedTask,
    "classify": ClassifyTask,
    "translate": TranslateTask,
    "transcribe": TranscribeTask,
}


def make_task(job: Job, model: ModelInfo, keep: list[str]) -> Task:
    """The task implementation for ``job.task.kind``."""
    try:
        cls = TASKS[job.task.kind]
    except KeyError:
        raise InvalidInput(f"task kind {job.task.kind!r} is not supported yet") from None
    return cls(job, model, keep)
