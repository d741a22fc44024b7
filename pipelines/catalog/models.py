"""The model catalog: what each supported Workers AI model accepts, costs and allows.

Facts live in package data (``data/catalog.json``) next to Cloudflare's own catalog entries
(``data/models/*.json``), whose input/output JSON schemas are the contract for requests we
send and responses the emulator returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal, cast

from pipelines.core.errors import UnknownModel

TaskKind = Literal["embed", "classify", "translate", "transcribe", "rerank", "generate", "image"]
WireFormat = Literal["json", "binary", "base64"]
TokenizerKind = Literal[
    "bert-uncased",
    "xlm-roberta",
    "qwen3",
    "m2m100",
    "llama3",
    "o200k-harmony",
    "tekken",
    "gemma",
    "glm",
    "kimi",
    "generic",
    "none",
]
# How a text-generation model takes a JSON schema: Cloudflare's classic ``response_format``
# ({type: json_schema, json_schema: SCHEMA}), ``guided_json`` (SCHEMA), the OpenAI form
# ({type: json_schema, json_schema: {name, schema, strict}}), or not at all.
JsonMode = Literal["response_format", "guided_json", "openai", "none"]
# The request a text-generation model takes: Cloudflare's classic ``messages`` form
# (answers ``{response, usage}``) or chat completions (answers a ``chat.completion``).
RequestForm = Literal["messages", "chat", "none"]
# What a model's budget counts: Cloudflare's neurons (every catalog model), or for a model
# outside the catalog (reached with the ``openai`` provider) the tokens or requests its job
# caps. The ledger's "neurons" of such a model are these units, kept on an account of its own.
BudgetUnit = Literal["neurons", "tokens", "requests"]
# How a text-to-image model answers: JSON ``{image: <base64>}`` or the image file as the body.
ImageAnswer = Literal["base64", "binary"]
ImageFormat = Literal["png", "jpeg"]


@dataclass(frozen=True)
class ImageFacts:
    """What a text-to-image model takes and makes, beyond its published input schema.

    ``width``/``height`` are what it makes when a job gives no size (its schema's default,
    or for a model whose schema has none, the reading pipelines budgets by); ``sizable`` says
    whether it takes a size at all (flux-1-schnell does not). ``default_steps`` is ``None``
    where the model publishes no default: the budget then counts ``max_steps``.
    """

    steps_params: tuple[str, ...]  # the step field(s) of its schema: steps, num_steps
    default_steps: int | None
    max_steps: int
    width: int
    height: int
    sizable: bool
    answer: ImageAnswer
    format: ImageFormat  # what its docs say it returns (the real format is read from the bytes)
    priced: bool  # False: a beta model with no published price (recorded at 0 neurons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps_params": list(self.steps_params),
            "default_steps": self.default_steps,
            "max_steps": self.max_steps,
            "default_width": self.width,
            "default_height": self.height,
            "sizable": self.sizable,
            "answer": self.answer,
            "format": self.format,
            "priced": self.priced,
        }


@dataclass(frozen=True)
class ModelInfo:
    """One catalog entry. Prices are in neurons (Cloudflare's billing unit)."""

    id: str
    task: TaskKind
    cf_task: str
    max_items: int
    max_input_tokens: int | None
    dimensions: int | None
    neurons_per_m_input: float
    neurons_per_m_output: float
    neurons_per_audio_minute: float
    rpm: int
    batch_api: bool
    wire: WireFormat
    tokenizer: TokenizerKind
    note: str = ""
    tokenizer_source: str = ""
    context_window: int | None = None
    default_max_tokens: int | None = None
    json_mode: JsonMode = "none"
    request_form: RequestForm = "none"
    paid_only: bool = False
    neurons_per_request: float = 0.0
    budget_unit: BudgetUnit = "neurons"
    neurons_per_tile: float = 0.0  # text-to-image: per 512×512 tile of the output
    neurons_per_step: float = 0.0  # text-to-image: per diffusion step
    image: ImageFacts | None = None  # text-to-image models only
    input_schema: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    output_schema: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def short_name(self) -> str:
        """The id without the ``@cf/vendor/`` prefix."""
        return self.id.rsplit("/", 1)[-1]

    def as_dict(self, *, schemas: bool = False) -> dict[str, Any]:
        """A JSON-ready view, for ``pipelines models --json``."""
        out: dict[str, Any] = {
            "id": self.id,
            "task": self.task,
            "cf_task": self.cf_task,
            "max_items": self.max_items,
            "max_input_tokens": self.max_input_tokens,
            "dimensions": self.dimensions,
            "neurons_per_m_input_tokens": self.neurons_per_m_input,
            "neurons_per_m_output_tokens": self.neurons_per_m_output,
            "neurons_per_audio_minute": self.neurons_per_audio_minute,
            "requests_per_minute": self.rpm,
            "batch_api": self.batch_api,
            "wire": self.wire,
            "tokenizer": self.tokenizer,
            "tokenizer_source": self.tokenizer_source,
            "note": self.note,
        }
        if self.task == "generate":
            out["context_window"] = self.context_window
            out["default_max_tokens"] = self.default_max_tokens
            out["json_mode"] = self.json_mode
            out["request_form"] = self.request_form
            out["paid_only"] = self.paid_only
        if self.image is not None:
            out["neurons_per_tile"] = self.neurons_per_tile
            out["neurons_per_step"] = self.neurons_per_step
            out["image"] = self.image.as_dict()
        if schemas:
            out["input_schema"] = self.input_schema
            out["output_schema"] = self.output_schema
        return out


def _data_text(*parts: str) -> str:
    node = resources.files("pipelines.catalog").joinpath("data")
    for part in parts:
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")


@cache
def _load() -> dict[str, ModelInfo]:
    raw = json.loads(_data_text("catalog.json"))
    # where each tokenizer kind's counts come from (pipelines.catalog.tokens reads the rest)
    sources = {
        kind: str(entry["source"])
        for kind, entry in json.loads(_data_text("tokenizers.json"))["tokenizers"].items()
    }
    models: dict[str, ModelInfo] = {}
    for entry in raw["models"]:
        published = json.loads(_data_text("models", entry["file"]))
        if published["name"] != entry["id"]:
            raise RuntimeError(f"catalog entry {entry['id']} points at {published['name']}")
        models[entry["id"]] = ModelInfo(
            id=entry["id"],
            task=cast(TaskKind, entry["task"]),
            cf_task=entry["cf_task"],
            max_items=int(entry["max_items"]),
            max_input_tokens=entry.get("max_input_tokens"),
            dimensions=entry.get("dimensions"),
            neurons_per_m_input=float(entry.get("neurons_per_m_input", 0.0)),
            neurons_per_m_output=float(entry.get("neurons_per_m_output", 0.0)),
            neurons_per_audio_minute=float(entry.get("neurons_per_audio_minute", 0.0)),
            rpm=int(entry["rpm"]),
            batch_api=bool(entry["batch_api"]),
            wire=cast(WireFormat, entry["wire"]),
            tokenizer=cast(TokenizerKind, entry["tokenizer"]),
            note=entry.get("note", ""),
            tokenizer_source=sources[entry["tokenizer"]],
            context_window=entry.get("context_window"),
            default_max_tokens=entry.get("default_max_tokens"),
            json_mode=cast(JsonMode, entry.get("json_mode", "none")),
            request_form=cast(RequestForm, entry.get("request_form", "none")),
            paid_only=bool(entry.get("paid_only", False)),
            neurons_per_tile=float(entry.get("neurons_per_tile", 0.0)),
            neurons_per_step=float(entry.get("neurons_per_step", 0.0)),
            image=_image_facts(entry.get("image")),
            input_schema=published["schema"]["input"],
            output_schema=published["schema"]["output"],
        )
    return models


def _image_facts(raw: dict[str, Any] | None) -> ImageFacts | None:
    if raw is None:
        return None
    return ImageFacts(
        steps_params=tuple(raw["steps_params"]),
        default_steps=raw.get("default_steps"),
        max_steps=int(raw["max_steps"]),
        width=int(raw["width"]),
        height=int(raw["height"]),
        sizable=bool(raw["sizable"]),
        answer=cast(ImageAnswer, raw["answer"]),
        format=cast(ImageFormat, raw["format"]),
        priced=bool(raw["priced"]),
    )


def schema_properties(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Top-level properties of a published JSON schema, across ``oneOf``/``anyOf`` branches
    at any depth (gpt-oss nests its Prompt and Messages forms in a branch of a ``oneOf``)."""
    props: dict[str, dict[str, Any]] = {}
    pending: list[Any] = [schema]
    while pending:
        branch = pending.pop(0)
        if not isinstance(branch, dict):
            continue
        for name, spec in (branch.get("properties") or {}).items():
            props.setdefault(name, spec if isinstance(spec, dict) else {})
        pending.extend([*branch.get("oneOf", []), *branch.get("anyOf", [])])
    return props


def list_models() -> list[ModelInfo]:
    """Every supported model, in catalog order."""
    return list(_load().values())


@cache
def deprecated_models() -> dict[str, str]:
    """Deprecated model id → the replacement Cloudflare suggests (or the nearest we list)."""
    raw = json.loads(_data_text("catalog.json")).get("deprecated", {})
    return dict(raw.get("models", {}))


def get_model(model_id: str) -> ModelInfo:
    """Look a model up by its full id; raises :class:`UnknownModel` with a hint (for a
    deprecated model, its replacement)."""
    try:
        return _load()[model_id]
    except KeyError:
        pass
    replacement = deprecated_models().get(model_id)
    if replacement is not None:
        raise UnknownModel(
            f"model {model_id!r} was deprecated by Cloudflare on 2026-05-30 and no longer "
            f"answers: use {replacement!r} instead (see: pipelines models)",
            model=model_id,
        )
    raise UnknownModel(f"unknown model {model_id!r} (see: pipelines models)", model=model_id)


def has_model(model_id: str) -> bool:
    """Whether ``model_id`` is in the catalog."""
    return model_id in _load()
