"""``pipelines schedule``: crontab round trips on a fake crontab, systemd units in a temp dir."""

from __future__ import annotations

import shlex
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.core.errors import JobError
from pipelines.ops.schedule import ScheduleSpec, cron_lines, parse_at, read_crontab

USER_LINES = "MAILTO=me@example.com\n0 5 * * * /usr/local/bin/backup --all  # mine\n"
TOKEN = "cf-token-never-in-a-schedule"


@pytest.fixture
def crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``crontab`` command backed by a file; every call is logged."""
    table = tmp_path / "crontab.txt"
    calls = tmp_path / "crontab.calls"
    script = tmp_path / "fake-crontab"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {shlex.quote(str(calls))}\n'
        'case "$1" in\n'
        f"  -l) [ -f {shlex.quote(str(table))} ] || {{ echo 'no crontab for me' >&2; exit 1; }}\n"
        f"      cat {shlex.quote(str(table))} ;;\n"
        f"  -) cat > {shlex.quote(str(table))} ;;\n"
        "  *) exit 2 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PIPELINES_CRONTAB_CMD", str(script))
    return table


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "corpus.csv").write_text("doc_id,text\n1,hello\n")
    (folder / "embed.yaml").write_text(
        "name: embed-corpus\nsource: {kind: csv, path: corpus.csv, key: doc_id}\n"
        'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}\n'
        "output: {path: out.parquet}\n"
    )
    return folder


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["schedule", *args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def test_cron_round_trip_keeps_the_users_lines(
    crontab: Path, jobs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    crontab.write_text(USER_LINES)
    log = tmp_path / "logs" / "nightly.log"
    code, out = cli("install", "--at", "00:30", "--log", str(log), str(jobs))
    assert code == 0, out
    assert "CLOUDFLARE_API_TOKEN_FILE" in out  # the note on how scheduled runs get the token
    text = crontab.read_text()
    assert text.startswith(USER_LINES) and TOKEN not in text
    ours = text[len(USER_LINES) :].splitlines()
    assert len(ours) == 2
    assert ours[0].startswith("# pipelines-schedule nightly: every day at 00:30 UTC")
    entry = ours[1]
    assert entry.endswith("# pipelines-schedule nightly")
    assert f"{sys.executable} -m pipelines run --no-progress --log-format json {jobs}" in entry
    assert f">> {log} 2>&1" in entry and log.parent.is_dir()
    # The command part is valid shell once cron has turned \% back into %.
    command = entry.split(" ", 5)[5].replace("\\%", "%")
    subprocess.run(["sh", "-n", "-c", command], check=True)

    code, out = cli("install", "--at", "01:15", str(jobs))  # same name: replaced
    assert code == 0, out
    assert crontab.read_text().count("# pipelines-schedule nightly") == 2
    code, out = cli("install", "--at", "12:00", "--name", "noon", str(jobs))
    assert code == 0, out

    code, out = cli("show")
    assert code == 0, out
    assert "nightly (cron, every day at 01:15 UTC)" in out
    assert "noon (cron, every day at 12:00 UTC)" in out

    code, out = cli("remove", "noon")
    assert code == 0, out
    assert "noon" not in crontab.read_text() and "nightly" in crontab.read_text()
    code, out = cli("remove")
    assert code == 0, out
    assert crontab.read_text() == USER_LINES
    code, out = cli("show")
    assert "no pipelines schedules installed" in out


def test_print_writes_nothing(crontab: Path, jobs: Path, tmp_path: Path) -> None:
    code, out = cli("install", "--at", "23:59", "--print", str(jobs))
    assert code == 0, out
    assert "# pipelines-schedule nightly" in out
    assert not crontab.exists() and not (tmp_path / "crontab.calls").exists()
    units = tmp_path / "units"
    code, out = cli("install", "--systemd", "--at", "23:59", "--print", str(jobs))
    assert code == 0, out
    assert "OnCalendar=*-*-* 23:59:00 UTC" in out and not units.exists()


@pytest.mark.parametrize("bad", ["24:00", "12:60", "1230", "noon", "12:5", ""])
def test_at_is_checked(bad: str, crontab: Path, jobs: Path) -> None:
    code, out = cli("install", "--at", bad, str(jobs))
    assert code == 2 and "HH:MM" in out
    assert not crontab.exists()


def test_at_parses_24_hour_times() -> None:
    assert parse_at("00:30") == (0, 30) and parse_at("7:05") == (7, 5)
    assert parse_at("23:59") == (23, 59)
    with pytest.raises(JobError):
        parse_at("25:00")


def test_broken_job_is_refused_at_install(crontab: Path, tmp_path: Path) -> None:
    code, out = cli("install", "--at", "00:30", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml" in out and not crontab.exists()


def test_cron_time_is_local(jobs: Path) -> None:
    spec = ScheduleSpec.make([jobs], "00:30", log=Path("/var/log/p.log"))
    behind = cron_lines(spec, offset=timedelta(hours=-5), dst=False)
    assert behind[1].startswith("30 19 * * * ")
    assert "= 19:30 local time" in behind[0]
    india = cron_lines(spec, offset=timedelta(hours=5, minutes=30), dst=False)
    assert india[1].startswith("0 6 * * * ")
    # Daylight saving: fire hourly at the local minute, run only in the right UTC hour.
    dst = cron_lines(spec, offset=timedelta(hours=1), dst=True)
    assert dst[1].startswith('30 * * * * [ "$(date -u +\\%H)" = "00" ] && ')


def test_systemd_units_round_trip(
    jobs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    units = tmp_path / "units"
    calls = tmp_path / "systemctl.calls"
    fake = tmp_path / "fake-systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(calls))}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PIPELINES_SYSTEMD_DIR", str(units))
    monkeypatch.setenv("PIPELINES_SYSTEMCTL_CMD", str(fake))
    monkeypatch.setenv("PIPELINES_CRONTAB_CMD", str(tmp_path / "no-such-crontab"))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN_FILE", str(token_file))
    code, out = cli("install", "--systemd", "--at", "02:00", str(jobs))
    assert code == 0, out
    service = (units / "pipelines-nightly.service").read_text()
    timer = (units / "pipelines-nightly.timer").read_text()
    assert service.startswith("# pipelines-schedule nightly\n")
    assert f"ExecStart={sys.executable} -m pipelines run --no-progress --log-format json" in (
        service
    )
    assert f"Environment=CLOUDFLARE_API_TOKEN_FILE={token_file}" in service
    assert TOKEN not in service and "StandardOutput=append:" in service
    assert "OnCalendar=*-*-* 02:00:00 UTC" in timer and "Persistent=true" in timer
    assert calls.read_text().splitlines() == [
        "daemon-reload",
        "enable --now pipelines-nightly.timer",
    ]

    code, out = cli("show")
    assert code == 0 and "nightly (systemd, every day at 02:00 UTC)" in out
    code, out = cli("remove")
    assert code == 0, out
    assert list(units.iterdir()) == []
    assert calls.read_text().splitlines()[-1] == "disable --now pipelines-nightly.timer"


def test_without_crontab_binary_the_error_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PIPELINES_CRONTAB_CMD", str(tmp_path / "no-such-crontab"))
    with pytest.raises(JobError, match="--systemd"):
        read_crontab()
