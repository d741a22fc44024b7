"""Text generation over rows: prompt templates in, a response (or typed JSON fields) out.

Each row's templates (:mod:`pipelines.job.templates`) render its messages; identical
conversations are sent once. The request takes the form the catalog names for the model
(Cloudflare's ``messages`` or chat completions) and, with an ``output_schema``, the model's
JSON mode. What a request may cost is unknown until it answers, so the budget holds the
worst case (the prompt plus ``max_tokens`` of output) and the ledger records the ``usage``
the answer reports. An answer that breaks the output schema is sent again (up to
``limits.max_attempts``); one cut off at ``max_tokens`` is marked ``truncated``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import polars as pl
import pyarrow as pa
from jinja2 import TemplateError

from pipelines.catalog.chat import completion_tokens, json_mode_body, prompt_tokens_many
from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo
from pipelines.catalog.tokens import HEAD_CHARS_PER_TOKEN, counting_source
from pipelines.core.columns import KEY
from pipelines.core.errors import ProviderError
from pipelines.job.spec import Job
from pipelines.job.templates import Template, parse_template, template_columns
from pipelines.sources.audio import Media
from pipelines.tasks.base import Call, Estimate, Item, Items, Requests, RowFailure, TextItem
from pipelines.tasks.generated import Answer, read_answer, structured_columns, structured_fields

# An estimated count (no exact tokenizer installed) can be low on one text; the budget's
# worst case for a prompt counted so is this much higher (the token benchmark's worst
# under-count of one text is about a third).
ESTIMATE_MARGIN = 1.5
USAGE_FIELDS = (
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("finish_reason", pa.string()),
    pa.field("truncated", pa.bool_()),
)


def _templates(job: Job) -> list[tuple[str, Template]]:
    """The job's conversation as (role, template) pairs."""
    task = job.task
    if task.messages is not None:
        return [(m.role, parse_template(m.content)) for m in task.messages]
    pairs = [("system", task.system)] if task.system else []
    return [(role, parse_template(src)) for role, src in [*pairs, ("user", task.prompt or "")]]


class GenerateFamily:
    """Rows → rendered conversations → ``response`` (or the schema's fields) and usage."""

    cacheable = True
    retry_invalid = True  # a bad answer is asked again in the same run (see run.sending)

    def __init__(self, job: Job, model: ModelInfo, keep: Sequence[str]) -> None:
        self.model = model
        self.conversation = _templates(job)
        schema = job.task.output_schema
        self.schema: dict[str, Any] | None = schema if isinstance(schema, dict) else None
        self.params = dict(job.task.params)
        self.max_tokens = int(self.params.pop("max_tokens", model.default_max_tokens or 256))
        self.columns: tuple[str, ...] = tuple(template_columns(job.task.templates()))
        result = (
            structured_fields(self.schema) if self.schema else (pa.field("response", pa.string()),)
        )
        self.fields: tuple[pa.Field, ...] = (*result, *USAGE_FIELDS)
        self.exact = counting_source(model.tokenizer).startswith("exact")
        #: Mean completion tokens of rows already done (``plan``'s expected figure).
        self.mean_output: float | None = None

    # -- rows → items -------------------------------------------------------------------

    def render(self, row: dict[str, Any]) -> list[dict[str, str]] | str:
        """A row's messages, or why the row cannot be sent."""
        nulls = [c for c in self.columns if row.get(c) is None]
        if nulls:
            return f"column {nulls[0]!r} is null: the prompt would have nothing there"
        try:
            messages = [{"role": role, "content": t.render(row)} for role, t in self.conversation]
        except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            return f"the prompt template failed on this row: {type(exc).__name__}: {exc}"
        if not any(m["content"].strip() for m in messages if m["role"] == "user"):
            return "the rendered prompt is empty"
        return messages

    def items(self, batch: pl.DataFrame) -> Items:
        keys: list[Any] = batch.get_column(KEY).to_list()
        columns = {c: batch.get_column(c).to_list() for c in self.columns}
        failures: list[RowFailure] = []
        found: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            rendered = self.render({c: values[i] for c, values in columns.items()})
            if isinstance(rendered, str):
                failures.append(RowFailure(key, "InvalidInput", rendered))
                continue
            found.setdefault(json.dumps(rendered, ensure_ascii=False), []).append(i)
        return self._counted(found, keys, failures)

    def _counted(
        self, found: dict[str, list[int]], keys: list[Any], failures: list[RowFailure]
    ) -> Items:
        """Items with their prompt tokens; prompts that cannot fit the context fail."""
        window = self.model.context_window
        room = (window - self.max_tokens) if window else None
        texts = list(found)
        # a prompt far longer than any window is refused unread (a 7 MB field is not tokenized)
        huge = {t for t in texts if room is not None and len(t) > room * HEAD_CHARS_PER_TOKEN}
        counted = [t for t in texts if t not in huge]
        counts = dict(
            zip(
                counted,
                prompt_tokens_many(self.model, [json.loads(t) for t in counted]),
                strict=True,
            )
        )
        distinct: list[Item] = []
        rows_of: list[tuple[int, ...]] = []
        for text in texts:
            n = counts.get(text)
            if room is not None and (n is None or n > room):
                size = f"{n:,} tokens" if n is not None else "far more tokens than that"
                message = (
                    f"the prompt is {size}; with max_tokens {self.max_tokens:,} it is over "
                    f"{self.model.id}'s context window of {window:,}: shorten it or lower "
                    "task.params.max_tokens"
                )
                failures.extend(RowFailure(keys[i], "InputTooLong", message) for i in found[text])
                continue
            assert n is not None
            distinct.append(TextItem(text, n))
            rows_of.append(tuple(found[text]))
        return Items(tuple(distinct), tuple(rows_of), tuple(failures))

    # -- cost ---------------------------------------------------------------------------

    def estimate(self, items: Sequence[Item]) -> Estimate:
        prompt = sum(i.tokens for i in items if isinstance(i, TextItem))
        mean = self.mean_output if self.mean_output is not None else self.max_tokens / 2
        expected = Usage(prompt, math.ceil(min(mean, self.max_tokens)))
        held = prompt if self.exact else math.ceil(prompt * ESTIMATE_MARGIN)
        return Estimate(expected, Usage(held, self.max_tokens * len(items)))

    # -- requests and answers -----------------------------------------------------------

    def requests(self, call: Call, media: Sequence[Media]) -> Requests:
        (item,) = call.texts()
        body: dict[str, Any] = {
            "messages": json.loads(item.text),
            **self.params,
            "max_tokens": self.max_tokens,
        }
        if self.schema is not None:
            body.update(json_mode_body(self.model, self.schema))
        return Requests(call, (MappingProxyType(body),))

    def answer(self, answer: Any) -> Answer:
        """The answer read and checked (raises ``TransportError`` for a bad one, and
        ``InvalidInput`` for JSON cut off at ``max_tokens``)."""
        return read_answer(self.model, answer, self.schema, self.max_tokens)

    def check_answer(self, requests: Requests, index: int, answer: Any) -> None:
        self.answer(answer)

    def parse(self, requests: Requests, answers: Sequence[Any]) -> dict[str, pa.Array]:
        got = self.answer(answers[0])
        if self.schema is not None:
            out = structured_columns(self.schema, [got.value])
        else:
            out = {"response": pa.array([got.text], pa.string())}
        usage = self._usage(requests.call, got)
        out["prompt_tokens"] = pa.array([usage.input_tokens], pa.int64())
        out["completion_tokens"] = pa.array([usage.output_tokens], pa.int64())
        out["finish_reason"] = pa.array([got.finish_reason], pa.string())
        out["truncated"] = pa.array([got.truncated], pa.bool_())
        return out

    def usage(self, requests: Requests, answers: Sequence[Any]) -> Usage:
        """What the answer reports; for a bad answer, the worst case (it was billed)."""
        try:
            got = read_answer(self.model, answers[0], None, self.max_tokens)
        except ProviderError:
            return requests.call.estimate.worst
        return self._usage(requests.call, got)

    def _usage(self, call: Call, got: Answer) -> Usage:
        if got.prompt_tokens is not None and got.completion_tokens is not None:
            return Usage(got.prompt_tokens, got.completion_tokens)
        # no usage in the answer: the prompt as counted, the answer as we count it
        prompt = sum(i.tokens for i in call.texts())
        return Usage(prompt, completion_tokens(self.model, got.text))
