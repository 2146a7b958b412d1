"""docs/benchmarks.md and the hand-written SVG chart."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape

from scenarios import STATUS_CMDS, Section, fmt_n, fmt_time, table


# ---------------------------------------------------------------------------- machine


def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _cmd(*argv: str, cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
        return p.stdout.strip() or p.stderr.strip() or "unknown"
    except OSError:
        return "unknown"


def filesystem_of(path: Path) -> str:
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fs = line.split()[:3]
            if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
                journal = ""
                if fs == "ext4":
                    name = os.path.basename(dev)
                    jbd2 = Path("/proc/fs/jbd2")
                    has = jbd2.is_dir() and any(e.name.startswith(name + "-")
                                                for e in jbd2.iterdir())
                    journal = ", with a journal" if has else ", **without a journal**"
                best, kind = mnt, f"{fs}{journal} (on {dev}, mounted at {mnt})"
    except OSError:
        pass
    return kind


def machine_info(repo: Path, pas: str, tmp: Path) -> dict[str, str]:
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    try:
        mem = f"{int(mem_kb) / 1024 / 1024:.1f} GiB"
    except ValueError:
        mem = "unknown"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": _cmd("nproc"),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "kernel": f"{platform.system()} {platform.release()}",
        "memory": mem,
        "filesystem": filesystem_of(tmp),
        "pas": _cmd(pas, "--version"),
        "commit": _cmd("git", "describe", "--always", "--dirty", "--abbrev=12", cwd=repo),
        "rustc": _cmd("rustc", "--version"),
        "python": sys.version.split()[0],
        "load": "%.2f %.2f %.2f" % os.getloadavg(),
    }


# ---------------------------------------------------------------------------- markdown


def render(sections: list[Section], info: dict[str, str], run: dict) -> str:
    out: list[str] = []
    w = out.append
    w("# Benchmarks")
    w("")
    w("How fast `pas` is at what it does most: agents sending heartbeats, monitors "
      "reading the whole fleet, claims from the work queue, and reviving agents that die; "
      "and how it compares with real peers installed on the same machine (s6, runit, and a "
      "shell queue of files), measured in the same run. Every figure is a ratio against a "
      "baseline or peer measured in the same run, interleaved with it, so both share the "
      "machine's noise. This file and `bench-status.svg` are written by the benchmark "
      "suite; do not edit them by hand, run it again.")
    w("")
    w("## How to run")
    w("")
    w("```sh")
    w("python3 bench/run.py                 # the full suite, writes this file")
    w("python3 bench/run.py --quick         # a smoke run: fewer repetitions, no 100,000")
    w("python3 bench/run.py --sizes 10,1000 --out /tmp/bench.md")
    w("python3 bench/run.py --only revival,footprint,claims --sizes 10   # the peers only")
    w("```")
    w("")
    w("Python 3.11 standard library only. It builds `pas` as deployed, the plain release "
      "build (`cargo build --release`, into `$CARGO_TARGET_DIR` when it is set), "
      "generates fixture roots as plain files in a temporary directory (removed at the "
      "end, also on error or Ctrl-C), checks a cell of each with `pas validate --strict`, "
      "measures, and writes this report and the chart. The full run takes about 10-15 "
      "minutes on a 2-core machine (the run that wrote this file: "
      f"{run['elapsed']}, of which {run['build']} building, {run['fixtures']} "
      f"writing fixtures and {run['cleanup']} removing them); `--quick` takes a few "
      "minutes plus the build. Other flags: `--no-build` (use the existing "
      "`target/release/pas`), `--json FILE` (raw timings), `--tmpdir DIR`, `--no-peers` "
      "(leave out the comparisons with s6, runit and the shell queue), `--only NAMES`. "
      "The peers are the Debian packages `s6` and `runit` (`apt-get install s6 runit`; "
      "the suite installs them itself when it runs as root and they are missing, and "
      "reports a comparison as skipped, with the reason, when it cannot); the revival "
      "timings need root (the kernel's process events).")
    w("")
    w("## This run")
    w("")
    rows = [
        ["date", info["date"]],
        ["command", f"`{run['command']}`"],
        ["wall time of the whole run", run["elapsed"]],
        ["CPUs (`nproc`)", info["nproc"]],
        ["CPU model", info["cpu"]],
        ["kernel", info["kernel"]],
        ["memory", info["memory"]],
        ["fixture filesystem", info["filesystem"]],
        ["pas", f"{info['pas']} (commit {info['commit']})"],
        ["rustc / python", f"{info['rustc']} / Python {info['python']}"],
        ["load average at start / end", f"{info['load']} / {run['load_end']}"],
    ]
    out += table(["", ""], rows)
    w("")
    w("## Summary")
    w("")
    rows = []
    for s in sections:
        for c in s.checks:
            met = "-" if c.met is None else ("yes" if c.met else "**NO**")
            rows.append([c.what, c.measured, c.target, met + (f" ({c.note})" if c.note else "")])
        if s.failed:
            rows.append([s.title, f"**FAILED**: {s.failed}", "-", "**NO**"])
    out += table(["measurement", "measured", "target", "met?"], rows)
    w("")
    missed = [c for s in sections for c in s.checks if c.met is False]
    if missed:
        w(f"**{len(missed)} target(s) missed**; see the sections below for by how much.")
    else:
        w("Every measured target was met.")
    w("")
    for n, s in enumerate(sections, 1):
        w(f"## {n}. {s.title}")
        w("")
        if s.failed:
            w(f"**This measurement failed**: {s.failed}")
            w("")
        out += s.body
        if out[-1] != "":
            w("")
    changes = Path(__file__).resolve().parent / "changes.md"
    if changes.exists():
        # Hand-written: what was changed in pas to reach these figures, and why.
        w(changes.read_text().rstrip("\n"))
        w("")
    w("## Method")
    w("")
    w("- **Timing.** Every measured command, pas or baseline, is one process started by "
      "Python's `os.posix_spawn` with stdin/stdout/stderr on /dev/null and reaped with "
      "`os.wait4`; the clock (`time.perf_counter_ns`) runs from just before the spawn to "
      "just after the wait, so both sides pay the same harness cost. `wait4` also reports "
      "CPU time; peak memory comes from a separate run under GNU `time` (a child of this "
      "Python process would report Python's own memory as its peak). Ratios are median(pas) / median(baseline) of runs "
      "interleaved round by round, with the order rotated each round.")
    w("- **Fixtures** are written directly as files (no pas commands), "
      f"{run['agents_per_cell']} agents and {run['tasks_per_cell']} tasks per cell: "
      "`cell.json` from `templates/cell.json` with a uuid4 as directory name and "
      "`cell_id`; `config/isolation.json`, `config/policies.json` and "
      "`config/permissions.json` from `templates/`; the six subdirectories; tasks from "
      "`templates/task.json` (one completed, one in progress, one pending on it, so "
      "shown as blocked); agents as `pas agent add` plus some `pas agent beat`s leave "
      "them (status `active`, `reported_status` `ACTIVE`, progress, context use, a note, "
      "`metadata` {}, `health` `healthy`, a `last_heartbeat` under 3 s old, context use "
      "under the 50% warning line; about 550 bytes each). Cells were created 10-20 "
      "minutes before the run, well within the template's one-hour `timeout`, so no cell "
      "times out during the run. One cell of each root passes `pas validate --strict`.")
    w("- **Why `heartbeat_interval` is 3600 in the fixtures.** `pas status` and "
      "`pas check` record health changes: an agent whose last beat is older than the "
      "interval (30 s by default) turns `late`, and the first status run would rewrite "
      "every agent file and append an event per agent. The fixtures are written before "
      "the measurements and age during the run, so each cell's `config/policies.json` "
      "sets `\"heartbeat_interval\": 3600`; every agent stays healthy, status only "
      "reads, and the suite checks afterwards that no cell got an events log.")
    w("- **Warm cache.** Fixtures are freshly written and each command runs once untimed "
      "before timing, so the page cache and dentry cache are warm for pas and baselines "
      "alike.")
    if "without a journal" in info["filesystem"]:
        w("- **ext4 without a journal.** The fixtures' filesystem has no journal. On such a "
          "filesystem ext4 avoids reusing an inode freed in the last 60 s (up to 6 min "
          "while its inode table block is unwritten) and scans past every such inode when "
          "it allocates one. Creating files right after deleting many (a previous run's "
          "fixtures) is then up to 20x slower, and so is every write that creates a file, "
          "such as pas's write-a-temporary-file-then-rename. Run the suite when no large "
          "delete happened in the last few minutes (this run's fixtures took "
          f"{run['fixtures']} to write).")
    w("")
    return "\n".join(out)


# ---------------------------------------------------------------------------- SVG


COLORS = {"status": "#d62728", "check": "#ff7f0e", "floor": "#2ca02c", "cat": "#7f7f7f",
          "python": "#1f77b4"}
DASH = {"cat": "6,4", "python": "2,3"}
SHORT = {"status": "pas status --all --json", "check": "pas check",
         "floor": "floor: grep -r", "cat": "find + cat", "python": "Python loader"}


def _decades(lo: float, hi: float) -> tuple[int, int]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return a, (b if b > a else a + 1)


def _x_label(e: int) -> str:
    v = 10 ** e
    return f"{v // 1000}k" if v >= 1000 else str(v)


def _time_label(e: int) -> str:
    s = 10.0 ** e
    if s >= 1:
        return f"{s:g} s"
    if s >= 1e-3:
        return f"{s * 1e3:g} ms"
    return f"{s * 1e6:g} µs"


def _panel(x0: float, y0: float, w: float, h: float, title: str,
           series: dict[str, list[tuple[float, float]]], ylabel) -> list[str]:
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    xa, xb = _decades(min(xs), max(xs))
    ya, yb = _decades(min(ys), max(ys))

    def px(x: float) -> float:
        return x0 + (math.log10(x) - xa) / (xb - xa) * w

    def py(y: float) -> float:
        return y0 + h - (math.log10(y) - ya) / (yb - ya) * h

    g = [f'<text x="{x0 + w / 2:.1f}" y="{y0 - 12:.1f}" text-anchor="middle" '
         f'font-weight="bold">{escape(title)}</text>',
         f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#333"/>']
    for e in range(xa, xb + 1):
        x = px(10 ** e)
        g.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + h}" stroke="#ddd"/>')
        g.append(f'<text x="{x:.1f}" y="{y0 + h + 16:.1f}" text-anchor="middle">'
                 f'{_x_label(e)}</text>')
    for e in range(ya, yb + 1):
        y = py(10 ** e)
        g.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#ddd"/>')
        g.append(f'<text x="{x0 - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">'
                 f'{escape(ylabel(e))}</text>')
    g.append(f'<text x="{x0 + w / 2:.1f}" y="{y0 + h + 34:.1f}" text-anchor="middle">'
             'agents in the root (log)</text>')
    for key, pts in series.items():
        pts = sorted(pts)
        dash = f' stroke-dasharray="{DASH[key]}"' if key in DASH else ""
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        g.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[key]}" '
                 f'stroke-width="2"{dash}/>')
        for x, y in pts:
            g.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{COLORS[key]}">'
                     f'<title>{escape(SHORT[key])}: {fmt_n(x)} agents, '
                     f'{escape(fmt_time(y) if ylabel is _time_label else f"{y * 1e6:.2f} µs")}'
                     '</title></circle>')
    return g


def svg(status: dict) -> str:
    """status: {agents: {cmd: {"times_s": [...]}}} -> an SVG document."""
    import statistics

    sizes = sorted(int(s) for s in status)
    total = {c: [(s, statistics.median(status[s][c]["times_s"])) for s in sizes]
             for c in STATUS_CMDS}
    per = {c: [(s, t / s) for s, t in pts] for c, pts in total.items()}
    W, H = 980, 430
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>']
    parts += _panel(80, 40, 360, 280, "Wall time per run (median; lower is better)", total,
                    _time_label)
    parts += _panel(580, 40, 360, 280, "Cost per agent (median time / agents)", per,
                    lambda e: _time_label(e))
    lx, ly = 80, 385
    for i, key in enumerate(STATUS_CMDS):
        x = lx + i * 180
        dash = f' stroke-dasharray="{DASH[key]}"' if key in DASH else ""
        parts.append(f'<line x1="{x}" y1="{ly}" x2="{x + 28}" y2="{ly}" '
                     f'stroke="{COLORS[key]}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{x + 34}" y="{ly + 4}">{escape(SHORT[key])}</text>')
    parts.append(f'<text x="{lx}" y="{ly + 30}" fill="#555">Warm page cache; '
                 f'{len(sizes)} sizes; see docs/benchmarks.md for the method.</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"

