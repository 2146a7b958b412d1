#!/usr/bin/env python3
"""The pas benchmark suite: one command.

    python3 bench/run.py [--quick] [--sizes 10,1000,10000,100000] [--out docs/benchmarks.md]

Builds pas in release mode, writes fixture missions roots into a temporary directory,
runs every measurement in scenarios.SCENARIOS, writes the report (and the SVG chart next
to it), and removes the fixtures, also on error or interrupt. Standard library only.
Exits 0 when every measurement ran (missed targets are reported, not fatal), 1 when one
failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # leave no __pycache__ in the work tree

import dashboard  # noqa: E402
import etcd  # noqa: E402
import fixtures  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402
import serve  # noqa: E402
from proc import ENV, BenchError  # noqa: E402

REPO = HERE.parent
FULL_SIZES = [10, 1000, 10000, 100000]
QUICK_SIZES = [10, 1000, 10000]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def human(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{seconds:.1f} s"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions, and sizes 10,1000,10000 unless --sizes is given")
    p.add_argument("--sizes", help="agents per fixture root, comma-separated "
                   "(default 10,1000,10000,100000)")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"),
                   help="the report (the chart goes next to it as bench-status.svg)")
    p.add_argument("--no-build", action="store_true",
                   help="skip the build and use the binary built last (target/release/pas)")
    p.add_argument("--json", metavar="FILE", help="also write the raw timings as JSON")
    p.add_argument("--tmpdir", help="where to create the fixtures (default: $TMPDIR or /tmp)")
    p.add_argument("--no-peers", action="store_true",
                   help="skip the comparisons with s6, runit and the shell queue "
                   "(bench/peers.py)")
    p.add_argument("--only", metavar="NAMES",
                   help="run only the measurements whose names contain one of these "
                   "comma-separated words (e.g. revival,claims; names: "
                   + ", ".join(f.__name__.replace("measure_", "") for f in
                               scenarios.SCENARIOS + serve.SCENARIOS + dashboard.SCENARIOS
                               + etcd.SCENARIOS + peers.SCENARIOS) + ")")
    a = p.parse_args(argv)
    if a.sizes:
        try:
            a.sizes = sorted({int(x.replace("_", "")) for x in a.sizes.split(",") if x.strip()})
        except ValueError:
            p.error(f"--sizes {a.sizes!r}: expected numbers like 10,1000,10000")
        if not a.sizes or min(a.sizes) < 1:
            p.error("--sizes: every size must be at least 1")
    else:
        a.sizes = QUICK_SIZES if a.quick else FULL_SIZES
    return a


def target_dir() -> Path:
    """Where cargo puts what it builds: $CARGO_TARGET_DIR, else target/ in the repository."""
    env = os.environ.get("CARGO_TARGET_DIR")
    return Path(env) if env else REPO / "target"


def pas_binary() -> Path:
    """The release binary: target/release/pas under the target directory."""
    return target_dir() / "release" / "pas"


def build() -> str:
    """The plain release build, the one deployed (README, Install)."""
    log("cargo build --release")
    p = subprocess.run(["cargo", "build", "--release"], cwd=REPO, env=ENV)
    if p.returncode != 0:
        raise BenchError("`cargo build --release` failed")
    return str(pas_binary())


def on_signal(signum, _frame):
    # Turn SIGTERM/SIGHUP into an exception so the finally blocks remove the fixtures.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    t_start = time.perf_counter()
    command = "python3 bench/run.py " + " ".join(argv) if argv else "python3 bench/run.py"

    t0 = time.perf_counter()
    if args.no_build:
        pas = str(pas_binary())
        if not os.access(pas, os.X_OK):
            raise BenchError(f"{pas} does not exist; run without --no-build")
    else:
        pas = build()
    t_build = time.perf_counter() - t0

    tmp = Path(tempfile.mkdtemp(prefix="pas-bench-", dir=args.tmpdir))
    sections: list[scenarios.Section] = []
    failed = False
    try:
        info = report.machine_info(REPO, pas, tmp)
        log(f"fixtures in {tmp}")
        t0 = time.perf_counter()
        gen = fixtures.Generator(REPO)
        roots = {}
        for size in args.sizes:
            root = gen.root(tmp / f"agents-{size}", size)
            roots[size] = root
            log(f"  {size} agents: {len(root.cells)} cells, {root.files} files, "
                f"{root.bytes / 1e6:.1f} MB in {root.seconds:.1f} s")
            cell = root.cells[0]
            p = subprocess.run([pas, "--root", str(root.path), "validate", "--strict", cell],
                               env=ENV, capture_output=True, text=True)
            if p.returncode != 0:
                raise BenchError(f"a generated cell does not validate (exit {p.returncode}):"
                                 f"\n{p.stdout}{p.stderr}")
        t_fixtures = time.perf_counter() - t0

        ctx = scenarios.Ctx(repo=REPO, pas=pas, roots=roots, quick=args.quick, tmp=tmp)
        todo = (scenarios.SCENARIOS + serve.SCENARIOS + dashboard.SCENARIOS + etcd.SCENARIOS
                + ([] if args.no_peers else peers.SCENARIOS))
        if args.only:
            words = [w.strip() for w in args.only.split(",") if w.strip()]
            todo = [m for m in todo if any(w in m.__name__ for w in words)]
        for measure in todo:
            name = measure.__name__
            log(name)
            t0 = time.perf_counter()
            try:
                sections.append(measure(ctx))
            except BenchError as e:
                failed = True
                log(f"  FAILED: {e}")
                sec = scenarios.Section(name, name.replace("measure_", "").replace("_", " "),
                                        failed=str(e))
                sections.append(sec)
            log(f"  {name} took {human(time.perf_counter() - t0)}")

    finally:
        t0 = time.perf_counter()
        shutil.rmtree(tmp, ignore_errors=True)
        t_cleanup = time.perf_counter() - t0
        log(f"removed {tmp} in {human(t_cleanup)}")

    elapsed = time.perf_counter() - t_start
    run = {
        "command": command,
        "elapsed": human(elapsed),
        "build": human(t_build) + ("" if not args.no_build else " (skipped)"),
        "fixtures": human(t_fixtures),
        "cleanup": human(t_cleanup),
        "load_end": "%.2f %.2f %.2f" % os.getloadavg(),
        "agents_per_cell": fixtures.AGENTS_PER_CELL,
        "tasks_per_cell": fixtures.TASKS_PER_CELL,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.render(sections, info, run))
    chart = out.parent / "bench-status.svg"
    if "status" in ctx.data:
        chart.write_text(report.svg(ctx.data["status"]))
    elif chart.exists():
        chart.unlink()  # a chart from an earlier run would not match this report
    if args.json:
        Path(args.json).write_text(json.dumps({"run": run, "machine": info, "data": ctx.data},
                                              indent=1))
    log(f"wrote {out} (whole run {human(elapsed)})")
    for s in sections:
        for c in s.checks:
            mark = {True: "ok  ", False: "MISS", None: "----"}[c.met]
            log(f"  {mark} {c.what}: {c.measured} (target {c.target})")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted; fixtures removed", file=sys.stderr)
        sys.exit(130)
