"""Two builds of pas side by side on the fleet views (issue 17, item 4): `pas status --all`
(table), `pas status --all --json` and `pas check` of OLD and NEW, and the floor
(`grep -r -c --include=*.json '' ROOT`), run round by round in rotating order on the same
fixture root (bench/fixtures.py), so both builds share the machine's noise. Prints wall-time
and CPU-time medians, each build's ratio to the floor, and the load average.

    python3 bench/ab.py OLD_PAS NEW_PAS [--sizes 10000,100000] [--rounds 20,4]

The fixtures are written to a temporary directory and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixtures import Generator  # noqa: E402
from proc import interleaved, which  # noqa: E402

VIEWS = {"table": ("status", "--all"), "json": ("status", "--all", "--json"),
         "check": ("check",)}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:.2f} s"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench/ab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--sizes", default="10000,100000", help="agents per root")
    p.add_argument("--rounds", default="20,4", help="timed rounds per size, in order")
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",")]
    rounds = [int(x) for x in a.rounds.split(",")]
    rounds += [rounds[-1]] * (len(sizes) - len(rounds))
    builds = {"old": str(Path(a.old).resolve()), "new": str(Path(a.new).resolve())}
    tmp = Path(tempfile.mkdtemp(prefix="pas-ab-"))
    try:
        gen = Generator(HERE.parent)
        for size, reps in zip(sizes, rounds):
            root = tmp / f"root-{size}"
            gen.root(root, size)
            cmds = {f"{b} {v}": [pas, "--root", str(root), *args]
                    for v, args in VIEWS.items() for b, pas in builds.items()}
            cmds["grep"] = [which("grep"), "-r", "-c", "--include=*.json", "", str(root)]
            before = load()
            # `check` exits 1-3 when agents are unhealthy: that is its answer, not a failure.
            stats = interleaved(cmds, reps, warmup=1, ok_codes=(0, 1, 2, 3))
            floor = stats["grep"]
            print(f"\n{size:,} agents, {reps} rounds, load {before} -> {load()}")
            print(f"{'command':<14} {'wall':>10} {'cpu':>10} {'/ grep wall':>12} "
                  f"{'/ grep cpu':>11}")
            for name, s in stats.items():
                print(f"{name:<14} {ms(s.median):>10} {ms(s.cpu_median):>10} "
                      f"{s.median / floor.median:>12.2f} "
                      f"{s.cpu_median / floor.cpu_median:>11.2f}")
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
