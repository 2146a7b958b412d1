"""pas on etcd (issue 19) beside the file store, in the same run: claims/s of 20 claimer
processes on one queue, the cost of one `pas agent beat`, and revival latency (SIGKILL ->
exec of the replacement, from the kernel's process events, as in the revival section).

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
from typing import Optional

import procevents as pe
from fixtures import Generator, agent_id
from peers import (WORKER_SH, comm, load_text, log, reap_all, run_claimers, subreaper,
                   time_revival, wait_until, write_svc)
from proc import ENV, BenchError
from scenarios import Check, Ctx, Section, fmt_time, index_queue, table

WORKERS = 20
#: The password of the etcd user `pas` the revival part authenticates as: pas running as
#: root starts agents from etcd only as a user the root's pas.toml lists (docs/etcd.md).
PASSWORD = "bench-pw"
#: Revival policies with every delay at its minimum; `heartbeat_ttl` 2 s is the shortest
#: alive lease on etcd.
MINIMISED = ["restart_delay_seconds=0", "storm_limit=0", "max_restarts=0", "watchdog=false",
             "heartbeat_ttl=2", "checkpoint_required=false"]


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

    def etcdctl(self, *args: str) -> None:
        p = subprocess.run(["etcdctl", f"--endpoints={','.join(self.members)}", *args],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"etcdctl {' '.join(args)}: {p.stderr.strip()}")

    def authenticate(self, prefix: str) -> None:
        """Authentication on: users root and pas (read and write under `prefix/`)."""
        for args in (["user", "add", f"root:{PASSWORD}"], ["user", "grant-role", "root", "root"],
                     ["role", "add", "writer"],
                     ["role", "grant-permission", "writer", "--prefix=true", "readwrite",
                      f"{prefix}/"],
                     ["user", "add", f"pas:{PASSWORD}"], ["user", "grant-role", "pas", "writer"],
                     ["auth", "enable"]):
            self.etcdctl(*args)

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


class Side:
    """One store's root for the revival part: a cell with minimised policies, one with the
    defaults, one agent each running `svc`, and `pas watch` over them."""

    def __init__(self, ctx: Ctx, name: str, base: Path, svc: Path, url: Optional[str]):
        self.name = name
        root = base / name
        root.mkdir()
        self.env = dict(ENV, PAS_ETCD_PASSWORD=PASSWORD)
        self.argv = [ctx.pas, "--root", str(root)]
        if url:
            (root / "pas.toml").write_text('etcd_root_writers = ["pas"]\n')
            self.argv += ["--store", url]
        self.cells = {}
        for kind in ("minimised", "defaults"):
            cell = self.pas("cell", "create", "--name", kind, "--timeout", "0").strip()
            self.cells[kind] = cell
            if kind == "minimised":
                self.pas("policy", "set", cell, *MINIMISED)
            self.pas("agent", "add", cell, "a1", "--", str(svc))
            self.pas("checkpoint", "save", cell, "a1", "--state", "-", stdin="{}")
            self.pas("agent", "start", "--agents-as-root", cell, "a1")
        self.watch = subprocess.Popen([*self.argv, "watch", "--interval", "3600",
                                       "--agents-as-root"], env=self.env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)

    def pas(self, *args: str, stdin: Optional[str] = None) -> str:
        p = subprocess.run([*self.argv, *args], env=self.env, capture_output=True, text=True,
                           input=stdin)
        if p.returncode != 0:
            raise BenchError(f"{self.name}: `pas {' '.join(args)}` exited {p.returncode}: "
                             f"{(p.stderr or p.stdout).strip()}")
        return p.stdout

    def doc(self, kind: str) -> dict:
        return json.loads(self.pas("--json", "agent", "show", self.cells[kind], "a1"))

    def running(self, kind: str, not_pid: int = 0) -> tuple[int, int]:
        """(pid, supervisor pid) once the agent runs `sleep` under a pid other than
        `not_pid`, as its document records."""
        got = (0, 0)

        def ready() -> bool:
            nonlocal got
            d = self.doc(kind)
            got = (int(d.get("pid") or 0), int(d.get("supervisor_pid") or 0))
            return got[0] not in (0, not_pid) and comm(got[0]) == "sleep"
        wait_until(ready, 30, f"{self.name} {kind}: the agent to run")
        return got

    def stop(self) -> None:
        for kind in self.cells:
            subprocess.run([*self.argv, "agent", "stop", self.cells[kind], "a1", "--grace",
                            "1"], env=self.env, capture_output=True)
        self.watch.send_signal(signal.SIGTERM)
        try:
            self.watch.wait(10)
        except subprocess.TimeoutExpired:
            self.watch.kill()
            self.watch.wait()


def measure_revival(ctx: Ctx, cluster: Cluster, base: Path, rounds: int
                    ) -> tuple[dict[str, list[float]], str]:
    """SIGKILL -> exec of the replacement on both stores, alternating: the agent alone (its
    supervisor restarts it, minimised and default policies), and on etcd the agent with its
    supervisor (`pas watch` revives it when the alive key's 2 s lease expires)."""
    lst, why = pe.open_listener()
    if lst is None:
        return {}, f"not measured: {why} (run the benchmark as root)"
    prefix = "bench-revival"
    cluster.authenticate(prefix)
    svc = write_svc(base)
    sides: list[Side] = []
    times: dict[str, list[float]] = {}
    subreaper(True)
    try:
        sides.append(Side(ctx, "file", base, svc, None))
        sides.append(Side(ctx, "etcd", base, svc,
                          f"etcd://{','.join(cluster.members)}/{prefix}?user=pas"))
        last: dict[tuple[str, str], float] = {}
        for r in range(rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            for side in order:
                for kind in ("minimised", "defaults"):
                    pid, sup = side.running(kind)
                    # A second after its start, as in the revival section.
                    wait = 1.2 - (time.monotonic() - last.get((side.name, kind), 0))
                    if wait > 0:
                        time.sleep(wait)
                    s = time_revival(lst, pid, sup, 1, {}, 60)
                    times.setdefault(f"{side.name} {kind}", []).append(s.total)
                    side.running(kind, pid)
                    last[(side.name, kind)] = time.monotonic()
            etcd = sides[1]
            pid, sup = etcd.running("minimised")
            os.kill(sup, signal.SIGKILL)
            s = time_revival(lst, pid, etcd.watch.pid, 2, {}, 60)
            times.setdefault("etcd minimised, supervisor killed too", []).append(s.total)
            etcd.running("minimised", pid)
            last[("etcd", "minimised")] = time.monotonic()
            reap_all()
        log("etcd revival: " + ", ".join(f"{k} {fmt_time(statistics.median(v))}"
                                         for k, v in times.items()))
    finally:
        for side in sides:
            side.stop()
        subreaper(False)
        reap_all()
        lst.close()
    return times, ""


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
    revival: dict[str, list[float]] = {}
    why_not = ""
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
                shutil.rmtree(d, ignore_errors=True)
        load_mid = load_text()
        revival, why_not = measure_revival(ctx, cluster, base, 3 if ctx.quick else 7)
    finally:
        cluster.stop()
    load1 = load_text()
    med = {n: statistics.median(x["rate"] for x in v) for n, v in res.items()}
    bmed = {n: statistics.median(v) for n, v in beat.items()}
    ctx.data["etcd"] = {"claims": res, "beat_s": beat, "revival_s": revival}
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
    ]
    if why_not:
        sec.body += [f"Revival latency on etcd: {why_not}.", ""]
    else:
        sec.body += [
            "Revival: SIGKILL of the agent's process → `exec` of its replacement, from the "
            "kernel's process events (as in the revival section below), on both stores at "
            "once, each with a cell of minimised policies (`" + " ".join(MINIMISED) + "`) "
            "and one with the defaults, one agent each (`exec sleep 100000`), started by "
            "`pas agent start` as root (on etcd as the authenticated etcd user `pas` that "
            "the root's pas.toml lists in `etcd_root_writers`) and looked after by `pas "
            "watch --interval 3600`; rounds alternate the stores. The agent alone is "
            "restarted by its supervisor in place; with its supervisor SIGKILLed first, "
            "only the watch can revive it: on etcd it is woken by its change feed when the "
            "alive key's lease (`heartbeat_ttl` 2 s) expires. (On the file store nothing "
            "tells the watch of that death: it finds it at the agent's next deadline or "
            "reconcile, so no figure is given.) Load average before the revival part: "
            f"{load_mid}.",
            "",
        ]
        rows = [[k, fmt_time(statistics.median(v)), fmt_time(min(v)), fmt_time(max(v)),
                 str(len(v))] for k, v in revival.items()]
        sec.body += table(["store, policies", "median", "min", "max", "n"], rows)
        sec.body += [""]
    twice = sum(x["twice"] for v in res.values() for x in v)
    lost = sum(x["lost"] for v in res.values() for x in v)
    sec.checks.append(Check("claims on etcd exactly once", f"{twice} twice, {lost} lost",
                            "0 twice, 0 lost", twice == 0 and lost == 0))
    return sec


SCENARIOS = [measure_etcd]
