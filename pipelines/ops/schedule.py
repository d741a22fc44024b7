"""Nightly runs from a user crontab or a systemd user timer, at a time given in UTC.

Every line or unit we write carries ``# pipelines-schedule <name>``, so ``show`` and
``remove`` touch only ours and leave the rest of the user's crontab as it was. The API
token is never written into a schedule: a scheduled run gets ``CLOUDFLARE_API_TOKEN_FILE``
(a path; ``OPENAI_API_KEY_FILE`` likewise for provider openai) and the other non-secret
settings of the shell that installed it.

Cron runs entries in the machine's local time zone (``CRON_TZ`` is not portable and would
also shift the user's other entries), so the UTC time is converted to local time. Where
the local zone has daylight saving time the entry fires every hour at that minute and
runs only when the UTC hour matches, so it stays right across the switch. systemd timers
take the time zone in ``OnCalendar`` directly (``... 00:30:00 UTC``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pipelines.core.errors import JobError
from pipelines.core.files import atomic_write
from pipelines.core.state import STATE_DIR_VAR, state_dir

MARK = "# pipelines-schedule"
DEFAULT_NAME = "nightly"
# Settings a scheduled run needs to act like the shell that installed it; none is secret.
CARRIED_ENV = (
    "CLOUDFLARE_ACCOUNT_ID",
    "CLOUDFLARE_API_TOKEN_FILE",
    "CLOUDFLARE_API_BASE_URL",
    "CLOUDFLARE_BASE_URL",
    "OPENAI_API_KEY_FILE",
    "OPENAI_BASE_URL",
    "PIPELINES_STATE_DIR",
    "PIPELINES_CONFIG",
)
_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MARKED = re.compile(r"#\s*pipelines-schedule\s+([A-Za-z0-9][A-Za-z0-9._-]*)")
_UTC_TIME = re.compile(r"at (\d\d:\d\d) UTC")

Kind = Literal["cron", "systemd"]


def parse_at(text: str) -> tuple[int, int]:
    """``"00:30"`` as ``(0, 30)``; raises :class:`JobError` unless it is 24-hour HH:MM."""
    match = _AT.match(text.strip())
    if match is None:
        raise JobError(f"--at {text!r}: give a 24-hour UTC time as HH:MM, e.g. --at 00:30")
    return int(match.group(1)), int(match.group(2))


def check_name(name: str) -> str:
    """A schedule name: letters, digits, ``.``, ``_`` and ``-``."""
    if not _NAME.match(name):
        raise JobError(f"schedule name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def default_log_path() -> Path:
    """``<state dir>/logs/pipelines.log``."""
    return state_dir() / "logs" / "pipelines.log"


def ensure_log_folder(log: Path) -> None:
    """Create the folder of the runs' log; :class:`JobError` naming it when that fails."""
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(
            f"cannot create the log folder {log.parent} ({exc.strerror or exc}); choose a "
            f"writable --log, or point {STATE_DIR_VAR} at a folder this user can write"
        ) from exc


@dataclass(frozen=True)
class ScheduleSpec:
    """What to run, when (UTC) and where its output goes."""

    jobs: tuple[Path, ...]
    hour: int
    minute: int
    name: str = DEFAULT_NAME
    log: Path = field(default_factory=default_log_path)
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = sys.executable

    @classmethod
    def make(
        cls,
        jobs: Sequence[str | os.PathLike[str]],
        at: str,
        *,
        name: str = DEFAULT_NAME,
        log: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ScheduleSpec:
        """Validate and resolve: absolute job paths and log, the carried environment."""
        if not jobs:
            raise JobError("name the job files or folders to schedule")
        hour, minute = parse_at(at)
        source = os.environ if environ is None else environ
        env = {k: source[k] for k in CARRIED_ENV if source.get(k)}
        files = ("CLOUDFLARE_API_TOKEN_FILE", "OPENAI_API_KEY_FILE")
        for key in (*files, "PIPELINES_STATE_DIR", "PIPELINES_CONFIG"):
            if key in env:  # cron and systemd start elsewhere than this shell's folder
                env[key] = str(Path(env[key]).expanduser().resolve())
        return cls(
            jobs=tuple(Path(j).expanduser().resolve() for j in jobs),
            hour=hour,
            minute=minute,
            name=check_name(name),
            log=(log or default_log_path()).expanduser().resolve(),
            env=env,
        )

    @property
    def at(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"

    def command(self) -> list[str]:
        """The run itself: every job, no progress bar, JSON log lines."""
        return [
            self.python,
            "-m",
            "pipelines",
            "run",
            "--no-progress",
            "--log-format",
            "json",
            *(str(j) for j in self.jobs),
        ]


# -- cron ------------------------------------------------------------------------------


def local_offsets(now: datetime | None = None) -> tuple[timedelta, bool]:
    """The machine's UTC offset now, and whether it changes during the year (DST)."""
    now = now or datetime.now(UTC)
    current = now.astimezone().utcoffset() or timedelta(0)
    seasons = {
        (datetime(now.year, month, 15, 12, tzinfo=UTC).astimezone().utcoffset() or timedelta(0))
        for month in (1, 4, 7, 10)
    }
    return current, len(seasons | {current}) > 1


def cron_lines(
    spec: ScheduleSpec, *, offset: timedelta | None = None, dst: bool | None = None
) -> list[str]:
    """The crontab lines for ``spec`` (a comment and the entry), in local time."""
    if offset is None or dst is None:
        found_offset, found_dst = local_offsets()
        offset = found_offset if offset is None else offset
        dst = found_dst if dst is None else dst
    utc = datetime(2000, 1, 3, spec.hour, spec.minute, tzinfo=UTC)
    local = utc + offset
    env = [f"{k}={v}" for k, v in spec.env.items()]
    run = shlex.join([*(["env", *env] if env else []), *spec.command()])
    run += f" >> {shlex.quote(str(spec.log))} 2>&1"
    tag = f"{MARK} {spec.name}"
    if dst:
        # The offset moves with daylight saving; the minute does not (whole-hour shifts).
        guard = f'[ "$(date -u +%H)" = "{spec.hour:02d}" ] && '
        when = f"{local.minute} * * * *"
        note = (
            f"every day at {spec.at} UTC; cron uses local time, which has daylight saving "
            f"here, so this fires hourly at :{local.minute:02d} and runs at UTC hour "
            f"{spec.hour:02d} only"
        )
        run = guard + run
    else:
        when = f"{local.minute} {local.hour} * * *"
        note = f"every day at {spec.at} UTC = {local:%H:%M} local time (cron uses local time)"
    # cron turns a bare % into a newline: escape every one in the command.
    entry = f"{when} {run.replace('%', chr(92) + '%')} {tag}"
    return [f"{tag}: {note}", entry]


def crontab_command(explicit: Sequence[str] | None = None) -> list[str]:
    """``crontab``, or ``$PIPELINES_CRONTAB_CMD`` (tests point it at a fake)."""
    if explicit:
        return list(explicit)
    env = os.environ.get("PIPELINES_CRONTAB_CMD")
    return shlex.split(env) if env else ["crontab"]


def read_crontab(cmd: Sequence[str] | None = None) -> str:
    """The user's crontab (empty when there is none)."""
    argv = crontab_command(cmd)
    try:
        done = subprocess.run([*argv, "-l"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise JobError(f"{argv[0]} not found: install cron, or use --systemd") from None
    if done.returncode != 0:
        if "no crontab" in done.stderr.lower():
            return ""
        raise JobError(f"`{shlex.join(argv)} -l` failed: {done.stderr.strip()}")
    return done.stdout


def write_crontab(text: str, cmd: Sequence[str] | None = None) -> None:
    """Replace the user's crontab with ``text``."""
    argv = crontab_command(cmd)
    if text and not text.endswith("\n"):
        text += "\n"  # cron ignores a last line without its newline
    try:
        done = subprocess.run([*argv, "-"], input=text, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise JobError(f"{argv[0]} not found: install cron, or use --systemd") from None
    if done.returncode != 0:
        raise JobError(f"`{shlex.join(argv)} -` failed: {done.stderr.strip()}")


def _marked_name(line: str) -> str | None:
    match = _MARKED.search(line)
    return match.group(1) if match else None


def _without(text: str, name: str | None) -> tuple[list[str], list[str]]:
    kept, dropped = [], []
    for line in text.splitlines():
        marked = _marked_name(line)
        if marked is not None and (name is None or marked == name):
            dropped.append(line)
        else:
            kept.append(line)
    return kept, dropped


def install_cron(spec: ScheduleSpec, *, crontab_cmd: Sequence[str] | None = None) -> list[str]:
    """Add (or replace) ``spec``'s entry in the user crontab; the lines written."""
    kept, _ = _without(read_crontab(crontab_cmd), spec.name)
    lines = cron_lines(spec)
    ensure_log_folder(spec.log)
    write_crontab("\n".join([*kept, *lines]) + "\n", crontab_cmd)
    return lines


# -- systemd ---------------------------------------------------------------------------


def systemd_dir(explicit: Path | None = None) -> Path:
    """``$PIPELINES_SYSTEMD_DIR``, else ``$XDG_CONFIG_HOME/systemd/user``."""
    if explicit is not None:
        return explicit
    env = os.environ.get("PIPELINES_SYSTEMD_DIR")
    if env:
        return Path(env).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def unit_stem(name: str) -> str:
    return f"pipelines-{name}"


def _systemd_arg(arg: str) -> str:
    # systemd expands % specifiers and $ variables in ExecStart, even inside quotes.
    arg = arg.replace("%", "%%").replace("$", "$$")
    if re.search(r"[\s\"'\\;]", arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def systemd_units(spec: ScheduleSpec) -> dict[str, str]:
    """File name to contents: the service that runs the jobs and its daily timer."""
    tag = f"{MARK} {spec.name}"
    log = str(spec.log).replace("%", "%%")
    env = "".join(f"Environment={_systemd_arg(f'{k}={v}')}\n" for k, v in sorted(spec.env.items()))
    service = (
        f"{tag}\n[Unit]\nDescription=pipelines: run {spec.name} jobs\n\n"
        f"[Service]\nType=oneshot\n{env}"
        f"ExecStart={' '.join(_systemd_arg(a) for a in spec.command())}\n"
        f"StandardOutput=append:{log}\nStandardError=append:{log}\n"
    )
    timer = (
        f"{tag}\n[Unit]\nDescription=pipelines: {spec.name} every day at {spec.at} UTC\n\n"
        f"[Timer]\nOnCalendar=*-*-* {spec.at}:00 UTC\n"
        # A night the machine was off is made up for at the next boot.
        "Persistent=true\n\n[Install]\nWantedBy=timers.target\n"
    )
    stem = unit_stem(spec.name)
    return {f"{stem}.service": service, f"{stem}.timer": timer}


def install_systemd(spec: ScheduleSpec, *, unit_dir: Path | None = None) -> list[Path]:
    """Write ``spec``'s service and timer units; the files written."""
    folder = systemd_dir(unit_dir)
    folder.mkdir(parents=True, exist_ok=True)
    ensure_log_folder(spec.log)
    written = []
    for file, text in systemd_units(spec).items():
        path = folder / file
        atomic_write(path, text)
        written.append(path)
    return written


def systemctl_command() -> list[str] | None:
    """``systemctl --user``, ``$PIPELINES_SYSTEMCTL_CMD``, or None (not to be run).

    With ``$PIPELINES_SYSTEMD_DIR`` set and no command given, systemd would not see the
    units anyway, so nothing is run.
    """
    env = os.environ.get("PIPELINES_SYSTEMCTL_CMD")
    if env is not None:
        return shlex.split(env) or None
    if os.environ.get("PIPELINES_SYSTEMD_DIR"):
        return None
    return ["systemctl", "--user"]


def systemctl(*args: str) -> str | None:
    """Run ``systemctl --user ARGS``; an error message, or None when it worked."""
    argv = systemctl_command()
    if argv is None:
        return "systemctl is not run for a custom unit folder"
    try:
        done = subprocess.run([*argv, *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return f"{argv[0]} not found"
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


# -- show and remove -------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleEntry:
    """One schedule found: its name, kind, UTC time and the text that defines it."""

    name: str
    kind: Kind
    at_utc: str | None
    text: str
    paths: tuple[Path, ...] = ()


def _cron_entries(text: str) -> list[ScheduleEntry]:
    groups: dict[str, list[str]] = {}
    for line in text.splitlines():
        name = _marked_name(line)
        if name is not None:
            groups.setdefault(name, []).append(line)
    out = []
    for name, lines in groups.items():
        found = next((m.group(1) for m in map(_UTC_TIME.search, lines) if m), None)
        out.append(ScheduleEntry(name, "cron", found, "\n".join(lines)))
    return out


def _systemd_entries(folder: Path, name: str | None = None) -> list[ScheduleEntry]:
    out = []
    pattern = f"{unit_stem(name)}.timer" if name else "pipelines-*.timer"
    for timer in sorted(folder.glob(pattern)) if folder.is_dir() else []:
        text = timer.read_text(encoding="utf-8", errors="replace")
        marked = _marked_name(text.splitlines()[0] if text else "")
        if marked is None:
            continue
        service = timer.with_suffix(".service")
        when = re.search(r"OnCalendar=\S+ (\d\d:\d\d):\d\d UTC", text)
        paths = (timer, service) if service.exists() else (timer,)
        body = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in paths)
        out.append(ScheduleEntry(marked, "systemd", when and when.group(1), body, paths))
    return out


def list_schedules(
    *,
    crontab_cmd: Sequence[str] | None = None,
    unit_dir: Path | None = None,
) -> tuple[list[ScheduleEntry], list[str]]:
    """Our schedules in the crontab and the systemd folder, and notes on what was skipped."""
    notes: list[str] = []
    entries: list[ScheduleEntry] = []
    try:
        entries.extend(_cron_entries(read_crontab(crontab_cmd)))
    except JobError as exc:
        notes.append(f"crontab not read: {exc.message}")
    entries.extend(_systemd_entries(systemd_dir(unit_dir)))
    return entries, notes


def remove_cron(name: str | None, *, crontab_cmd: Sequence[str] | None = None) -> list[str]:
    """Drop our entries (all, or those of ``name``) from the crontab; the lines removed."""
    kept, dropped = _without(read_crontab(crontab_cmd), name)
    if dropped:
        write_crontab("\n".join(kept) + ("\n" if kept else ""), crontab_cmd)
    return dropped


def remove_systemd(name: str | None, *, unit_dir: Path | None = None) -> list[Path]:
    """Delete our units (all, or those of ``name``); the files removed."""
    removed: list[Path] = []
    for entry in _systemd_entries(systemd_dir(unit_dir), name):
        for path in entry.paths:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
