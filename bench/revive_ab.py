#!/usr/bin/env python3
"""`pas revive CELL` restarting one agent whose supervisor and process were SIGKILLed (the
watch's path: record vanished, note death, inspect, claim, start), old and new builds
alternating, each in its own file root. Prints medians of wall time per build."""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

def run(pas, root, *args):
    env = dict(os.environ, PAS_AGENTS_AS_ROOT="1", NO_COLOR="1")
    env.pop("PAS_STORE", None)
    return subprocess.run([pas, "--root", root, *args], capture_output=True, text=True, env=env, check=True).stdout.strip()

def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] in "ZX"
    except FileNotFoundError:
        return True

def main():
    builds = {"old": sys.argv[1], "new": sys.argv[2]}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    tmp = tempfile.mkdtemp(prefix="pas-revive-ab-")
    roots, cells, times = {}, {}, {k: [] for k in builds}
    try:
        for name, pas in builds.items():
            root = os.path.join(tmp, name)
            os.makedirs(root)
            cell = run(pas, root, "cell", "create", "--name", "ab")
            run(pas, root, "agent", "add", cell, "a1", "--", "sleep", "600")
            run(pas, root, "policy", "set", cell, "restart_delay_seconds=0")
            run(pas, root, "agent", "start", cell, "a1")
            roots[name], cells[name] = root, cell
        for i in range(rounds + 2):
            order = list(builds) if i % 2 == 0 else list(reversed(list(builds)))
            for name in order:
                pas, root, cell = builds[name], roots[name], cells[name]
                a = json.loads(run(pas, root, "--json", "agent", "show", cell, "a1"))
                for pid in (a["supervisor_pid"], a["pid"]):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.time() + 5
                while not all(gone(p) for p in (a["supervisor_pid"], a["pid"])):
                    assert time.time() < deadline, "not gone"
                    time.sleep(0.005)
                t0 = time.perf_counter()
                out = run(pas, root, "revive", cell)
                dt = time.perf_counter() - t0
                assert "revived" in out, out
                if i >= 2:
                    times[name].append(dt * 1000)
        for name in builds:
            t = times[name]
            print(f"{name}: median {statistics.median(t):.2f} ms  (n={len(t)}, min {min(t):.2f}, max {max(t):.2f})")
        print(f"new/old: x{statistics.median(times['new'])/statistics.median(times['old']):.3f}; load {os.getloadavg()}")
    finally:
        for name, pas in builds.items():
            if name in roots:
                subprocess.run([pas, "--root", roots[name], "agent", "stop", cells[name], "a1", "--grace", "0"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

main()
