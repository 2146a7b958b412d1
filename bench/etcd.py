"""pas on etcd (issue 19) beside the file store, in the same run: claims/s of 20 claimer
processes on one queue, and the cost of one `pas agent beat`; revival latency when agents
can start on etcd.

A 3-member etcd cluster is started on free loopback ports with its data under the run's
temporary directory, and stopped at the end. The etcd side runs `pas-etcd` (the release
build with `--features etcd` puts it next to `pas`); the section is skipped with a note
when `etcd` or `pas-etcd` is missing. Runs alternate file / etcd.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

from fixtures import Generator, agent_id
from peers import WORKER_SH, load_text, log, run_claimers
from proc import ENV, BenchError
from scenarios import Check, Ctx, Section, fmt_time, index_queue, table

WORKERS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Three etcd members on loopback, data under `base`."""

    def __init__(self, base: Path):
        self.base = base
        clients = [free_port() for _ in range(3)]
        peers = [free_port() for _ in range(3)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers))
        self.members = [f"127.0.0.1:{p}" for p in clients]
        self.procs = []
        for i in range(3):
            client, peer = f"http://127.0.0.1:{clients[i]}", f"http://127.0.0.1:{peers[i]}"
            log_file = open(base / f"m{i}.log", "ab")
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", f"m{i}", "--data-dir", str(base / f"m{i}"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", f"bench-{os.getpid()}", "--max-txn-ops", "10000",
                 "--log-level", "warn", "--logger", "zap"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file))
        deadline = time.monotonic() + 30
        while not all(self.healthy(m) for m in self.members):
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"the etcd cluster did not become healthy (logs in {base})")
            time.sleep(0.1)

    @staticmethod
    def healthy(member: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{member}/health", timeout=2) as r:
                return b'"health":"true"' in r.read()
        except OSError:
            return False

    def url(self, prefix: str) -> str:
        return f"etcd://{','.join(self.members)}/{prefix}"

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
            p.wait()


def check_claims(pas: list[str], cell: str, n: int, claimed: list[list[str]]
                 ) -> tuple[int, int, int]:
    """(claims, twice, lost) as the store tells them after a run."""
    flat = [t for w in claimed for t in w]
    twice = len(flat) - len(set(flat))
    p = subprocess.run([*pas, "--json", "task", "list", cell], env=ENV,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"`pas task list` failed: {p.stderr.strip()}")
    in_progress = {t["task_id"] for t in json.loads(p.stdout) if t.get("status") == "in_progress"}
    lost = len(in_progress - set(flat))
    return len(flat), twice, lost


def beat_times(pas: list[str], cell: str, reps: int) -> list[float]:
    out = []
    for i in range(reps):
        argv = [*pas, "agent", "beat", cell, agent_id(1 + i % WORKERS)]
        t0 = time.perf_counter()
        p = subprocess.run(argv, env=ENV, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed: {p.stderr.strip()}")
    return out


def measure_etcd(ctx: Ctx) -> Section:
    sec = Section("etcd", "pas on etcd beside the file store (issue 19)")
    pas_etcd = Path(ctx.pas).with_name("pas-etcd")
    missing = ("`etcd` is not installed (apt-get install etcd-server)" if not shutil.which("etcd")
               else None if pas_etcd.exists() else
               f"`{pas_etcd}` is not built (cargo build --release --features etcd; needs protoc)")
    if missing:
        sec.body += [f"**Skipped**: {missing}.", ""]
        return sec
    tasks = 300 if ctx.quick else 1000
    window = 3.0 if ctx.quick else 5.0
    reps = 1 if ctx.quick else 2
    beats = 30 if ctx.quick else 100
    base = ctx.tmp / "etcd"
    base.mkdir()
    (base / "worker.sh").write_text(WORKER_SH)
    sh = shutil.which("sh")
    cluster = Cluster(base)
    load0 = load_text()
    gen = Generator(ctx.repo)
    res: dict[str, list[dict]] = {"file": [], "etcd": []}
    beat: dict[str, list[float]] = {"file": [], "etcd": []}
    revival = "not measured"
    try:
        for r in range(reps):
            for k, name in enumerate(("file", "etcd") if r % 2 == 0 else ("etcd", "file")):
                d = base / f"{name}-{r}"
                d.mkdir()
                stop = d / "STOP"
                root, cell = gen.claim_root(d / "root", WORKERS, tasks)
                pas = [ctx.pas, "--root", str(root.path)]
                if name == "etcd":
                    url = cluster.url(f"bench-{r}")
                    p = subprocess.run([*pas, "store", "copy", "--from", str(root.path),
                                        "--to", url], env=ENV, capture_output=True, text=True)
                    if p.returncode != 0:
                        raise BenchError(f"pas store copy failed: {p.stderr.strip()}")
                    pas = [*pas, "--store", url]
                else:
                    index_queue(ctx, root, cell)
                argvs = [[sh, str(base / "worker.sh"), str(stop), *pas, "task", "claim", cell,
                          "--agent", agent_id(i)] for i in range(1, WORKERS + 1)]
                wall, claimed, failed, _ = run_claimers(argvs, d, stop, window)
                got, twice, lost = check_claims(pas, cell, tasks, claimed)
                res[name].append({"claims": got, "wall_s": wall, "rate": got / wall,
                                  "failed": failed, "twice": twice, "lost": lost})
                log(f"etcd claims {name}: {got} in {wall:.1f} s = {got / wall:.0f}/s, "
                    f"{failed} failed, {twice} twice, {lost} lost")
                beat[name] += beat_times(pas, cell, beats)
                if name == "etcd" and r == 0:
                    subprocess.run([*pas, "agent", "set", cell, agent_id(1), "--", "sleep",
                                    "600"], env=ENV, capture_output=True)
                    p = subprocess.run([*pas, "agent", "start", cell, agent_id(1)], env=ENV,
                                       capture_output=True, text=True)
                    if p.returncode != 0:
                        revival = (f"not measured: `pas agent start` on etcd exits "
                                   f"{p.returncode} in this build: "
                                   f"{p.stderr.strip().split(';')[0].split(' is ', 1)[-1]}")
                    else:
                        subprocess.run([*pas, "agent", "stop", cell, agent_id(1)], env=ENV,
                                       capture_output=True)
                        revival = ("not measured: agents start on etcd in this build, but "
                                   "this section does not time revival yet")
                shutil.rmtree(d, ignore_errors=True)
    finally:
        cluster.stop()
    load1 = load_text()
    med = {n: statistics.median(x["rate"] for x in v) for n, v in res.items()}
    bmed = {n: statistics.median(v) for n, v in beat.items()}
    ctx.data["etcd"] = {"claims": res, "beat_s": beat, "revival": revival}
    sec.body += [
        f"A 3-member etcd cluster on loopback (this machine; members started by the "
        f"benchmark, `--max-txn-ops 10000`), against the file store, in the same run, "
        f"alternating. Claims: {WORKERS} claimer processes (`sh` loops of `pas task claim "
        f"CELL --agent AGENT`) on one queue of {tasks:,} pending tasks for {window:.0f} s "
        "(as in the claims-peer section); the etcd queue is the same generated root moved "
        "there by `pas store copy`. Every claim is checked against the store afterwards "
        "(`task list`): none twice, none lost. Beat: one `pas agent beat` process "
        f"({beats} per store per round, after the claims).",
        "",
    ]
    rows = []
    for name in ("file", "etcd"):
        runs = res[name]
        rows.append([name, f"{med[name]:.0f}/s",
                     ", ".join(f"{x['rate']:.0f}" for x in runs),
                     str(sum(x["twice"] for x in runs)), str(sum(x["lost"] for x in runs)),
                     str(sum(x["failed"] for x in runs)), fmt_time(bmed[name])])
    sec.body += table(["store", "claims/s (median)", "runs", "twice", "lost", "failed",
                       "beat (median)"], rows)
    sec.body += [
        "",
        f"etcd / file: claims x{med['etcd'] / med['file']:.2f}, beat "
        f"x{bmed['etcd'] / bmed['file']:.2f}. Load average {load0} before, {load1} after.",
        "",
        f"Revival latency on etcd: {revival}.",
        "",
    ]
    twice = sum(x["twice"] for v in res.values() for x in v)
    lost = sum(x["lost"] for v in res.values() for x in v)
    sec.checks.append(Check("claims on etcd exactly once", f"{twice} twice, {lost} lost",
                            "0 twice, 0 lost", twice == 0 and lost == 0))
    return sec


SCENARIOS = [measure_etcd]
