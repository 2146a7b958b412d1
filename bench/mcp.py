"""What `pas mcp` costs and saves (issue 21). Python 3.11 standard library only.

    python3 bench/mcp.py NEW_PAS OLD_PAS [BEATS] [ROUNDS]

1. Beats: BEATS `beat` tool calls over one `pas mcp` session (each waits for its reply)
   against BEATS `pas agent beat` processes, rounds alternating; per-beat medians.
2. Start: `pas agent beat` and `pas --version` of OLD_PAS and NEW_PAS alternating (the
   `pas` binary must not pay for the MCP server it hands to `pas-serve`): wall time and
   minor page faults, medians.
Prints a markdown table and the load average.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def spawn_timed(argv, env):
    """Runs argv; (seconds, minor faults)."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
    ])
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    return elapsed, usage.ru_minflt


def mcp_beats(pas, env, beats):
    """Seconds per beat over one session (after initialize)."""
    proc = subprocess.Popen([pas, "mcp"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def call(msg):
        proc.stdin.write(json.dumps(msg) + "\n")
        proc.stdin.flush()
        if "id" in msg:
            reply = json.loads(proc.stdout.readline())
            if "error" in reply or reply.get("result", {}).get("isError"):
                raise SystemExit(f"pas mcp: {reply}")
            return reply

    call({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
    call({"jsonrpc": "2.0", "method": "notifications/initialized"})
    t0 = time.perf_counter()
    for i in range(beats):
        call({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {"name": "beat", "arguments": {"progress": 0.5, "ctx_used": i}}})
    elapsed = time.perf_counter() - t0
    proc.stdin.close()
    proc.wait(timeout=10)
    return elapsed / beats


def main():
    new, old = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    beats = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    root = tempfile.mkdtemp(prefix="pas-bench-mcp-")
    try:
        env = {"PATH": os.environ.get("PATH", ""), "PAS_ROOT": root}
        cell = subprocess.run([new, "-q", "cell", "create", "--name", "bench"], env=env, check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run([new, "agent", "add", cell, "a1"], env=env, check=True, capture_output=True)
        agent_env = dict(env, PAS_CELL=cell, PAS_AGENT="a1")
        over_mcp, spawned = [], []
        start = {k: [] for k in ("old beat", "new beat", "old --version", "new --version")}
        faults = {k: [] for k in start}
        for _ in range(rounds):
            over_mcp.append(mcp_beats(new, agent_env, beats))
            t = [spawn_timed([new, "agent", "beat"], agent_env)[0] for _ in range(beats)]
            spawned.append(statistics.median(t))
            for _ in range(20):
                for name, pas in (("old", old), ("new", new)):
                    s, f = spawn_timed([pas, "agent", "beat"], agent_env)
                    start[f"{name} beat"].append(s)
                    faults[f"{name} beat"].append(f)
                    s, f = spawn_timed([pas, "--version"], env)
                    start[f"{name} --version"].append(s)
                    faults[f"{name} --version"].append(f)
        med = statistics.median
        print(f"beats, {rounds} rounds of {beats}, median per beat:")
        print()
        print("| how | ms per beat |")
        print("| --- | ---: |")
        print(f"| `beat` tool over one `pas mcp` session | {med(over_mcp) * 1e3:.3f} |")
        print(f"| `pas agent beat` process | {med(spawned) * 1e3:.3f} |")
        print(f"| ratio | {med(spawned) / med(over_mcp):.1f}x |")
        print()
        print(f"start of `pas`, {len(start['old beat'])} runs each, alternating, medians:")
        print()
        print("| command | old ms | new ms | old minor faults | new minor faults |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for cmd in ("beat", "--version"):
            print(f"| `pas {'agent beat' if cmd == 'beat' else cmd}` | {med(start['old ' + cmd]) * 1e3:.2f} | {med(start['new ' + cmd]) * 1e3:.2f} | {med(faults['old ' + cmd]):.0f} | {med(faults['new ' + cmd]):.0f} |")
        print()
        print("load average:", " ".join(open("/proc/loadavg").read().split()[:3]))
    finally:
        shutil.rmtree(root, ignore_errors=True)


main()
