"""Translation with m2m100: text → ``translated_text``, languages per job or per row."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipelines.catalog.languages import describe_languages, normalize_language
from pipelines.catalog.metering import Usage
from pipelines.catalog.tokens import model_tokens
from pipelines.core.errors import TransportError
from pipelines.tasks.base import Call, Task


class TranslateTask(Task):
    """Text → ``translated_text``; languages from params or per-row columns."""

    # m2m100 output is usually about as long as its input; reconciled with the real output.
    OUTPUT_RATIO = 1.0

    @property
    def result_fields(self) -> list[pa.Field]:
        return [pa.field("translated_text", pa.string())]

    def extra_columns(self) -> dict[str, str]:
        cols: dict[str, str] = {}
        if self.job.task.source_lang_column:
            cols["source_lang"] = self.job.task.source_lang_column
        if self.job.task.target_lang_column:
            cols["target_lang"] = self.job.task.target_lang_column
        return cols

    def check_options(self, options: dict[str, Any]) -> dict[str, Any] | str:
        out: dict[str, Any] = {}
        for name, value in options.items():
            column = self.extra_columns()[name]
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

    def inputs_for(self, texts: list[str], extra: dict[str, list[Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"text": texts[0], **self.params}
        for name in ("source_lang", "target_lang"):
            if name in extra and extra[name][0] is not None:
                body[name] = str(extra[name][0])
        return body

    def estimate(self, tokens: list[int]) -> Usage:
        n = sum(tokens)
        return Usage(input_tokens=n, output_tokens=int(n * self.OUTPUT_RATIO) + 1)

    def worst_case(self, usage: Usage) -> Usage:
        # a translation can come out longer than expected; the cap must hold anyway
        return Usage(usage.input_tokens, usage.output_tokens * 2 + 8, usage.audio_seconds)

    def actual(self, call: Call, result: Any) -> Usage:
        text = result.get("translated_text", "") if isinstance(result, dict) else ""
        return Usage(
            input_tokens=sum(call.tokens), output_tokens=model_tokens(self.model, [str(text)])[0]
        )

    def parse(self, call: Call, result: Any) -> dict[str, pa.Array]:
        if not isinstance(result, dict) or "translated_text" not in result:
            raise TransportError("translation response has no translated_text")
        return {"translated_text": pa.array([str(result["translated_text"])], pa.string())}
