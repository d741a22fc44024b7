"""The task protocol: calls and requests are immutable values, every family's calls split (a
one-item call says it cannot), packing and fan-out are shared, and tasks do no I/O."""

from __future__ import annotations

import ast
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import soundfile as sf

from pipelines.catalog.models import get_model, list_models
from pipelines.core.columns import IMAGE_DATA
from pipelines.emulator import EmulatorConfig, chat, images
from pipelines.emulator.envelope import dumps
from pipelines.emulator.inputs import ModelInput
from pipelines.emulator.outputs import infer
from pipelines.job.load import load_job
from pipelines.media.chunking import Chunk
from pipelines.sources.audio import Media, MediaRef
from pipelines.tasks.base import Call, TextItem
from pipelines.tasks.registry import FAMILIES, make_task
from pipelines.tasks.task import Task

TASKS = Path(__file__).resolve().parents[1] / "pipelines" / "tasks"
MODELS = {
    "embed": "@cf/baai/bge-small-en-v1.5",
    "classify": "@cf/huggingface/distilbert-sst-2-int8",
    "translate": "@cf/meta/m2m100-1.2b",
    "transcribe": "@cf/openai/whisper",
    "generate": "@cf/meta/llama-3.1-8b-instruct-fp8",
    "image": "@cf/bytedance/stable-diffusion-xl-lightning",
}


def task_for(tmp: Path, kind: str, model: str | None = None) -> Task:
    model = model or MODELS[kind]
    if kind == "transcribe":
        (tmp / "audio").mkdir(exist_ok=True)
        (tmp / "audio" / "a.wav").write_bytes(b"RIFF")
        source, task = "{kind: audio, path: audio}", f'{{kind: transcribe, model: "{model}"}}'
    else:
        params = "{source_lang: en, target_lang: fr}" if kind == "translate" else "{}"
        source = "{kind: csv, path: in.csv, key: id}"
        task = f'{{kind: {kind}, model: "{model}", input: text, params: {params}}}'
        if kind in ("generate", "image"):
            task = f'{{kind: {kind}, model: "{model}", prompt: "{{{{ text }}}}"}}'
    (tmp / "in.csv").write_text("id,text\n1,x\n")
    images = ", images: images" if kind == "image" else ""
    (tmp / "job.yaml").write_text(
        f"name: t\nsource: {source}\ntask: {task}\noutput: {{path: out.parquet{images}}}\n"
    )
    job = load_job(tmp / "job.yaml")
    return make_task(job, get_model(model), [])


def text_batch(texts: list[str | None]) -> pl.DataFrame:
    return pl.DataFrame({"_key": [str(i) for i in range(len(texts))], "text": texts})


def audio_batch(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "_key": [f"f{i}.wav" for i in range(n)],
            "path": [f"f{i}.wav" for i in range(n)],
            "size_bytes": [32_044] * n,
            "duration_s": [1.0] * n,
            "error": pl.Series([None] * n, dtype=pl.Utf8),
        }
    )


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_every_family_makes_immutable_calls_and_requests_that_split_or_say_they_cannot(
    tmp_path: Path, kind: str
) -> None:
    task = task_for(tmp_path, kind)
    batch = audio_batch(2) if kind == "transcribe" else text_batch(["a text", "another"])
    calls, failures = task.prepare(batch)
    assert not failures and calls
    call = calls[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.items = ()  # type: ignore[misc]
    halves = task.split(call, 1)
    if call.size > 1:  # embed packs both texts; the others send one item a call
        assert halves is not None and [h.size for h in halves] == [1, call.size - 1]
    else:
        assert halves is None and len(calls) == 2
    one = task.subset(call, [0])
    assert one.size == 1 and task.split(one, 0) is None and task.split(one, 1) is None
    if kind != "transcribe":
        requests = task.requests(one)
        with pytest.raises(TypeError):
            requests.bodies[0]["text"] = "changed"  # type: ignore[index]
        assert requests.call is one


def test_packing_sends_each_text_once_and_fans_answers_out(tmp_path: Path) -> None:
    task = task_for(tmp_path, "embed")
    texts: list[str | None] = [f"text {i % 230}" for i in range(260)] + [None, "  "]
    calls, failures = task.prepare(text_batch(texts))
    assert [f.error for f in failures] == ["EmptyInput", "EmptyInput"]
    assert [c.size for c in calls] == [100, 100, 30]  # 230 distinct texts, 100 a request
    assert sum(c.rows.height for c in calls) == 260  # every repeated row still answered
    first = calls[0]
    assert len({i.text for i in first.texts()}) == 100
    body = task.requests(first).bodies[0]
    assert body["text"] == [i.text for i in first.texts()]
    left, right = task.split(first, 40) or pytest.fail("a 100-item call splits")
    assert (left.size, right.size) == (40, 60)
    assert left.rows.height + right.rows.height == first.rows.height
    assert left.usage.input_tokens + right.usage.input_tokens == first.usage.input_tokens
    table = task.output_table(left, {"embedding": _vectors(task, left.size)})
    assert table.num_rows == left.rows.height
    # every row of a text gets that text's vector, and each text its own
    vectors_of: dict[str, set[tuple[float, ...]]] = {}
    for key, vector in zip(table["_key"].to_pylist(), table["embedding"].to_pylist(), strict=True):
        vectors_of.setdefault(str(texts[int(key)]), set()).add(tuple(vector))
    assert len(vectors_of) == left.size
    assert all(len(v) == 1 for v in vectors_of.values())
    assert len({next(iter(v)) for v in vectors_of.values()}) == left.size
    assert max(len(texts_rows) for texts_rows in _rows_per_text(left).values()) == 2


def _rows_per_text(call: Call) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for row, item in enumerate(call.item_of_row):
        out.setdefault(call.texts()[item].text, []).append(row)
    return out


def _vectors(task: Task, n: int) -> Any:
    import pyarrow as pa

    dim = task.model.dimensions or 0
    flat = pa.array([float(i) for i in range(n) for _ in range(dim)], pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, dim)


def test_an_option_checked_item_carries_its_languages_and_cache_identity(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("id,text,dst\n1,hello,fr\n2,hello,French\n3,hello,xx\n")
    (tmp_path / "job.yaml").write_text(
        "name: t\nsource: {kind: csv, path: p.csv, key: id}\n"
        'task: {kind: translate, model: "@cf/meta/m2m100-1.2b", input: text, '
        "target_lang_column: dst, params: {source_lang: en}}\noutput: {path: out.parquet}\n"
    )
    job = load_job(tmp_path / "job.yaml")
    task = make_task(job, get_model(job.task.model), [])
    batch = pl.DataFrame(
        {"_key": ["1", "2", "3"], "text": ["hello"] * 3, "dst": ["fr", "French", "xx"]}
    )
    calls, failures = task.prepare(batch)
    assert [f.error for f in failures] == ["InvalidOption"]
    assert len(calls) == 1 and calls[0].rows.height == 2  # "fr" and "French" are one item
    assert calls[0].texts()[0] == TextItem(
        "hello", calls[0].texts()[0].tokens, (("target_lang", "fr"),)
    )
    assert task.identities(calls[0]) == [("hello", "fr")]
    body = task.requests(calls[0]).bodies[0]
    assert dict(body) == {"text": "hello", "source_lang": "en", "target_lang": "fr"}


def test_a_long_file_is_a_media_item_cut_by_the_loader(tmp_path: Path) -> None:
    task = task_for(tmp_path, "transcribe")
    batch = audio_batch(1).with_columns(
        pl.lit(20 * 1024 * 1024).alias("size_bytes"), pl.lit(700.0).alias("duration_s")
    )
    (call,), _ = task.prepare(batch)
    (ref,) = call.media()
    assert isinstance(ref, MediaRef) and ref.cut_s is not None and ref.cut_s < 600
    assert task.requests_needed(call) == ref.chunks_expected() == 3  # 700 s of 262 s chunks
    assert call.estimate.worst.audio_seconds > call.usage.audio_seconds == 700.0
    with pytest.raises(TypeError):
        call.texts()
    with pytest.raises(TypeError):
        task.identities(call)


IO_NAMES = {"open", "read_bytes", "read_text", "write_bytes", "write_text", "mkdir", "unlink"}
IO_MODULES = {"os", "shutil", "socket", "subprocess", "tempfile", "httpx", "sqlite3", "av"}


@pytest.mark.parametrize("path", sorted(TASKS.glob("*.py")), ids=lambda p: p.name)
def test_tasks_do_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & IO_MODULES, path
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in IO_MODULES, path
            assert not {a.name for a in node.names} & {"load_media", "load_one", "cut"}, path
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            assert name not in IO_NAMES, f"{path.name}:{node.lineno} calls {name}"


@pytest.mark.parametrize(
    "model_id", [m.id for m in list_models() if m.task in FAMILIES], ids=lambda m: m.split("/")[-1]
)
def test_every_models_faithful_answer_passes_its_familys_checks(
    tmp_path: Path, model_id: str
) -> None:
    model = get_model(model_id)
    task = task_for(tmp_path, model.task, model_id)
    if model.task == "transcribe":
        wav = io.BytesIO()
        sf.write(wav, np.zeros(16_000, dtype="float32"), 16_000, format="WAV")
        ref = MediaRef("a.wav", len(wav.getvalue()), 1.0)
        (call,), _ = task.prepare(audio_batch(1))
        media = (Media(ref, (Chunk(0.0, 1.0, wav.getvalue()),)),)
        requests = task.requests(call, media)
        inputs = [ModelInput(dict(b), audio=b["audio"], audio_seconds=1.0) for b in requests.bodies]
    else:
        (call, *_), _ = task.prepare(text_batch(["a short text", "another one"]))
        requests = task.requests(call)
        inputs = [ModelInput(dict(b)) for b in requests.bodies]
    # as the wire carries them: JSON, decoded the way the provider decodes it
    if model.task == "generate":  # the chat models' answers come from their own module
        config = EmulatorConfig(plan="paid")
        results = [chat.infer(model, i, config, created=0).result for i in inputs]
    elif model.task == "image":  # so do the image models'; a binary answer is its bytes
        drawn = [images.infer(model, i, EmulatorConfig()).result for i in inputs]
        results = [r.data if isinstance(r, images.BinaryBody) else r for r in drawn]
    else:
        results = [infer(model, i, seed=0).result for i in inputs]
    answers = [r if isinstance(r, bytes) else json.loads(dumps(r)) for r in results]
    columns = task.parse(requests, answers)
    extra = {IMAGE_DATA} if model.task == "image" else set()  # the bytes, for the writer
    assert {f.name for f in task.family.fields} | extra == set(columns)
    assert all(len(array) == call.size for array in columns.values())
