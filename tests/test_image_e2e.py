"""Image jobs end to end, through the CLI against the emulator: files and their index once
per row, keys that try to climb out of the folder, corrupt bodies asked again and never
stored, kill -9 in the middle and a resume that makes every image exactly once, --repair,
--fresh, the budget per tile and step over three days, the local provider's refusal and the
contact sheet."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from pipelines.emulator.server import RunningEmulator
from pipelines.media.images import inspect_image
from pipelines.output.images import OWNER_FILE

SDXL = "@cf/bytedance/stable-diffusion-xl-lightning"
FLUX = "@cf/black-forest-labs/flux-1-schnell"


def cli(emu: RunningEmulator, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "image-proof",
        "CLOUDFLARE_API_TOKEN": "image-token-0123456789",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_STATE_DIR": str(tmp / "state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def products(path: Path, keys: list[str]) -> None:
    things = "chair lamp kettle sofa clock vase mug desk".split()
    pl.DataFrame(
        {
            "sku": keys,
            "title": [f"a {things[i % len(things)]} number {i}" for i in range(len(keys))],
            "seed": [str(100 + i) for i in range(len(keys))],
        }
    ).write_csv(path)


def image_job(tmp: Path, model: str = SDXL, **overrides: Any) -> Path:
    raw: dict[str, Any] = {
        "name": "product-images",
        "source": {"kind": "csv", "path": str(tmp / "products.csv"), "key": "sku"},
        "task": {
            "kind": "image",
            "model": model,
            "prompt": "A studio photo of {{ title }}",
            **({"negative_prompt": "blurry", "seed_column": "seed"} if model != FLUX else {}),
            "params": {"width": 256, "height": 256} if model != FLUX else {"steps": 4},
        },
        "output": {"path": str(tmp / "out" / "index.parquet"), "images": str(tmp / "out" / "img")},
        "limits": {"concurrency": 4},
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value}
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def names_in(folder: Path) -> list[str]:
    """The files in an images folder, without its owner marker."""
    return sorted(p.name for p in folder.iterdir() if p.name != OWNER_FILE)


def index_rows(tmp: Path) -> pl.DataFrame:
    return pl.read_parquet(tmp / "out" / "index.parquet")


def assert_every_row_has_its_file(tmp: Path) -> pl.DataFrame:
    """Each index row points at a file that exists, is the image made, of the size said."""
    index = index_rows(tmp)
    assert index["_key"].n_unique() == index.height
    for row in index.iter_rows(named=True):
        data = (tmp / "out" / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["bytes"]
        info = inspect_image(data)
        assert (info.width, info.height, info.format) == (
            row["width"],
            row["height"],
            row["format"],
        )
    return index


@pytest.mark.emulator(rpm_scale=100)
def test_a_job_writes_each_image_and_its_index_row_once(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    products(tmp_path / "products.csv", [f"p{i}" for i in range(12)])
    job = image_job(tmp_path)
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 0, result.stderr
    index = assert_every_row_has_its_file(tmp_path)
    assert index.height == 12 and set(index["format"]) == {"png"}
    assert set(index["width"]) == {256} and set(index["steps"]) == {20}
    assert index.filter(pl.col("_key") == "p3")["seed"].item() == 103  # from the column
    assert index["prompt"][0].startswith("A studio photo of a ")
    assert set(index["negative_prompt"]) == {"blurry"} and set(index["model"]) == {SDXL}
    assert sorted(index["file"]) == sorted(f"img/p{i}.png" for i in range(12))
    assert names_in(tmp_path / "out" / "img") == sorted(f"p{i}.png" for i in range(12))
    requests = emu.stats()["models"][SDXL]["requests"]
    assert requests == 12 and emu.stats()["neurons_today"] == 0  # beta: counted, not priced
    account = "emulator@" + emu.base_url.split("/client/")[0]  # the emulator's own ledger
    budget = json.loads(cli(emu, tmp_path, "budget", "--json", "--account", account).stdout)
    (row,) = budget["by_job_model"]  # the ledger records each image at 0 neurons
    assert (row["model"], row["requests"], row["committed"]) == (SDXL, 12, 0.0)
    again = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert again.returncode == 0 and emu.stats()["models"][SDXL]["requests"] == 12


@pytest.mark.emulator(rpm_scale=100)
def test_keys_never_leave_the_folder_nor_share_a_file(tmp_path: Path, emu: RunningEmulator) -> None:
    keys = ["../../etc/x", "/abs/path", "..", "a/b", "a_b", "A_B", "con", "ok-1"]
    products(tmp_path / "products.csv", keys)
    result = cli(emu, tmp_path, "run", "--no-progress", str(image_job(tmp_path)))
    assert result.returncode == 0, result.stderr
    index = assert_every_row_has_its_file(tmp_path)
    folder = (tmp_path / "out" / "img").resolve()
    files = [(tmp_path / "out" / f).resolve() for f in index["file"]]
    assert all(f.parent == folder for f in files) and len(set(files)) == len(keys)
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == sorted(f.name for f in files)
    assert not (tmp_path / "etc").exists() and not Path("/abs/path.png").exists()


@pytest.mark.emulator(rpm_scale=100, corrupt_image_rate=0.4, seed=3)
def test_corrupt_bodies_are_asked_again_and_never_stored(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    products(tmp_path / "products.csv", [f"p{i}" for i in range(10)])
    job = image_job(tmp_path, limits={"max_attempts": 10})
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 0, result.stderr
    assert "answers asked again" in result.stdout
    assert emu.stats()["models"][SDXL]["requests"] > 10  # some images were asked for twice
    assert assert_every_row_has_its_file(tmp_path).height == 10


@pytest.mark.emulator(rpm_scale=100, corrupt_image_rate=1.0)
def test_an_image_that_never_decodes_is_a_retryable_failure_and_no_file(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    products(tmp_path / "products.csv", ["p0", "p1"])
    job = image_job(tmp_path, model=FLUX, limits={"max_attempts": 3})
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 1, result.stderr
    failures = pl.read_parquet(tmp_path / "out" / "index.failures.parquet")
    assert set(failures["error"]) == {"TransportError"} and failures["retryable"].all()
    assert failures["message"].str.contains("does not decode").all()
    assert names_in(tmp_path / "out" / "img") == []
    # each try was served and billed (57.6 a picture): the ledger counted them all
    assert emu.stats()["neurons_today"] == pytest.approx(6 * 57.6)
    assert "neurons 345.6" in result.stdout
    emu.config.corrupt_image_rate = 0.0
    again = cli(emu, tmp_path, "run", "--no-progress", str(job))  # retryable: sent again
    assert again.returncode == 0, again.stderr
    assert assert_every_row_has_its_file(tmp_path).height == 2


@pytest.mark.emulator(rpm_scale=100, latency_ms=150)
def test_kill_9_mid_run_then_resume_makes_every_image_exactly_once(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    products(tmp_path / "products.csv", [f"p{i}" for i in range(40)])
    job = image_job(tmp_path, limits={"concurrency": 3})
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "image-proof",
        "CLOUDFLARE_API_TOKEN": "image-token-0123456789",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_STATE_DIR": str(tmp_path / "state"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    work = tmp_path / "out" / ".index.parquet.pipelines"
    deadline = time.monotonic() + 60
    while emu.stats()["models"].get(SDXL, {}).get("requests", 0) < 8 or not list(
        work.glob("results-*.arrow")
    ):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = emu.stats()["models"][SDXL]["requests"]
    assert 8 <= before < 40  # killed in the middle
    assert not (tmp_path / "out" / "index.parquet").exists()  # nothing merged yet
    emu.wait_idle()
    emu.config.latency_ms = 0
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 0, result.stderr
    index = assert_every_row_has_its_file(tmp_path)
    assert index.height == 40 and sorted(index["_key"]) == sorted(f"p{i}" for i in range(40))
    # rows journaled before the kill were not made again: at most the requests in flight
    total = emu.stats()["models"][SDXL]["requests"]
    assert 40 <= total <= 40 + 3, (before, total)
    assert len(names_in(tmp_path / "out" / "img")) == 40  # orphans were overwritten


@pytest.mark.emulator(rpm_scale=100)
def test_repair_makes_deleted_images_again_and_plan_counts_them(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    products(tmp_path / "products.csv", [f"p{i}" for i in range(6)])
    job = image_job(tmp_path)
    assert cli(emu, tmp_path, "run", "--no-progress", str(job)).returncode == 0
    made = {row["_key"]: row["sha256"] for row in index_rows(tmp_path).iter_rows(named=True)}
    (tmp_path / "out" / "img" / "p1.png").unlink()
    (tmp_path / "out" / "img" / "p4.png").write_bytes(b"damaged")  # not the size made
    plan = json.loads(cli(emu, tmp_path, "plan", "--json", str(job)).stdout)
    assert (plan["rows_missing"], plan["rows_pending"]) == (2, 0)
    plan = json.loads(cli(emu, tmp_path, "plan", "--json", "--repair", str(job)).stdout)
    assert (plan["rows_missing"], plan["rows_pending"], plan["requests"]) == (2, 2, 2)
    plain = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert plain.returncode == 0 and "2 images of the index are missing" in plain.stderr
    assert "--repair" in plain.stderr and emu.stats()["models"][SDXL]["requests"] == 6
    manifest = json.loads((tmp_path / "out" / "index.manifest.json").read_text())
    assert manifest["images"] == str((tmp_path / "out" / "img").resolve())
    assert manifest["last_run"]["images_missing"] == 2
    repaired = cli(emu, tmp_path, "run", "--no-progress", "--repair", str(job))
    assert repaired.returncode == 0, repaired.stderr
    assert "images made again 2" in repaired.stdout
    assert emu.stats()["models"][SDXL]["requests"] == 8
    index = assert_every_row_has_its_file(tmp_path)
    # the same seed and prompt draw the same picture again
    assert {row["_key"]: row["sha256"] for row in index.iter_rows(named=True)} == made
    final = cli(emu, tmp_path, "run", "--no-progress", "--repair", str(job))
    assert "missing" not in final.stderr and emu.stats()["models"][SDXL]["requests"] == 8


@pytest.mark.emulator(rpm_scale=100)
def test_a_row_that_now_fails_loses_its_image_with_its_index_row(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    products(tmp_path / "products.csv", ["p0", "p1", "p2"])
    job = image_job(tmp_path)
    assert cli(emu, tmp_path, "run", "--no-progress", str(job)).returncode == 0
    # p1's seed becomes unusable (its old picture is out of date); p2 is repeated in the input
    lines = (tmp_path / "products.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",not-a-seed"
    (tmp_path / "products.csv").write_text("\n".join([*lines, lines[3]]) + "\n")
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 1, result.stderr
    failures = pl.read_parquet(tmp_path / "out" / "index.failures.parquet")
    assert sorted(failures["error"]) == ["DuplicateKey", "InvalidInput"]
    index = assert_every_row_has_its_file(tmp_path)
    assert sorted(index["_key"]) == ["p0", "p2"]
    assert names_in(tmp_path / "out" / "img") == ["p0.png", "p2.png"]


@pytest.mark.emulator(rpm_scale=100)
def test_fresh_removes_exactly_the_images_pipelines_made(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    products(tmp_path / "products.csv", ["old-1", "old-2"])
    job = image_job(tmp_path)
    assert cli(emu, tmp_path, "run", "--no-progress", str(job)).returncode == 0
    mine = tmp_path / "out" / "img" / "notes.txt"
    mine.write_text("someone else's file")
    products(tmp_path / "products.csv", ["new-1"])
    changed = image_job(tmp_path, task={"prompt": "A drawing of {{ title }}"})
    refused = cli(emu, tmp_path, "run", "--no-progress", str(changed))
    assert refused.returncode == 2 and "--fresh" in refused.stderr  # the prompt changed
    result = cli(emu, tmp_path, "run", "--no-progress", "--fresh", str(changed))
    assert result.returncode == 0, result.stderr
    assert names_in(tmp_path / "out" / "img") == [
        "new-1.png",
        "notes.txt",
    ]
    assert mine.read_text() == "someone else's file"


@pytest.mark.emulator(rpm_scale=100)
def test_plan_shows_neurons_per_image_and_images_a_day(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    products(tmp_path / "products.csv", [f"p{i}" for i in range(5)])
    job = image_job(tmp_path, model=FLUX)
    shown = cli(emu, tmp_path, "plan", str(job))
    assert shown.returncode == 0, shown.stderr
    assert "4 tiles of 512x512 + 4 steps = 57.6 neurons an image" in shown.stdout
    assert "173 images at 10,000 neurons a day" in shown.stdout
    plan = json.loads(cli(emu, tmp_path, "plan", "--json", str(job)).stdout)
    assert plan["neurons"] == pytest.approx(5 * 57.6) and plan["images_per_day"] == 173
    result = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert result.returncode == 0, result.stderr
    assert emu.stats()["neurons_today"] == pytest.approx(plan["neurons"])  # as planned
    index = assert_every_row_has_its_file(tmp_path)
    assert set(index["format"]) == {"jpeg"} and set(index["width"]) == {1024}
    assert index["seed"].null_count() == 5  # flux takes no seed
    assert all(f.endswith(".jpg") for f in index["file"])


@pytest.mark.slow
@pytest.mark.emulator(daily_neurons=1_000, rpm_scale=100)
def test_three_days_of_images_fill_each_day_under_the_cap(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    products(tmp_path / "products.csv", [f"p{i}" for i in range(40)])
    job = image_job(tmp_path, model=FLUX, budget={"daily_neurons": 1_000})
    billed = []
    for _day in range(6):
        result = cli(emu, tmp_path, "run", "--no-progress", str(job))
        stats = emu.stats()
        billed.append(stats["neurons_today"])
        assert "3036" not in stats["error_codes"], stats["error_codes"]
        assert stats["neurons_today"] <= 1_000
        if result.returncode == 0:
            break
        assert result.returncode == 3, result.stderr
        assert "resumes after 00:00 UTC" in result.stderr
        assert stats["neurons_today"] >= 970, billed  # 17 images of 57.6: 979.2
        emu.advance_day()
    print("billed per day:", billed)
    assert len(billed) == 3, billed
    assert assert_every_row_has_its_file(tmp_path).height == 40


def test_the_local_provider_refuses_an_image_job_before_reading_a_row(tmp_path: Path) -> None:
    products(tmp_path / "products.csv", ["p0"])
    job = image_job(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            "--no-progress",
            "--provider",
            "local",
            str(job),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PIPELINES_STATE_DIR": str(tmp_path / "state")},
    )
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "image generation has no offline model" in line and "--provider emulator" in line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "index.parquet").exists()
    assert not (tmp_path / "out" / "img").exists()
    openai = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            "--no-progress",
            "--provider",
            "openai",
            str(job),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PIPELINES_STATE_DIR": str(tmp_path / "state"),
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "OPENAI_API_KEY": "k",
        },
    )
    assert openai.returncode == 2 and "provider openai runs embedding" in openai.stderr
    assert not (tmp_path / "out" / "img").exists()


@pytest.mark.emulator(rpm_scale=100)
def test_the_contact_sheet_is_one_self_contained_page(tmp_path: Path, emu: RunningEmulator) -> None:
    products(tmp_path / "products.csv", ["p0", "p1", "<script>alert(1)</script>"])
    job = image_job(tmp_path)
    assert cli(emu, tmp_path, "run", "--no-progress", str(job)).returncode == 0
    (tmp_path / "out" / "img" / "p1.png").unlink()
    sheet = tmp_path / "sheet.html"
    result = cli(emu, tmp_path, "sheet", str(job), "--out", str(sheet))
    assert result.returncode == 0, result.stderr
    assert "3 of 3 images, 1 missing" in result.stdout
    page = sheet.read_text()
    assert page.count("<figure>") == 3 and page.count('src="data:image/jpeg;base64,') == 2
    assert "file missing" in page and "1 file missing," in page
    assert "<script>" not in page  # keys and prompts are escaped
    # nothing is fetched when it is viewed: every src is a data URI, no link, no script
    assert "http://" not in page.replace(' lang="en"', "") and "https://" not in page
    assert "<link" not in page and "default-src 'none'" in page
    other = tmp_path / "gen.yaml"
    raw = yaml.safe_load((Path(__file__).parents[1] / "jobs" / "review_insights.yaml").read_text())
    raw["source"]["path"] = str(Path(__file__).parents[1] / "sample_data" / "reviews.parquet")
    other.write_text(yaml.safe_dump(raw))
    refused = cli(emu, tmp_path, "sheet", str(other), "--out", str(sheet))
    assert refused.returncode == 2 and refused.stderr.startswith("error: ")
    assert "only image jobs have images" in refused.stderr
    # the HTML report of the job carries the same sheet (and keys stay escaped there too)
    report = tmp_path / "report.html"
    made = cli(emu, tmp_path, "report", str(job), "--out", str(report))
    assert made.returncode == 0, made.stderr
    page = report.read_text()
    assert "<h2>Images</h2>" in page and page.count('src="data:image/jpeg;base64,') == 2
    assert "&lt;script&gt;alert(1)" in page
