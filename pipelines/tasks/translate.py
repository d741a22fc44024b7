"""Translation with m2m100: text → ``translated_text``, languages per job or per row."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import polars as pl
import pyarrow as pa

from pipelines.catalog.languages import describe_languages, normalize_language
from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo
from pipelines.catalog.tokens import model_tokens
from pipelines.job.spec import Job
from pipelines.sources.audio import Media
from pipelines.tasks.answers import check_for
from pipelines.tasks.base import Call, Estimate, Item, Items, Requests, TextItem
from pipelines.tasks.texts import text_column, text_items

LANGUAGES = ("source_lang", "target_lang")


class TranslateFamily:
    """Text → ``translated_text``; languages from params or per-row columns."""

    cacheable = True
    # m2m100 output is often a little longer than its input (its published en→fr pair: 17
    # tokens in, 21 out); the estimate is reconciled with the real output when it comes.
    OUTPUT_RATIO = 1.25

    def __init__(self, job: Job, model: ModelInfo, keep: Sequence[str]) -> None:
        self.model = model
        self.input = text_column(job)
        self.truncate = job.task.truncate
        self.params = dict(job.task.params)
        given = (job.task.source_lang_column, job.task.target_lang_column)
        # per-row option name → the source column holding it
        self.options = {n: c for n, c in zip(LANGUAGES, given, strict=True) if c}
        self.fields: tuple[pa.Field, ...] = (pa.field("translated_text", pa.string()),)
        self.columns: tuple[str, ...] = (self.input, *self.options.values())

    def items(self, batch: pl.DataFrame) -> Items:
        return text_items(
            batch,
            self.model,
            column=self.input,
            truncate=self.truncate,
            options=self.options,
            check=self.check_languages,
        )

    def check_languages(self, values: dict[str, Any]) -> dict[str, str | None] | str:
        """A row's languages as codes, or why the row cannot be sent."""
        out: dict[str, str | None] = {}
        for name, value in values.items():
            column = self.options[name]
            if value is None or not str(value).strip():
                if name == "target_lang" or "source_lang" not in self.params:
                    return f"column '{column}' is empty: no {name.replace('_', ' ')} for this row"
                out[name] = None
                continue
            code = normalize_language(str(value))
            if code is None:
                return (
                    f"unknown language {str(value)!r} in column '{column}' "
                    f"(supported: {describe_languages()})"
                )
            out[name] = code
        source = out.get("source_lang") or self.params.get("source_lang")
        target = out.get("target_lang") or self.params.get("target_lang")
        if source and target and source == target:
            return f"source and target language are both {source!r}"
        return out

    def estimate(self, items: Sequence[Item]) -> Estimate:
        n = sum(i.tokens for i in items if isinstance(i, TextItem))
        expected = Usage(input_tokens=n, output_tokens=int(n * self.OUTPUT_RATIO) + 1)
        # a translation can come out longer than expected; the cap must hold anyway
        return Estimate(expected, Usage(n, expected.output_tokens * 2 + 8))

    def requests(self, call: Call, media: Sequence[Media]) -> Requests:
        (item,) = call.texts()
        body: dict[str, Any] = {"text": item.text, **self.params}
        for name, value in item.options:
            if value is not None:
                body[name] = value
        return Requests(call, (MappingProxyType(body),))

    def parse(self, requests: Requests, answers: Sequence[Any]) -> dict[str, pa.Array]:
        answer = answers[0]
        check_for(self.model, "object", ("translated_text",))(answer)
        return {"translated_text": pa.array([answer["translated_text"]], pa.string())}

    def usage(self, requests: Requests, answers: Sequence[Any]) -> Usage:
        """Input tokens, and the tokens of the translation (the estimate if there is none)."""
        call = requests.call
        text = answers[0].get("translated_text") if isinstance(answers[0], dict) else None
        if not isinstance(text, str):
            return call.usage
        tokens = sum(i.tokens for i in call.texts())
        return Usage(input_tokens=tokens, output_tokens=model_tokens(self.model, [text])[0])
