"""What an open dashboard costs the server (issue 18): headless Chromium keeps the page of
`pas serve` open on a fixture root for WINDOW seconds; counted are the HTTP requests the
page made (the server's `pas_serve_requests_total`) and the CPU time of the server process
(`/proc/PID/stat`), per minute. Needs `chromium`; reported as not measured without it.

Run alone: `python3 bench/run.py --only dashboard --sizes 1000,10000 --no-peers`. To compare
two builds side by side (the page is embedded, so a page change is a binary change):
`python3 bench/dashboard.py ROOT_SIZE OLD_PAS NEW_PAS [ROUNDS]`, which alternates them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from proc import ENV, BenchError

WINDOW = 30.0  # seconds the page stays open per round
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _requests(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return sum(int(float(m)) for m in
               re.findall(r"^pas_serve_requests_total(?:\{[^}]*\})? (\S+)$", text, re.M))


def page_cost(pas: str, root: Path, window: float = WINDOW) -> dict:
    """One round: a server, the page open `window` seconds, the server's counts."""
    if not shutil.which("chromium"):
        raise BenchError("`chromium` is not installed (apt-get install -y chromium)")
    serve = subprocess.Popen([pas, "--root", str(root), "serve", "--listen", "127.0.0.1:0"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=ENV, start_new_session=True,
                             text=True)
    profile = tempfile.mkdtemp(prefix="pas-bench-chromium-")
    chrome = None
    try:
        line = serve.stdout.readline()
        found = re.search(r":(\d+)\s*$", line)
        if not found:
            raise BenchError(f"pas serve did not say where it listens: {line!r}")
        port = int(found.group(1))
        # Keep reading so that the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in serve.stdout], daemon=True).start()
        req0, cpu0 = _requests(port), _cpu_seconds(serve.pid)
        chrome = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--window-size=1280,1000", f"--user-data-dir={profile}",
             f"http://127.0.0.1:{port}/"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        t0 = time.monotonic()
        time.sleep(window)
        if chrome.poll() is not None:
            raise BenchError(f"chromium exited early ({chrome.returncode})")
        elapsed = time.monotonic() - t0
        req1, cpu1 = _requests(port), _cpu_seconds(serve.pid)
        minutes = elapsed / 60
        return {
            # The /metrics read before the window is counted in it; leave it out.
            "requests_per_min": (req1 - req0 - 1) / minutes,
            "cpu_s_per_min": (cpu1 - cpu0) / minutes,
        }
    finally:
        for p in (chrome, serve):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(profile, ignore_errors=True)


def measure_dashboard(ctx):
    from scenarios import Section

    sec = Section("dashboard", "Dashboard: what an open page costs the server")
    sec.body += [
        f"Headless Chromium keeps `GET /` of `pas serve` open {WINDOW:.0f} s on each fixture "
        "root; the server's request counter and its process's CPU time, per minute.",
        "",
        "| agents | requests/min | server CPU s/min |",
        "| ---: | ---: | ---: |",
    ]
    if not shutil.which("chromium"):
        sec.body.append("Not measured: `chromium` is not installed (apt-get install -y chromium).")
        return sec
    for size in ctx.sizes:
        r = page_cost(ctx.pas, ctx.roots[size].path)
        ctx.data.setdefault("dashboard", {})[size] = r
        sec.body.append(f"| {size:,} | {r['requests_per_min']:.0f} | {r['cpu_s_per_min']:.2f} |")
    return sec


SCENARIOS = [measure_dashboard]


def main(argv: list[str]) -> int:
    """Side by side: `dashboard.py SIZE OLD_PAS NEW_PAS [ROUNDS]`, alternating the two."""
    import fixtures

    size, old, new = int(argv[0]), argv[1], argv[2]
    rounds = int(argv[3]) if len(argv) > 3 else 3
    tmp = Path(tempfile.mkdtemp(prefix="pas-bench-dash-"))
    try:
        root = fixtures.Generator(Path(__file__).resolve().parent.parent).root(tmp / "root", size)
        got: dict[str, list[dict]] = {"old": [], "new": []}
        for i in range(rounds):
            for name, pas in (("old", old), ("new", new)) if i % 2 == 0 else (("new", new), ("old", old)):
                got[name].append(page_cost(pas, root.path))
                print(f"round {i + 1} {name}: {got[name][-1]}", file=sys.stderr)
        print(f"{size:,} agents, {rounds} rounds of {WINDOW:.0f} s each, medians; "
              f"load average at the end {'%.2f %.2f %.2f' % os.getloadavg()}")
        print("| page | requests/min | server CPU s/min |")
        print("| --- | ---: | ---: |")
        for name in ("old", "new"):
            rpm = statistics.median(r["requests_per_min"] for r in got[name])
            cpu = statistics.median(r["cpu_s_per_min"] for r in got[name])
            print(f"| {name} | {rpm:.0f} | {cpu:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
