"""`pas serve` (issue 18): heartbeats over HTTP from 50 concurrent keep-alive clients
against `pas agent beat` process spawns, and the server's memory at 10,000 agents.

HTTP rounds and spawn rounds alternate (three each); every beat is checked to have landed:
the agents' `heartbeat_count` must rise by exactly the number of beats sent.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

from fixtures import AGENTS_PER_CELL, agent_id, read_count
from proc import ENV, BenchError, reap, spawn
from scenarios import Check, Ctx, Section, fmt_n, fmt_time, table

CLIENTS = 50


def start_server(ctx: Ctx, root) -> tuple[subprocess.Popen, int, str]:
    """`pas serve` on a free loopback port of `root`; (process, port, token)."""
    token = subprocess.run(ctx.pas_cmd(root, "serve", "token"), env=ENV, capture_output=True,
                           text=True, check=True).stdout.strip()
    proc = subprocess.Popen(ctx.pas_cmd(root, "serve", "--listen", "127.0.0.1:0"), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise BenchError(f"pas serve did not start: {line!r}")
    port = int(line.rsplit(":", 1)[1])
    # The rest of stdout is one more line; drain it so the server never blocks on it.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, port, token


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise BenchError("pas serve did not stop within 15 s of SIGTERM")


def targets(root) -> list[tuple[str, str]]:
    """(cell, agent) for each client: its own agent, ten per cell."""
    out = []
    for c in root.cells:
        for i in range(1, AGENTS_PER_CELL + 1):
            out.append((c, agent_id(i)))
            if len(out) == CLIENTS:
                return out
    raise BenchError(f"the fixture has fewer than {CLIENTS} agents")


def http_round(port: int, token: str, who: list[tuple[str, str]], per_client: int):
    """Each client beats its agent `per_client` times on one keep-alive connection."""
    latencies: list[list[float]] = [[] for _ in who]
    errors: list[str] = []
    barrier = threading.Barrier(len(who) + 1)

    def client(k: int, cell: str, agent: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"service_id": agent, "status": "ok"})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                   "X-Pas-Cell": cell}
        barrier.wait()
        try:
            for _ in range(per_client):
                t0 = time.perf_counter()
                conn.request("PUT", "/heartbeat", body, headers)
                resp = conn.getresponse()
                resp.read()
                latencies[k].append(time.perf_counter() - t0)
                if resp.status != 200:
                    errors.append(f"HTTP {resp.status}")
                    return
        except OSError as e:
            errors.append(str(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k, c, a)) for k, (c, a) in enumerate(who)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise BenchError(f"HTTP beats failed: {errors[0]} ({len(errors)} clients)")
    return wall, [x for lat in latencies for x in lat]


def spawn_round(ctx: Ctx, root, who: list[tuple[str, str]], per_client: int):
    """Each of 50 workers runs `pas agent beat CELL AGENT` `per_client` times in turn."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(cell: str, agent: str) -> None:
        argv = ctx.pas_cmd(root, "agent", "beat", cell, agent)
        for _ in range(per_client):
            t0 = time.perf_counter()
            code, _ = reap(spawn(argv))
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                if code != 0:
                    errors.append(f"exit {code}")
                    return

    threads = [threading.Thread(target=worker, args=w) for w in who]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise BenchError(f"`pas agent beat` failed: {errors[0]}")
    return wall, latencies


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        if name in ("Private_Clean", "Private_Dirty", "Pss"):
            out[name] = int(rest.split()[0])
    return out


def get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 200:
        raise BenchError(f"GET {path}: HTTP {resp.status}")
    return body


def measure_serve(ctx: Ctx) -> Section:
    sec = Section("serve", "`pas serve`: HTTP beats vs process spawns, memory at 10,000 agents")
    size = next((s for s in ctx.sizes if s >= CLIENTS), None)
    if size is None:
        raise BenchError(f"needs a fixture of at least {CLIENTS} agents (--sizes 1000)")
    root = ctx.roots[size]
    who = targets(root)
    http_each = 40 if ctx.quick else 200
    spawn_each = 4 if ctx.quick else 10
    rounds = 3
    paths = [root.agent_file(c, a) for c, a in who]
    before = sum(read_count(p) for p in paths)
    load_before = os.getloadavg()[0]
    proc, port, token = start_server(ctx, root)
    results = {"http": [], "spawn": []}
    try:
        http_round(port, token, who, 2)  # warm-up: connections, page cache
        for _ in range(rounds):
            results["http"].append(http_round(port, token, who, http_each))
            results["spawn"].append(spawn_round(ctx, root, who, spawn_each))
        server_mem = memory_kb(proc.pid)
    finally:
        stop_server(proc)
    load_after = os.getloadavg()[0]
    sent = CLIENTS * (2 + rounds * (http_each + spawn_each))
    landed = sum(read_count(p) for p in paths) - before
    if landed != sent:
        raise BenchError(f"beats lost: {sent} sent, heartbeat_count rose by {landed}")

    def summary(kind: str, each: int):
        rates = [CLIENTS * each / wall for wall, _ in results[kind]]
        lat = [x for _, l in results[kind] for x in l]
        return statistics.median(rates), pct(lat, 50), pct(lat, 99), len(lat)

    h = summary("http", http_each)
    s = summary("spawn", spawn_each)
    speedup = h[0] / s[0]
    rows = [
        ["`PUT /heartbeat`, 50 keep-alive clients", fmt_n(h[0]), fmt_time(h[1]),
         fmt_time(h[2]), fmt_n(h[3])],
        ["`pas agent beat`, 50 concurrent spawners", fmt_n(s[0]), fmt_time(s[1]),
         fmt_time(s[2]), fmt_n(s[3])],
    ]
    sec.checks.append(Check("HTTP beats/s vs `pas agent beat` spawns (50 concurrent)",
                            f"{speedup:.1f}x ({fmt_n(h[0])}/s vs {fmt_n(s[0])}/s)",
                            "far above 1x", speedup > 2))
    raw = {"http": {"beats_per_s": h[0], "p50_s": h[1], "p99_s": h[2]},
           "spawn": {"beats_per_s": s[0], "p50_s": s[1], "p99_s": s[2]},
           "lost": sent - landed, "server_kb_after_beats": server_mem,
           "load": [load_before, load_after]}

    big = max(ctx.sizes)
    mem_rows = []
    if big >= 10_000:
        r10 = ctx.roots[big]
        proc, port, token = start_server(ctx, r10)
        try:
            time.sleep(0.5)
            idle = memory_kb(proc.pid)
            t0 = time.perf_counter()
            body = get(port, "/api/status")
            status_s = time.perf_counter() - t0
            agents = sum(len(c["agents"]) for c in json.loads(body)["cells"])
            after = memory_kb(proc.pid)
        finally:
            stop_server(proc)
        for label, m in (("started, idle", idle), (f"after `GET /api/status` ({fmt_n(agents)} agents, {fmt_time(status_s)})", after)):
            mem_rows.append([label, fmt_n(m.get("VmRSS", 0)), fmt_n(m.get("VmHWM", 0)),
                             fmt_n(m.get("Private_Clean", 0) + m.get("Private_Dirty", 0))])
        raw["memory_10k"] = {"idle": idle, "after_status": after, "status_s": status_s}
    ctx.data["serve"] = raw
    sec.body += [
        f"A root of {fmt_n(size)} agents; 50 agents in {len({c for c, _ in who})} cells, one "
        f"per client. {rounds} rounds of each kind, alternating (HTTP, spawn, HTTP, ...), after "
        f"2 untimed beats per client. HTTP: each client (a Python thread with one keep-alive "
        f"`http.client` connection) sends {http_each} `PUT /heartbeat` per round, each waiting "
        f"for its answer. Spawn: each of 50 threads runs `pas agent beat` {spawn_each} times "
        "per round (`posix_spawn` + `wait4`). Beats/s is the median round's; latencies are over "
        f"every beat of all rounds. {fmt_n(sent)} beats were sent and `heartbeat_count` rose by "
        f"{fmt_n(landed)}: none lost. Load average (1 min) {load_before:.2f} before, "
        f"{load_after:.2f} after.",
        "",
        *table(["beats", "beats/s", "p50", "p99", "beats timed"], rows),
        "",
        f"The server after the beats: RSS {fmt_n(server_mem.get('VmRSS', 0))} kB, peak "
        f"{fmt_n(server_mem.get('VmHWM', 0))} kB.",
        "",
    ]
    if mem_rows:
        sec.body += [
            f"Memory of `pas serve` over the {fmt_n(big)}-agent root (kB, from "
            "`/proc/PID/status` and `smaps_rollup`):",
            "",
            *table(["when", "RSS", "peak RSS", "private"], mem_rows),
            "",
        ]
    return sec


SCENARIOS = [measure_serve]
