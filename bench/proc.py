"""Running and timing processes, and summarising the timings.

Every measured command, pas or baseline, is started the same way: `os.posix_spawn` of an
absolute path with stdout (and stderr) on /dev/null, then `os.wait4` for it. The clock runs
from just before the spawn to just after the wait, so pas and its baseline pay the same
harness overhead. `wait4` also gives the child's CPU time (not its peak RSS: see peak_rss_kb).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

DEVNULL_IN = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
DEVNULL_OUT = (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)
DEVNULL_ERR = (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)


class BenchError(Exception):
    """A measured command failed, or a fixture turned out not to be what it should be."""


def which(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise BenchError(f"`{name}` is not installed (needed for a baseline)")
    return path


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAS_")}
    env["LC_ALL"] = "C"  # the same locale for every tool (grep is faster and predictable)
    return env


ENV = clean_env()


@dataclass
class Run:
    """One finished process."""

    ns: int
    code: int
    cpu_s: float


def spawn(argv: Sequence[str], stderr: bool = False) -> int:
    actions = [DEVNULL_IN, DEVNULL_OUT] + ([] if stderr else [DEVNULL_ERR])
    return os.posix_spawn(argv[0], list(argv), ENV, file_actions=actions)


def reap(pid: int) -> tuple[int, object]:
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage


def timed(argv: Sequence[str]) -> Run:
    """Runs argv once (stdin, stdout, stderr on /dev/null) and times it."""
    t0 = time.perf_counter_ns()
    pid = spawn(argv)
    code, usage = reap(pid)
    t1 = time.perf_counter_ns()
    return Run(t1 - t0, code, usage.ru_utime + usage.ru_stime)


def timed_subprocess(argv: Sequence[str]) -> Run:
    """The same as timed(), through subprocess.run (a heavier harness: close_fds, an error
    pipe); used only to show how much the harness shifts a ratio."""
    t0 = time.perf_counter_ns()
    p = subprocess.run(list(argv), env=ENV, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = time.perf_counter_ns()
    return Run(t1 - t0, p.returncode, 0.0)


def explain_failure(argv: Sequence[str], code: int) -> BenchError:
    """Runs a failed command again to capture what it said."""
    p = subprocess.run(list(argv), env=ENV, capture_output=True, text=True)
    said = (p.stderr or p.stdout).strip().splitlines()
    tail = said[-1] if said else "(no output)"
    return BenchError(f"`{' '.join(argv)}` exited {code}: {tail}")


def check_ok(argv: Sequence[str], run: Run, ok_codes: Sequence[int] = (0,)) -> Run:
    if run.code not in ok_codes:
        raise explain_failure(argv, run.code)
    return run


@dataclass
class Stats:
    """Timings of one command (seconds) and its CPU time (user + system, from wait4)."""

    label: str
    times: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def add(self, run: Run) -> None:
        self.times.append(run.ns / 1e9)
        self.cpu_s.append(run.cpu_s)

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_s) if self.cpu_s else 0.0

    def to_json(self) -> dict:
        return {"label": self.label, "times_s": self.times, "cpu_s": self.cpu_s}


def interleaved(commands: dict[str, Sequence[str]], reps: int, warmup: int = 1,
                ok_codes: Sequence[int] = (0,)) -> dict[str, Stats]:
    """Runs every command `reps` times, one of each per round, rotating the order each round
    so no command always runs first (right after the harness) or last. `warmup` untimed
    rounds come first (page cache, dentry cache, the binary's pages)."""
    names = list(commands)
    stats = {name: Stats(name) for name in names}
    for _ in range(warmup):
        for name in names:
            check_ok(commands[name], timed(commands[name]), ok_codes)
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            run = check_ok(commands[name], timed(commands[name]), ok_codes)
            stats[name].add(run)
    return stats


def peak_rss_kb(argv: Sequence[str]) -> Optional[int]:
    """Peak RSS of one run of argv, via GNU time (None when it is not installed).

    wait4's ru_maxrss of a process we spawn ourselves is useless here: a vfork'd (or forked)
    child inherits this Python process's RSS as its high-water mark until it execs. GNU
    time forks from its own small process, so its child's figure is the command's own."""
    gtime = "/usr/bin/time"
    if not os.access(gtime, os.X_OK):
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
        p = subprocess.run([gtime, "-f", "%M", "-o", out.name, *argv], env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = out.read().strip().splitlines()
    if p.returncode != 0 or not text or not text[-1].isdigit():
        return None
    return int(text[-1])


def ratio(a: Stats, b: Stats) -> float:
    """median(a) / median(b)."""
    return a.median / b.median
