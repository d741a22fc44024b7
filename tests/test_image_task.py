"""The image family and the image writer, without a server: prompts and seeds per row, what
is drawn once, the price per image, answers checked by decoding them, and file names that
can never leave the folder nor be shared by two keys."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from PIL import Image

from pipelines.catalog.models import get_model
from pipelines.core.columns import IMAGE_DATA, KEY
from pipelines.core.errors import TransportError
from pipelines.job.load import load_job
from pipelines.output.images import OWNER_FILE, ImageWriter, image_file, image_stem
from pipelines.tasks.registry import make_task
from pipelines.tasks.task import Task

SDXL = "@cf/bytedance/stable-diffusion-xl-lightning"
FLUX = "@cf/black-forest-labs/flux-1-schnell"


def picture(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()


def image_task(tmp: Path, model: str = SDXL, **task: str) -> Task:
    fields = {"prompt": "A photo of {{ title }}", **task}
    # a "{...}" value is YAML as written (params); any other text is quoted
    lines = "".join(
        f"\n  {k}: {v}" if v.startswith("{") and k == "params" else f"\n  {k}: {v!r}"
        for k, v in fields.items()
    )
    (tmp / "in.csv").write_text("id,title\n1,x\n")
    (tmp / "job.yaml").write_text(
        "name: t\nsource: {kind: csv, path: in.csv, key: id}\n"
        f'task:\n  kind: image\n  model: "{model}"{lines}\n'
        "output: {path: out/index.parquet, images: out/images}\n"
    )
    job = load_job(tmp / "job.yaml")
    return make_task(job, get_model(model), [])


def rows(**columns: list[Any]) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    return pl.DataFrame({KEY: [f"k{i}" for i in range(n)], **columns})


def test_rows_with_the_same_prompt_and_seed_are_drawn_once(tmp_path: Path) -> None:
    task = image_task(tmp_path, seed_column="seed", negative_prompt="blurry {{ title }}")
    calls, failures = task.prepare(
        rows(title=["cat", "cat", "cat", "dog"], seed=["1", "1", "2", "1"])
    )
    assert not failures
    assert [c.rows.height for c in calls] == [2, 1, 1]  # one picture for the first two rows
    body = dict(task.requests(calls[0]).bodies[0])
    assert body == {"prompt": "A photo of cat", "negative_prompt": "blurry cat", "seed": 1}


def test_rows_without_a_seed_are_each_drawn(tmp_path: Path) -> None:
    # a model without a seed draws a new picture each time: three rows, three requests
    task = image_task(tmp_path)
    calls, _ = task.prepare(rows(title=["cat", "cat", "cat"]))
    assert len(calls) == 3 and all("seed" not in task.requests(c).bodies[0] for c in calls)
    fixed = image_task(tmp_path, params="{seed: 5, width: 512, height: 512}")
    calls, _ = fixed.prepare(rows(title=["cat", "cat", "cat"]))
    assert len(calls) == 1 and dict(fixed.requests(calls[0]).bodies[0]) == {
        "prompt": "A photo of cat",
        "seed": 5,
        "width": 512,
        "height": 512,
    }


def test_rows_that_cannot_be_drawn_fail_before_sending(tmp_path: Path) -> None:
    task = image_task(tmp_path, seed_column="seed")
    seeds = ["7", "abc", "1.5", None, " 12 ", "3"]
    calls, failures = task.prepare(rows(title=["a", "b", "c", "d", "e", None], seed=seeds))
    assert sorted(c.rows.get_column(KEY)[0] for c in calls) == ["k0", "k4"]
    messages = {f.key: f.message for f in failures}
    assert "'abc', which is not a seed" in messages["k1"] and "1.5" in messages["k2"]
    assert "column 'seed' is null" in messages["k3"] and "column 'title' is null" in messages["k5"]
    assert all(f.error == "InvalidInput" and not f.retryable for f in failures)
    flux = image_task(tmp_path, FLUX, prompt="{{ title }}")
    calls, failures = flux.prepare(rows(title=["x" * 3000, "  "]))
    assert not calls and "at most 2,048" in failures[0].message
    assert failures[1].message == "the rendered prompt is empty"


def test_an_empty_negative_prompt_is_left_out(tmp_path: Path) -> None:
    task = image_task(tmp_path, "@cf/leonardo/phoenix-1.0", negative_prompt="{{ title }}")
    calls, _ = task.prepare(rows(title=[""]))
    assert "negative_prompt" not in task.requests(calls[0]).bodies[0]  # phoenix refuses ""


def test_the_price_of_an_image_is_known_before_sending(tmp_path: Path) -> None:
    task = image_task(tmp_path, FLUX, params="{steps: 4}")
    (call,), _ = task.prepare(rows(title=["cat"]))
    assert call.estimate.expected == call.estimate.worst
    assert (call.usage.tiles, call.usage.steps, call.usage.requests) == (4, 4, 1)
    assert task.neurons(call.estimate.worst) == pytest.approx(57.6)
    phoenix = image_task(tmp_path, "@cf/leonardo/phoenix-1.0", params="{width: 1000, height: 600}")
    (call,), _ = phoenix.prepare(rows(title=["cat"]))
    assert phoenix.neurons(call.estimate.worst) == pytest.approx(4 * 530 + 25 * 10)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_answers_are_read_from_their_bytes_in_either_wire_form(tmp_path: Path, fmt: str) -> None:
    task = image_task(tmp_path, FLUX)  # flux's base64 may hold a PNG or a JPEG: unpublished
    (call,), _ = task.prepare(rows(title=["cat"]))
    requests = task.requests(call)
    data = picture(fmt)
    for answer in (data, {"image": base64.b64encode(data).decode()}):
        task.check_answer(requests, 0, answer)
        columns = task.parse(requests, [answer])
        assert columns["format"].to_pylist() == [fmt.lower()]
        assert (columns["width"][0].as_py(), columns["height"][0].as_py()) == (64, 48)
        assert columns["bytes"][0].as_py() == len(data)
        assert columns[IMAGE_DATA][0].as_py() == data
        assert columns["steps"][0].as_py() == 4 and columns["seed"][0].as_py() is None


@pytest.mark.parametrize(
    "answer",
    [
        picture("PNG")[:40],  # cut short: announces a PNG, does not decode
        b"not an image at all",
        {"image": "%%% not base64"},
        {"image": base64.b64encode(picture("JPEG")[:60]).decode()},
        {"result": "no image"},
        b"",
    ],
    ids=["truncated", "text", "bad-base64", "truncated-base64", "no-image", "empty"],
)
def test_a_body_that_is_not_a_whole_image_is_a_transient_error(tmp_path: Path, answer: Any) -> None:
    task = image_task(tmp_path)
    (call,), _ = task.prepare(rows(title=["cat"]))
    requests = task.requests(call)
    assert task.retries_invalid  # asked again in the same run, then a retryable failure
    with pytest.raises(TransportError, match="nothing was stored"):
        task.check_answer(requests, 0, answer)


def test_usage_counts_the_tiles_of_the_image_made_when_it_is_larger(tmp_path: Path) -> None:
    task = image_task(tmp_path, "@cf/leonardo/phoenix-1.0", params="{width: 512, height: 512}")
    (call,), _ = task.prepare(rows(title=["cat"]))
    requests = task.requests(call)
    assert task.usage(requests, [picture("JPEG", (512, 512))]).tiles == 1
    assert task.usage(requests, [picture("JPEG", (1024, 600))]).tiles == 4  # never fewer
    assert task.usage(requests, [b"garbage"]).tiles == 1  # billed as asked


@pytest.mark.parametrize(
    ("key", "stem"),
    [
        ("sku-12", "sku-12"),
        ("a_b.c", "a_b.c"),
        ("../../etc/x", None),
        ("/etc/passwd", None),
        (".hidden", None),
        ("-rf", None),
        ("SKU-12", None),  # upper case: another key differs only by case on some disks
        ("con", None),
        ("ünïcödé", None),
        ("", None),
        ("a" * 300, None),
    ],
)
def test_file_names_stay_in_the_folder_and_are_never_shared(key: str, stem: str | None) -> None:
    name = image_stem(key)
    if stem is not None:
        assert name == stem
    else:
        assert name != key and len(name.rsplit("-", 1)[1]) == 12  # a hash of the whole key
    assert "/" not in name and "\\\\" not in name and not name.startswith((".", "-"))
    assert len(name) <= 113
    folder = Path("/srv/images")
    assert image_file(folder, key, "png").parent == folder


def test_keys_that_sanitise_alike_get_different_names() -> None:
    keys = ["a/b", "a?b", "a_b", "A_B", "a b", "../a_b"]
    assert len({image_stem(k).lower() for k in keys}) == len(keys)


def test_the_writer_writes_each_file_before_the_row_and_drops_the_bytes(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    writer = ImageWriter(tmp_path / "images", tmp_path / "out" / "index.parquet")
    writer.open()
    png, jpeg = picture("PNG"), picture("JPEG")
    (tmp_path / "images" / ".1.png.tmp-deadbeef").write_bytes(b"left by a crash")
    ImageWriter(tmp_path / "images", tmp_path / "out" / "index.parquet").open()
    assert [p.name for p in (tmp_path / "images").glob(".*")] == [OWNER_FILE]  # swept
    table = pa.table(
        {
            KEY: ["1", "../../etc/x"],
            "file": pa.array([None, None], pa.string()),
            "format": ["png", "jpeg"],
            IMAGE_DATA: pa.array([png, jpeg], pa.binary()),
        }
    )
    out = writer.write(table)
    assert out.column_names == [KEY, "file", "format"]
    files = out.column("file").to_pylist()
    assert files[0] == "../images/1.png" and files[1].startswith("../images/_._.._etc_x-")
    assert files[1].endswith(".jpg")
    for name, data in zip(files, (png, jpeg), strict=True):
        assert (tmp_path / "out" / name).read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        [OWNER_FILE, *(Path(f).name for f in files)]
    )


def test_steps_unknown_to_the_model_and_the_job_are_budgeted_at_the_maximum(
    tmp_path: Path,
) -> None:
    lucid = image_task(tmp_path, "@cf/leonardo/lucid-origin", params="{width: 512, height: 512}")
    (call,), _ = lucid.prepare(rows(title=["cat"]))
    assert (call.usage.tiles, call.usage.steps) == (1, 40)  # no published default: the max
    assert "steps" not in lucid.requests(call).bodies[0]  # the model's own default is used
    columns = lucid.parse(lucid.requests(call), [picture("JPEG")])
    assert columns["steps"][0].as_py() is None  # the index does not pretend to know
    asked = image_task(tmp_path, "@cf/leonardo/lucid-origin", params="{num_steps: 12}")
    (call,), _ = asked.prepare(rows(title=["cat"]))
    assert call.usage.steps == 12
    assert asked.parse(asked.requests(call), [picture("JPEG")])["steps"][0].as_py() == 12


def test_two_outputs_never_share_an_images_folder(tmp_path: Path) -> None:
    from pipelines.core.errors import OutputError

    (tmp_path / "a").mkdir()
    ImageWriter(tmp_path / "images", tmp_path / "a" / "index.parquet").open()
    ImageWriter(tmp_path / "images", tmp_path / "a" / "index.parquet").open()  # its own: fine
    other = ImageWriter(tmp_path / "images", tmp_path / "b.parquet")
    with pytest.raises(OutputError, match="holds the images of another output"):
        other.claim()
