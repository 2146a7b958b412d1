"""pas against real peers, measured in the same run (issue 17, item 5).

- revival: SIGKILL of a supervised process -> its replacement exec'd, for `pas watch` +
  `pas __supervise`, s6 (s6-svscan / s6-supervise) and runit (runsvdir / runsv), rounds
  alternating between them; timed by the kernel's process events (procevents.py).
- supervision footprint: private memory, RSS, descriptors and files per supervised
  process at N = 10, 100, 1,000, and the system calls one revival costs (strace).
- claims: 20 claimers on `pas task claim` vs a shell queue of files (`flock` + `mv` +
  `sync`), at 1,000 to 100,000 pending tasks, every claim checked to be exactly once.

The peers are the Debian packages `s6` and `runit`. When one is missing the suite tries
`apt-get install -y s6 runit` once (as root); when that fails the comparison is skipped and
the report says why. No peer figure is ever assumed: every number is measured here.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import procevents as pe
from fixtures import Generator, agent_id
from proc import ENV, BenchError
from scenarios import Check, Ctx, Section, fmt_n, fmt_time, index_queue, table

# ---------------------------------------------------------------------------- plumbing

PEERS = {
    "s6": ("s6", ["s6-svscan", "s6-supervise"]),
    "runit": ("runit", ["runsvdir", "runsv"]),
}

SVC = "#!/bin/sh\n# the supervised program of the benchmark: idle until killed\nexec sleep 100000\n"


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


_installed: dict[str, Optional[str]] = {}


def peer_available(name: str) -> Optional[str]:
    """None when the peer's programs are on PATH (installing its Debian package once when
    they are not and we are root); else why it is not available."""
    if name in _installed:
        return _installed[name]
    pkg, progs = PEERS[name]
    why = None
    if not all(shutil.which(p) for p in progs):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log(f"{pkg} is not installed: apt-get install -y {pkg}")
            p = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", pkg],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if p.returncode != 0:
                tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["(no output)"]
                why = f"`apt-get install {pkg}` failed: {tail[0]}"
        else:
            why = f"`{pkg}` is not installed and this run cannot install it (not root)"
        if why is None and not all(shutil.which(p) for p in progs):
            why = f"`{pkg}` installed but {', '.join(progs)} not on PATH"
    _installed[name] = why
    return why


def peer_version(name: str) -> str:
    pkg = PEERS[name][0]
    p = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True,
                       text=True)
    return f"{pkg} {p.stdout.strip()}" if p.returncode == 0 and p.stdout.strip() else pkg


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36


def subreaper(on: bool) -> None:
    """Orphans of the supervision trees (a supervisor whose `pas agent start` exited, a
    runsv whose runsvdir was killed) become this process's children, to be reaped here."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)


def reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def ppid_of(pid: int) -> Optional[int]:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            pp = ppid_of(int(e.name))
            if pp is not None:
                kids.setdefault(pp, []).append(int(e.name))
    return kids


def descendants(pid: int, kids: Optional[dict[int, list[int]]] = None) -> list[int]:
    kids = children_map() if kids is None else kids
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def kill_tree(root: int) -> None:
    """SIGKILL to root and everything under it, then reap what is ours."""
    pids = [root] + descendants(root)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and
                                              comm(p) and ppid_of(p) != os.getpid()
                                              for p in pids):
        reap_all()
        time.sleep(0.02)
    reap_all()


def smaps(pid: int) -> dict[str, int]:
    """kB figures of /proc/PID/smaps_rollup."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            k, _, rest = line.partition(":")
            v = rest.split()
            if v and v[0].isdigit():
                out[k.strip()] = int(v[0])
    except OSError:
        pass
    return out


def private_kb(s: dict[str, int]) -> int:
    return s.get("Private_Clean", 0) + s.get("Private_Dirty", 0)


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def files_under(path: Path) -> int:
    n = 0
    for _, dirs, files in os.walk(path):
        n += len(dirs) + len(files)
    return n


def spawn_quiet(argv: list[str], env: Optional[dict] = None, cwd: Optional[str] = None
                ) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env or ENV, cwd=cwd)


def wait_until(cond: Callable[[], bool], limit: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {limit:.0f} s waiting for {what}")
        reap_all()
        time.sleep(step)


def load_text() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg()


# ---------------------------------------------------------------------------- the trees


@dataclass
class Tree:
    """One supervision tree under test: `services` are supervised by it."""

    name: str
    top: int = 0  # the scanner (pas watch, s6-svscan, runsvdir)
    proc: Optional[subprocess.Popen] = None
    base: Optional[Path] = None
    services: list[str] = field(default_factory=list)

    def supervisor_of(self, svc: str) -> int:
        raise NotImplementedError

    def service_pid(self, svc: str) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        if self.top:
            kill_tree(self.top)
        self.extra_stop()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, ChildProcessError):
                pass
        reap_all()

    def extra_stop(self) -> None:
        pass


class ScanTree(Tree):
    """s6-svscan or runsvdir over a scan directory of services whose ./run is `svc`."""

    def __init__(self, name: str, base: Path, svc: Path, n: int):
        super().__init__(name, base=base)
        scan = base / "scan"
        scan.mkdir(parents=True)
        for i in range(n):
            d = scan / f"svc{i:04d}"
            d.mkdir()
            os.symlink(svc, d / "run")
            self.services.append(d.name)
        self.scan = scan
        if name == "s6":
            # s6-svscan supervises at most 500 services unless told otherwise (-c).
            argv = [shutil.which("s6-svscan"), "-c", str(max(1000, 2 * n)), str(scan)]
        else:
            argv = [shutil.which("runsvdir"), "-P", str(scan)]
        self.proc = spawn_quiet(argv)
        self.top = self.proc.pid
        self._sup: dict[str, int] = {}

    def _scan(self) -> None:
        kids = children_map()
        for s in kids.get(self.top, []):
            try:
                cwd = os.readlink(f"/proc/{s}/cwd")
            except OSError:
                continue
            self._sup[Path(cwd).name] = s

    def ready(self) -> bool:
        kids = children_map()
        sups = kids.get(self.top, [])
        if len(sups) < len(self.services):
            return False
        self._scan()
        return all(any(comm(c) == "sleep" for c in kids.get(s, [])) for s in sups)

    def supervisor_of(self, svc: str) -> int:
        if svc not in self._sup:
            self._scan()
        return self._sup[svc]

    def supervisors(self) -> list[int]:
        self._scan()
        return [self._sup[s] for s in self.services]

    def service_pid(self, svc: str) -> int:
        sup = self.supervisor_of(svc)
        kids = [c for c in children_map().get(sup, []) if comm(c) == "sleep"]
        return kids[0] if kids else 0


class PasTree(Tree):
    """A missions root with one cell of agents running `svc`, each started with
    `pas agent start` and then looked after by `pas watch`."""

    def __init__(self, ctx: Ctx, base: Path, svc: Path, n: int, policies: dict,
                 watch: bool = True, cell_name: str = "bench-peers",
                 checkpoints: bool = True):
        super().__init__("pas", base=base)
        self.ctx = ctx
        self.root = base / "root"
        self.root.mkdir(parents=True)
        self.svc = svc
        self.cell = self.pas("cell", "create", "--name", cell_name, "--max-agents",
                             str(max(n, 10)), "--timeout", "0").strip()
        self.set_policies(self.cell, policies)
        for i in range(n):
            self.add_agent(self.cell, f"a{i:04d}", checkpoint=checkpoints)
        if watch:
            self.start_watch()

    def pas(self, *args: str, stdin: Optional[str] = None) -> str:
        p = subprocess.run([self.ctx.pas, "--root", str(self.root), *args], env=ENV,
                           capture_output=True, text=True, input=stdin)
        if p.returncode != 0:
            raise BenchError(f"`pas {' '.join(args)}` exited {p.returncode}: "
                             f"{(p.stderr or p.stdout).strip()}")
        return p.stdout

    def set_policies(self, cell: str, policies: dict) -> None:
        path = self.root / cell / "config" / "policies.json"
        doc = json.loads(path.read_text())
        doc.update(policies)
        tmp = path.with_name(".policies.json.bench")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, path)

    def add_agent(self, cell: str, agent: str, start: bool = True,
                  checkpoint: bool = True) -> None:
        self.pas("agent", "add", cell, agent, "--", str(self.svc))
        if checkpoint:
            # A checkpoint, so that the default `checkpoint_required` lets it be revived.
            self.pas("checkpoint", "save", cell, agent, "--state", "-", stdin="{}")
        self.services.append(agent)
        if start:
            self.pas("agent", "start", "--agents-as-root", cell, agent)

    def start_watch(self) -> None:
        self.proc = spawn_quiet([self.ctx.pas, "--root", str(self.root), "watch",
                                 "--interval", "3600", "--agents-as-root"])
        self.top = self.proc.pid

    def agent_doc(self, agent: str, cell: Optional[str] = None) -> dict:
        path = self.root / (cell or self.cell) / "agents" / f"{agent}.json"
        return json.loads(path.read_text())

    def supervisor_of(self, svc: str, cell: Optional[str] = None) -> int:
        return int(self.agent_doc(svc, cell).get("supervisor_pid") or 0)

    def service_pid(self, svc: str, cell: Optional[str] = None) -> int:
        return int(self.agent_doc(svc, cell).get("pid") or 0)

    def supervisors(self) -> list[int]:
        return [self.supervisor_of(a) for a in self.services]

    def ready(self) -> bool:
        # `pas agent start` returned once the pid was recorded: only the exec may lag.
        for a in self.services:
            pid = self.service_pid(a)
            if not pid or comm(pid) != "sleep":
                return False
        return True

    def extra_stop(self) -> None:
        # The first supervisors were started by `pas agent start` (not under the watch).
        for cell in {self.cell} | set(getattr(self, "cells", [])):
            agents = self.root / cell / "agents"
            for f in agents.glob("*.json"):
                try:
                    d = json.loads(f.read_text())
                except (OSError, ValueError):
                    continue
                for key in ("supervisor_pid", "pid"):
                    pid = d.get(key)
                    ours = ("pas", "pas-supervise", "sleep", "sh")
                    if isinstance(pid, int) and pid > 0 and comm(pid) in ours:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
        time.sleep(0.05)
        reap_all()


def write_svc(base: Path) -> Path:
    svc = base / "svc"
    svc.write_text(SVC)
    svc.chmod(0o755)
    return svc


# ---------------------------------------------------------------------------- revival


@dataclass
class Sample:
    total: float  # s, kill -> exec of the replacement
    phases: dict[str, float] = field(default_factory=dict)  # s, from the kill


def time_revival(lst: pe.Listener, victim: int, root: int, depth: int,
                 watch_for: dict[int, str], limit_s: float,
                 parent: Optional[int] = None) -> Sample:
    """SIGKILL `victim`; the replacement is the first process `depth` levels under `root`
    that execs, or (when `parent` is given) the first child of `parent` that execs: pas's
    supervisor restarts its agent itself, the watch only when the supervisor is gone.
    `watch_for` names pids whose exit is a phase (e.g. the old supervisor)."""
    lst.drain()
    tree = pe.Tree({root} | ({parent} if parent else set()))
    phases: dict[str, float] = {}
    t0 = time.monotonic_ns()
    os.kill(victim, signal.SIGKILL)
    deadline = t0 + int(limit_s * 1e9)
    forked: set[int] = set()
    while True:
        ev = lst.next(deadline)
        if ev is None:
            raise BenchError(f"no replacement exec'd within {limit_s:.0f} s of the kill "
                             f"(victim {victim}, under {root})")
        tree.add(ev)
        rel = (ev.ts - t0) / 1e9
        if ev.what == pe.EXIT and ev.pid == victim:
            phases.setdefault("dead", rel)
        elif ev.what == pe.EXIT and ev.pid in watch_for:
            phases.setdefault(watch_for[ev.pid], rel)
        elif ev.what == pe.FORK:
            d = tree.depth_under(ev.pid, root)
            if d is not None and ev.pid not in forked:
                forked.add(ev.pid)
                phases.setdefault(f"fork{d}", rel)
        elif ev.what == pe.EXEC:
            d = tree.depth_under(ev.pid, root)
            if d == depth or (parent and tree.depth_under(ev.pid, parent) == 1):
                return Sample(rel, phases)
            if d is not None:
                phases.setdefault(f"exec{d}", rel)


def summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def measure_revival(ctx: Ctx) -> Section:
    sec = Section("revival", "Revival: SIGKILL → replacement running, vs s6 and runit")
    lst, why = pe.open_listener()
    if lst is None:
        sec.body += [f"**Not measured**: {why}. The revival times come from the kernel's "
                     "process events (fork, exec, exit with the kernel's timestamps); "
                     "run the suite as root.", ""]
        sec.checks.append(Check("revival latency vs s6", "not measured", "≤ s6", None, why))
        return sec
    rounds = 6 if ctx.quick else 15
    default_samples = 1 if ctx.quick else 3
    base = ctx.tmp / "revival"
    base.mkdir()
    svc = write_svc(base)
    load0 = load_text()
    trees: dict[str, Tree] = {}
    skipped: dict[str, str] = {}
    subreaper(True)
    samples: dict[str, list[Sample]] = {}
    defaults: list[Sample] = []
    strace_rows: list[list[str]] = []
    try:
        minimised = {"restart_delay_seconds": 0, "storm_limit": 0, "max_restarts": 0,
                     "watchdog": False}
        pas_tree = PasTree(ctx, base / "pas", svc, 1, minimised)
        trees["pas"] = pas_tree
        # A second cell under the same watch, with every policy at its default.
        pas_tree.cells = [pas_tree.pas("cell", "create", "--name", "bench-defaults",
                                       "--timeout", "0").strip()]
        for peer in ("s6", "runit"):
            w = peer_available(peer)
            if w:
                skipped[peer] = w
                continue
            trees[peer] = ScanTree(peer, base / peer, svc, 1)
        for t in trees.values():
            wait_until(t.ready, 30, f"{t.name} to start its service")
        time.sleep(1.2)
        last_start = {name: time.monotonic() for name in trees}

        def one(name: str) -> Sample:
            t = trees[name]
            svc_name = t.services[0]
            # s6 and runit refuse to respawn a service more often than once a second:
            # every kill comes at least 1.2 s after the service's last start.
            wait = 1.2 - (time.monotonic() - last_start[name])
            if wait > 0:
                time.sleep(wait)
            victim = t.service_pid(svc_name)
            sup = t.supervisor_of(svc_name)
            if not victim:
                raise BenchError(f"{name}: no running service to kill")
            if name == "pas":
                s = time_revival(lst, victim, t.top, 2, {sup: "old supervisor exited"}, 30,
                                 parent=sup)
                wait_until(lambda: t.service_pid(svc_name) not in (0, victim)
                           and comm(t.service_pid(svc_name)) == "sleep", 10,
                           "pas to record the new pid")
            else:
                s = time_revival(lst, victim, sup, 1, {}, 30)
                wait_until(lambda: t.service_pid(svc_name) not in (0, victim), 10,
                           f"{name} to run the new service")
            last_start[name] = time.monotonic()
            return s

        names = list(trees)
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                samples.setdefault(name, []).append(one(name))
            reap_all()
        log(f"revival rounds: " + ", ".join(
            f"{n} {fmt_time(statistics.median(x.total for x in v))}"
            for n, v in samples.items()))

        # pas with its default policies: the first restart of a fresh agent.
        dcell = pas_tree.cells[0]
        for i in range(default_samples):
            agent = f"d{i}"
            pas_tree.pas("agent", "add", dcell, agent, "--", str(svc))
            pas_tree.pas("checkpoint", "save", dcell, agent, "--state", "-", stdin="{}")
            pas_tree.pas("agent", "start", "--agents-as-root", dcell, agent)
            wait_until(lambda: comm(pas_tree.service_pid(agent, dcell)) == "sleep", 10,
                       "the defaults agent to start")
            time.sleep(1.2)
            victim = pas_tree.service_pid(agent, dcell)
            sup = pas_tree.supervisor_of(agent, dcell)
            defaults.append(time_revival(lst, victim, pas_tree.top, 2,
                                         {sup: "old supervisor exited"}, 60, parent=sup))
        log(f"pas defaults: " + ", ".join(fmt_time(s.total) for s in defaults))

        # System calls of one revival, each tree under strace (slow: counts only).
        if shutil.which("strace"):
            for name in names:
                strace_rows.append(strace_revival(ctx, trees[name], base, lst))
    finally:
        for t in trees.values():
            t.stop()
        subreaper(False)
        reap_all()
        lst.close()
    load1 = load_text()

    data = {n: [{"total": s.total, **s.phases} for s in v] for n, v in samples.items()}
    data["pas_defaults"] = [{"total": s.total, **s.phases} for s in defaults]
    ctx.data["revival"] = data
    med = {n: statistics.median(s.total for s in v) for n, v in samples.items()}
    versions = ", ".join(peer_version(p) for p in trees if p != "pas")

    sec.body += [
        "One service per tool, all three running side by side: a cell with one agent under "
        "`pas watch` (its supervisor `pas-supervise`), an s6 scan directory under "
        "`s6-svscan` (`s6-supervise`), and a runit one under `runsvdir -P` (`runsv`). "
        "Every service runs the same file, `#!/bin/sh` + `exec sleep 100000`. "
        f"Each round SIGKILLs each tool's service once, in rotating order ({rounds} "
        "rounds); the time is from the `kill` to the `exec` of its replacement, both "
        "from the kernel: the harness subscribes to the netlink process connector, "
        "whose fork, exec and exit events carry the kernel's CLOCK_MONOTONIC timestamp. "
        "Nothing polls, and no tool is asked. "
        f"Peers: {versions or 'none'}. Load average at start / end of this section: "
        f"{load0} / {load1}.",
        "",
        "*Delays minimised*: pas with `restart_delay_seconds` 0, `storm_limit` 0, "
        "`max_restarts` 0 and `watchdog` false (the test program never beats); s6 and "
        "runit have no delay setting, but both refuse to start a service twice within "
        "a second, so every kill comes at least 1.2 s after that service's last start.",
        "",
    ]
    dmed = statistics.median(s.total for s in defaults) if defaults else None
    comp = []
    for p in ("s6", "runit"):
        if p in med:
            ok = med["pas"] <= med[p]
            comp.append([f"delays minimised, vs {p}", fmt_time(med["pas"]), fmt_time(med[p]),
                         f"{med['pas'] / med[p]:.2f}",
                         "≤ 1 (as fast as s6)" if p == "s6" else "info",
                         ("yes" if ok else f"**no**: {med['pas'] / med[p]:.2f}x")
                         if p == "s6" else "-"])
        else:
            comp.append([f"delays minimised, vs {p}", fmt_time(med["pas"]),
                         f"**skipped**: {skipped.get(p, '')}", "-", "-", "-"])
    if dmed is not None:
        for p in ("s6", "runit"):
            if p in med:
                comp.append([f"defaults, first restart, vs {p}", fmt_time(dmed),
                             fmt_time(med[p]), f"{dmed / med[p]:.2f}", "pas ≤ 1 s",
                             "yes" if dmed <= 1 else f"**no**: {dmed:.2f} s"])
    sec.body += ["The comparison (medians; ratio = pas / peer, lower is better for pas):",
                 "", *table(["revival", "pas", "peer", "ratio", "target", "met?"], comp), "",
                 "Each tool's own figures:", ""]
    rows = []
    for n, v in samples.items():
        st = summary([s.total for s in v])
        ratio = "1.00" if n == "pas" else f"{med['pas'] / st['median']:.2f}"
        rows.append([n, fmt_time(st["median"]), fmt_time(st["min"]), fmt_time(st["max"]),
                     str(st["n"]), ratio])
    for p, w in skipped.items():
        rows.append([p, f"**skipped**: {w}", "-", "-", "0", "-"])
    sec.body += table(["tool", "median", "min", "max", "n", "pas / tool (median)"], rows)
    sec.body.append("")

    # Where the time goes, from the same events.
    sec.body += ["Where the time goes (medians, ms from the kill; from the same process "
                 "events):", ""]
    prow = []
    for n, v in samples.items():
        keys = sorted({k for s in v for k in s.phases}, key=lambda k: statistics.median(
            s.phases[k] for s in v if k in s.phases))
        parts = [f"{k} {statistics.median(s.phases[k] for s in v if k in s.phases) * 1e3:.1f}"
                 for k in keys]
        prow.append([n, ", ".join(parts) + f", replacement exec'd "
                     f"{statistics.median(s.total for s in v) * 1e3:.1f}"])
    sec.body += table(["tool", "events after the kill (ms)"], prow)
    sec.body += [
        "",
        "*dead*: the killed process's exit; *forkN* / *execN*: the first fork / exec N "
        "levels under the tool's top process (for pas the watch: 1 is a new "
        "`pas-supervise`, 2 the agent, the path of a pas whose supervisors do not "
        "restart in place or of an orphan; a pas supervisor that restarts its agent in "
        "place forks it as its own child, which is the replacement; for s6 and runit the "
        "service's own supervisor: 1 is `./finish` (s6 forks it even when there is none) "
        "and then the new `./run`).",
        "",
    ]
    checks = []
    if "s6" in med:
        r = med["pas"] / med["s6"]
        met = med["pas"] <= med["s6"]
        checks.append(Check("revival latency, delays minimised: pas vs s6-supervise",
                            f"{r:.2f}x ({fmt_time(med['pas'])} vs {fmt_time(med['s6'])})",
                            "≤ 1x s6", met,
                            "s6 2.11 waits 1 s after every death, see below"
                            if med["s6"] > 0.9 else ""))
    else:
        checks.append(Check("revival latency, delays minimised: pas vs s6-supervise",
                            "s6 not measured", "≤ 1x s6", None, skipped.get("s6", "")))
    if "runit" in med:
        r = med["pas"] / med["runit"]
        checks.append(Check("revival latency, delays minimised: pas vs runsv",
                            f"{r:.2f}x ({fmt_time(med['pas'])} vs {fmt_time(med['runit'])})",
                            "info (issue: as fast as s6)", None, "runit has no 1 s wait"))
    if dmed is not None:
        checks.append(Check("revival with default policies: first restart",
                             f"{fmt_time(dmed)} (n = {len(defaults)})", "≤ 1 s", dmed <= 1.0))
    sec.checks += checks
    drows = [["pas (`restart_delay_seconds` 5, the default)",
              fmt_time(dmed) if dmed is not None else "-", str(len(defaults)), "≤ 1 s",
              "yes" if dmed is not None and dmed <= 1 else "**no**"]]
    for p in ("s6", "runit"):
        if p in med:
            drows.append([f"{p} (no delay setting: the figure above)", fmt_time(med[p]),
                          str(len(samples[p])), "-", "-"])
    sec.body += ["With each tool's defaults (the first restart of a fresh agent that ran "
                 "1.2 s; every pas policy at its default, a checkpoint saved so that "
                 "`checkpoint_required` allows the revival):", "",
                 *table(["tool", "median", "n", "target", "met?"], drows), ""]
    if "s6" in med and med["s6"] > 0.9:
        sec.body += [
            "**s6 cannot be made faster than about 1 s here.** The s6 on this machine "
            f"({peer_version('s6')}) sleeps one second after every death of `./run` "
            "before it spawns it again (`strace -p` of `s6-supervise` shows a 1 s "
            "`ppoll` right after the `./finish` attempt), and it has no file to change "
            "that; the current s6 sources (`s6-supervise.c`, `dontrespawnbefore`) wait "
            "only when the service ran for less than a second. The s6 target is "
            "therefore compared with this installed s6 as measured, and runit (no such "
            "wait once a service ran a second) is the stricter yardstick.", ""]
    if strace_rows:
        sec.body += [
            "System calls of one revival (one kill under `strace -f` attached to the "
            "tool's processes: for pas the watch and the old supervisor, with what they "
            "start; for s6 and runit the service's supervisor). Counted up to the "
            "replacement's `execve`; the counts matter, not the (slowed) times.", "",
            *table(["tool", "system calls", "processes", "most frequent"], strace_rows),
            ""]
    return sec


def strace_revival(ctx: Ctx, t: Tree, base: Path, lst: pe.Listener) -> list[str]:
    svc = t.services[0]
    victim = t.service_pid(svc)
    sup = t.supervisor_of(svc)
    attach = [t.top, sup] if t.name == "pas" else [sup]
    out = base / f"strace-{t.name}.txt"
    st = subprocess.Popen(["strace", "-f", "-qq", "-o", str(out)] +
                          [x for p in attach for x in ("-p", str(p))],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.3)  # attached, and past s6's and runit's once-a-second rule
        if t.name == "pas":
            time_revival(lst, victim, t.top, 2, {}, 60, parent=sup)
        else:
            time_revival(lst, victim, sup, 1, {}, 60)
        time.sleep(0.3)
    finally:
        st.send_signal(signal.SIGINT)
        try:
            st.wait(timeout=10)
        except subprocess.TimeoutExpired:
            st.kill()
            st.wait()
    calls: dict[str, int] = {}
    pids: set[str] = set()
    exec_done: set[str] = set()
    total = 0
    pat = re.compile(r"^(\d+)\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]")
    for line in out.read_text(errors="replace").splitlines():
        m = pat.match(line)
        if not m or "resumed>" in line:
            continue
        pid, name = m.group(1), m.group(2)
        if pid in exec_done:
            continue  # the replacement's own work after its exec
        if name == "execve" and ("/svc" in line or "./run" in line) and "= 0" in line:
            exec_done.add(pid)
        elif name == "execve" and ("/svc" in line or "./run" in line) and "resumed" not in line:
            exec_done.add(pid)
        calls[name] = calls.get(name, 0) + 1
        pids.add(pid)
        total += 1
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
    return [t.name, fmt_n(total), str(len(pids)), ", ".join(f"{k} {v}" for k, v in top)]


# ---------------------------------------------------------------------------- footprint


def after_restart(t: Tree, n: int) -> float:
    """Private kB per supervisor once every service was SIGKILLed and restarted in
    place: what a supervisor holds after the deeper work of a restart."""
    old = {s: t.service_pid(s) for s in t.services}
    for pid in old.values():
        if pid:
            os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        for svc, was in old.items():
            now = t.service_pid(svc)
            if not now or now == was or comm(now) != "sleep":
                return False
        return True

    wait_until(restarted, 60, f"{n} {t.name} services restarted", 0.1)
    time.sleep(0.5)
    return sum(private_kb(smaps(p)) for p in t.supervisors()) / n


def measure_footprint(ctx: Ctx) -> Section:
    sec = Section("footprint", "Supervision footprint per agent, vs s6 and runit")
    sizes = [10, 100] if ctx.quick else [10, 100, 1000]
    base = ctx.tmp / "footprint"
    base.mkdir()
    svc = write_svc(base)
    load0 = load_text()
    skipped = {p: w for p in ("s6", "runit") if (w := peer_available(p))}
    names = ["pas"] + [p for p in ("s6", "runit") if p not in skipped]
    res: dict[int, dict[str, dict]] = {}
    subreaper(True)
    try:
        for i, n in enumerate(sizes):
            res[n] = {}
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                d = base / f"{name}-{n}"
                t0 = time.monotonic()
                if name == "pas":
                    t: Tree = PasTree(ctx, d, svc, n, {"watchdog": False, "checkpoint_required": False},
                                      checkpoints=False)
                else:
                    t = ScanTree(name, d, svc, n)
                try:
                    wait_until(t.ready, 120 + n / 5, f"{n} {name} services to run", 0.1)
                    started = time.monotonic() - t0
                    time.sleep(0.5)
                    sups = t.supervisors()
                    if len(set(sups)) != n or not all(sups):
                        raise BenchError(f"{name}: {len(set(sups))} supervisors for {n} "
                                         "services")
                    sm = [smaps(p) for p in sups]
                    top = smaps(t.top)
                    where = d / ("root" if name == "pas" else "scan")
                    res[n][name] = {
                        "private_kb": sum(private_kb(s) for s in sm) / n,
                        "rss_kb": sum(s.get("Rss", 0) for s in sm) / n,
                        "pss_kb": sum(s.get("Pss", 0) for s in sm) / n,
                        "fds": sum(fds(p) for p in sups) / n,
                        "top_private_kb": private_kb(top),
                        "top_rss_kb": top.get("Rss", 0),
                        "files": files_under(where) / n,
                        "start_s": started,
                    }
                    if i == 0:
                        res[n][name]["after_restart_kb"] = after_restart(t, n)
                finally:
                    t.stop()
                    shutil.rmtree(d, ignore_errors=True)
            log(f"footprint at {n}: " + ", ".join(
                f"{k} {v['private_kb']:.0f} kB private" for k, v in res[n].items()))
    finally:
        subreaper(False)
        reap_all()
    ctx.data["footprint"] = res
    load1 = load_text()
    ver = ", ".join(peer_version(p) for p in names if p != "pas")
    sec.body += [
        "N services per tool (the same `sleep` script), started and left to settle; then "
        "for every supervisor process (`pas-supervise`, `s6-supervise`, `runsv`) "
        "`/proc/PID/smaps_rollup` is read: *private* is Private_Clean + Private_Dirty "
        "(memory no other process shares: what each further agent really costs), *RSS* "
        "counts the shared library and binary pages too, *PSS* shares them out. The "
        "supervised `sleep`s are not counted. *Scanner* is the one process above the "
        "supervisors (`pas watch`, `s6-svscan`, `runsvdir`). *Files* are the files and "
        "directories under the root / scan directory divided by N (for pas the cell's "
        "files, agent files, logs and checkpoints; for s6 and runit the service "
        "directories with their `supervise/` state). *Start* is from the first command "
        f"until all N run (pas: `pas agent start` per agent). At N = {fmt_n(sizes[0])} "
        "every service is then SIGKILLed, and the supervisors are measured again once "
        "each has restarted its service in place (*after a restart* below): a restart "
        "is the supervisor's deepest work. "
        f"Peers: {ver or 'none'}. "
        f"Load average at start / end: {load0} / {load1}.", ""]
    rows = []
    for n in sizes:
        for name in names:
            r = res[n][name]
            rows.append([fmt_n(n), name, f"{r['private_kb']:.0f} kB", f"{r['pss_kb']:.0f} kB",
                         f"{r['rss_kb'] / 1024:.2f} MB", f"{r['fds']:.1f}",
                         f"{r['files']:.1f}",
                         f"{r['top_private_kb']:.0f} kB / {r['top_rss_kb'] / 1024:.1f} MB",
                         f"{r['start_s']:.1f} s"])
    for p, w in skipped.items():
        rows.append(["-", p, f"**skipped**: {w}", "-", "-", "-", "-", "-", "-"])
    sec.body += table(["N", "tool", "private / agent", "PSS / agent", "RSS / agent",
                       "open fds / supervisor", "files / agent", "scanner private / RSS",
                       "start"], rows)
    sec.body.append("")
    ratio_rows = []
    for n in sizes:
        for p in ("s6", "runit"):
            if p in res[n]:
                a, b = res[n]["pas"]["private_kb"], res[n][p]["private_kb"]
                ok = a <= b
                ratio_rows.append([fmt_n(n), p, f"{a:.0f} kB", f"{b:.0f} kB", f"{a / b:.2f}",
                                   "≤ 1" if p == "s6" else "info",
                                   ("yes" if ok else f"**no**: {a / b:.2f}x")
                                   if p == "s6" else "-"])
                if p == "s6":
                    sec.checks.append(Check(
                        f"supervision private memory per agent vs s6-supervise, N = {fmt_n(n)}",
                        f"{a / b:.2f}x ({a:.0f} kB vs {b:.0f} kB)", "≤ 1x", ok))
    n0 = sizes[0]
    if "s6" in res[n0] and "after_restart_kb" in res[n0]["pas"]:
        a, b = res[n0]["pas"]["after_restart_kb"], res[n0]["s6"]["after_restart_kb"]
        ratio_rows.append([f"{fmt_n(n0)}, after a restart", "s6", f"{a:.0f} kB",
                           f"{b:.0f} kB", f"{a / b:.2f}", "≤ 1",
                           "yes" if a <= b else f"**no**: {a / b:.2f}x"])
        sec.checks.append(Check(
            f"supervision private memory per agent vs s6-supervise, N = {fmt_n(n0)}, "
            "after every service was killed and restarted",
            f"{a / b:.2f}x ({a:.0f} kB vs {b:.0f} kB)", "≤ 1x", a <= b))
    if "runit" in res[n0] and "after_restart_kb" in res[n0]["pas"]:
        a, b = res[n0]["pas"]["after_restart_kb"], res[n0]["runit"]["after_restart_kb"]
        ratio_rows.append([f"{fmt_n(n0)}, after a restart", "runit", f"{a:.0f} kB",
                           f"{b:.0f} kB", f"{a / b:.2f}", "info", "-"])
    if "s6" in skipped:
        sec.checks.append(Check("supervision private memory per agent vs s6-supervise",
                                "s6 not measured", "≤ 1x", None, skipped["s6"]))
    sec.body += ["Private memory per agent, pas against each peer:", "",
                 *table(["N", "peer", "pas", "peer", "ratio", "target", "met?"], ratio_rows),
                 ""]
    return sec


# ---------------------------------------------------------------------------- claims

CLAIM_SH = r"""# One claim from a queue of files: QUEUE/ready/* -> QUEUE/claimed/*, under flock,
# durable (sync of the file and both directories). Prints the task; exit 7: none ready.
q=$1 w=$2
exec 9>"$q/lock"
flock 9 || exit 1
t=$(find "$q/ready" -mindepth 1 -maxdepth 1 -print -quit)
[ -n "$t" ] || exit 7
n=${t##*/}
mv "$t" "$q/claimed/$n" || exit 1
printf 'claimed_by %s\n' "$w" >> "$q/claimed/$n"
sync "$q/claimed/$n" "$q/ready" "$q/claimed"
echo "$n"
"""

WORKER_SH = r"""# Claims until STOP exists or nothing is ready (exit 7); other failures are counted.
stop=$1; shift
errors=0
while [ ! -e "$stop" ] && [ -d "${stop%/*}" ] && [ "$errors" -lt 1000 ]; do
  "$@"; rc=$?
  [ "$rc" -eq 7 ] && break
  [ "$rc" -eq 0 ] || errors=$((errors + 1))
done
echo "errors $errors" >&2
"""


def spawn_logged(argv: list[str], out: Path, err: Path) -> int:
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, str(out), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
               (os.POSIX_SPAWN_OPEN, 2, str(err), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)]
    return os.posix_spawn(argv[0], argv, ENV, file_actions=actions)


def kids_of(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def run_claimers(argvs: list[list[str]], base: Path, stop: Path, window: float,
                 storm_every: float = 0.0) -> tuple[float, list[list[str]], int, int]:
    """Starts the workers together, creates STOP after `window` s, waits for all. With
    `storm_every`, SIGKILLs a random worker's claim in flight that often. Returns the wall
    time, each worker's claimed ids, the failed claims and the claims killed."""
    rng = random.Random(17)
    killed = 0
    outs = [base / f"w{i:02d}.out" for i in range(len(argvs))]
    errs = [base / f"w{i:02d}.err" for i in range(len(argvs))]
    t0 = time.perf_counter()
    pids = [spawn_logged(a, o, e) for a, o, e in zip(argvs, outs, errs)]
    left = set(pids)
    try:
        deadline = t0 + window
        while left and time.perf_counter() < deadline:
            done = [p for p in left if os.waitpid(p, os.WNOHANG)[0] == p]
            left.difference_update(done)
            if left and storm_every:
                victims = [k for w in left for k in kids_of(w)]
                if victims:
                    try:
                        os.kill(rng.choice(victims), signal.SIGKILL)
                        killed += 1
                    except ProcessLookupError:
                        pass
                time.sleep(storm_every * rng.uniform(0.5, 1.5))
            elif left:
                time.sleep(0.02)
        stop.touch()
        for p in list(left):
            os.waitpid(p, 0)
            left.discard(p)
        wall = time.perf_counter() - t0
    finally:
        for p in left:  # interrupted: leave no loop behind
            try:
                os.kill(p, signal.SIGKILL)
                os.waitpid(p, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    claimed = [o.read_text().split() for o in outs]
    failed = 0
    for e in errs:
        for line in e.read_text().splitlines():
            if line.startswith("errors "):
                failed += int(line.split()[1])
    return wall, claimed, failed, killed


def shell_queue(base: Path, n: int) -> Path:
    q = base / "queue"
    (q / "ready").mkdir(parents=True)
    (q / "claimed").mkdir()
    for i in range(1, n + 1):
        fd = os.open(q / "ready" / f"job_{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, f"title Job {i}\n".encode())
        os.close(fd)
    return q


def check_shell(q: Path, n: int, claimed: list[list[str]]) -> tuple[int, int, int]:
    """(claims, claimed twice, lost) from the workers' output and the queue's files."""
    flat = [t for w in claimed for t in w]
    twice = len(flat) - len(set(flat))
    on_disk = set(os.listdir(q / "claimed"))
    ready = len(os.listdir(q / "ready"))
    for i, w in enumerate(claimed):
        for t in w:
            lines = (q / "claimed" / t).read_text().splitlines()
            by = [ln for ln in lines if ln.startswith("claimed_by ")]
            if by != [f"claimed_by w{i:02d}"]:
                twice += 1
    lost = n - ready - len(on_disk) + len(on_disk ^ set(flat))
    return len(flat), twice, lost


def check_pas(root: Path, cell: str, n: int, claimed: list[list[str]]
              ) -> tuple[int, int, int]:
    flat = [t for w in claimed for t in w]
    twice = len(flat) - len(set(flat))
    in_progress = {}
    for f in (root / cell / "tasks").iterdir():
        if f.suffix != ".json":
            continue
        t = json.loads(f.read_text())
        if t.get("status") == "in_progress":
            in_progress[t["task_id"]] = t
            if int(t.get("attempts") or 0) != 1:
                twice += 1
    for i, w in enumerate(claimed):
        for tid in w:
            if in_progress.get(tid, {}).get("claimed_by") != agent_id(i + 1):
                twice += 1
    events = root / cell / "logs" / "events.jsonl"
    seen: dict[str, int] = {}
    if events.exists():
        for line in events.read_text().splitlines():
            e = json.loads(line)
            if e.get("kind") == "task.claimed":
                seen[e.get("task")] = seen.get(e.get("task"), 0) + 1
    twice += sum(1 for v in seen.values() if v != 1)
    lost = len(set(in_progress) ^ set(flat)) + len(set(seen) ^ set(flat))
    return len(flat), twice, lost


def storm_pas(ctx: Ctx, root: Path, cell: str, claimed: list[list[str]]) -> dict:
    """After a storm: what the task files, the events and the claimers' output say."""
    printed = {t for w in claimed for t in w}
    recorded, twice, orphans = set(), 0, 0
    for f in (root / cell / "tasks").iterdir():
        if f.suffix != ".json":
            continue
        t = json.loads(f.read_text())
        if t.get("status") == "in_progress":
            recorded.add(t["task_id"])
            twice += int(int(t.get("attempts") or 0) != 1)
            orphans += int(not t.get("claimed_by"))
    seen: dict[str, int] = {}
    events = root / cell / "logs" / "events.jsonl"
    if events.exists():
        for line in events.read_text().splitlines():
            e = json.loads(line)
            if e.get("kind") == "task.claimed":
                seen[e.get("task")] = seen.get(e.get("task"), 0) + 1
    twice += sum(1 for v in seen.values() if v > 1)
    twice += sum(len(w) - len(set(w)) for w in claimed) + (
        sum(len(w) for w in claimed) - len(printed))
    p = subprocess.run(ctx.pas_cmd(root_obj(root), "validate", "--strict", cell), env=ENV,
                       capture_output=True, text=True)
    return {"printed": len(printed), "recorded": len(recorded),
            "unreported": len(recorded - printed), "phantom": len(printed - recorded),
            "twice": twice, "orphans": orphans + len(recorded ^ set(seen)),
            "valid": p.returncode == 0}


def root_obj(path: Path):
    from fixtures import Root
    return Root(path=path, agents=0)


def storm_shell(q: Path, claimed: list[list[str]]) -> dict:
    printed = {t for w in claimed for t in w}
    recorded, twice, orphans = set(), 0, 0
    for f in (q / "claimed").iterdir():
        recorded.add(f.name)
        owners = [ln for ln in f.read_text().splitlines() if ln.startswith("claimed_by ")]
        twice += int(len(owners) > 1)
        orphans += int(not owners)
    twice += len(recorded & set(os.listdir(q / "ready")))
    twice += sum(len(w) for w in claimed) - len(printed)
    return {"printed": len(printed), "recorded": len(recorded),
            "unreported": len(recorded - printed), "phantom": len(printed - recorded),
            "twice": twice, "orphans": orphans, "valid": None}


CPU_CLAIMS = 400  # claims in a row by one claimer, for the CPU time per claim


def copy_queue(tpl: Path, dst: Path, cell: str) -> None:
    """A copy of the generated, indexed pas queue `tpl` for one run, much cheaper than
    generating it again: `tasks/` and `.pas/ready/` are hard-linked (pas replaces a task file
    by a rename and creates or removes empty index entries, so it never writes the
    template's files), the rest (agents, logs appended to, lock files, which pas wants
    with one link) copied. Directory times are kept, so the index's stamp still holds."""
    big = {tpl / cell / "tasks", tpl / cell / ".pas" / "ready"}
    shutil.copytree(tpl, dst, symlinks=True,
                    ignore=lambda d, names: [n for n in names if Path(d) / n in big])
    for src in big:
        if src.exists():
            subprocess.run(["cp", "-al", str(src), str(dst / src.relative_to(tpl))], check=True)


def pas_queue(pas: str, tpl: Path, cell: str, d: Path) -> Path:
    """A fresh queue for one run of `pas`: a copy of the template, indexed by that pas."""
    root = d / "root"
    copy_queue(tpl, root, cell)
    p = subprocess.run([pas, "--root", str(root), "task", "reindex", cell], env=ENV,
                       capture_output=True, text=True)
    if p.returncode != 0 and "unrecognized subcommand" not in p.stderr:
        raise BenchError(f"`pas task reindex` failed: {p.stderr.strip()}")
    return root


def cpu_per_claim(argv: list[str], count: int) -> float:
    """CPU time (user + system, ms) per claim of `count` claims in a row, one process tree
    each, from the kernel's accounting of the waited-for children: not a clock, so it holds
    on a busy machine."""
    cpu = 0.0
    done = 0
    for _ in range(count):
        pid = os.posix_spawn(argv[0], argv, ENV, file_actions=[
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
        _, status, ru = os.wait4(pid, 0)
        cpu += ru.ru_utime + ru.ru_stime
        code = os.waitstatus_to_exitcode(status)
        if code == 7:
            break
        if code != 0:
            raise BenchError(f"a claim failed with exit {code}: {argv}")
        done += 1
    return 1000 * cpu / max(done, 1)


def device_stat(path: Path) -> Optional[list[int]]:
    """The block device counters (`/sys/dev/block/M:m/stat`) of the device holding `path`;
    `None` where the kernel does not tell (not a block device, no sysfs)."""
    st = os.stat(path)
    try:
        text = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat").read_text()
        return [int(x) for x in text.split()]
    except (OSError, ValueError):
        return None


def flush_ms(before: Optional[list[int]], after: Optional[list[int]]) -> Optional[float]:
    """The device's mean time per flush (an fsync's cache flush) between two readings:
    how fast the disk was during a run, which on a shared machine changes from minute to
    minute. Fields 15 and 16 of the stat file (Linux 5.5 and later)."""
    if not before or not after or len(before) < 17 or len(after) < 17:
        return None
    flushes = after[15] - before[15]
    return (after[16] - before[16]) / flushes if flushes > 0 else None


def claim_plan(sizes: list[int], tools: list[tuple[str, str]], reps: int
               ) -> list[tuple[int, int, str, str]]:
    """The runs `(round, size, label, pas)` in the order they are made: sizes ascending
    in the first round, descending in the second and so on, and at each size the tools in an order
    alternating from one size to the next, so that a slow spell of the shared disk (its
    latency drifts over minutes) does not always fall on the same size or tool."""
    plan = []
    k = 0
    for r in range(reps):
        for n in (sizes if r % 2 == 0 else sizes[::-1]):
            for name, pas in (tools if k % 2 == 0 else tools[::-1]):
                plan.append((r, n, name, pas))
            k += 1
    return plan


def claim_runs(base: Path, queues: dict[int, tuple[Path, str]], tools: list[tuple[str, str]],
               sizes: list[int], reps: int, window: float, workers: int
               ) -> dict[int, dict[str, list[dict]]]:
    """`reps` rounds of every size and every tool (`(label, pas binary)`, or `(label, "")`
    for the shell queue), in the order of [`claim_plan`]. Every run's fresh queue is made
    before the first run starts and the file system synced once, and every queue is
    removed after the last: the writes of making a queue (100,000 hard links, or files)
    and of removing one do not land on another run's fsyncs."""
    sh = shutil.which("sh") or "sh"
    res: dict[int, dict[str, list[dict]]] = {n: {t: [] for t, _ in tools} for n in sizes}
    runs = []
    try:
        for r, n, name, pas in claim_plan(sizes, tools, reps):
            d = base / f"run-{n}-{r}-{re.sub(r'[^a-z0-9]+', '_', name)}"
            d.mkdir()
            stop = d / "STOP"
            t0 = time.perf_counter()
            if pas:
                tpl, cell = queues[n]
                root = pas_queue(pas, tpl, cell, d)
                argvs = [[sh, str(base / "worker.sh"), str(stop), pas, "--root", str(root),
                          "task", "claim", cell, "--agent", agent_id(i)]
                         for i in range(1, workers + 1)]
                check = (lambda claimed, root=root, cell=cell, n=n:
                         check_pas(root, cell, n, claimed))
            else:
                q = shell_queue(d, n)
                argvs = [[sh, str(base / "worker.sh"), str(stop), sh,
                          str(base / "claim.sh"), str(q), f"w{i:02d}"]
                         for i in range(workers)]
                check = lambda claimed, q=q, n=n: check_shell(q, n, claimed)
            runs.append((r, n, name, d, stop, argvs, check, time.perf_counter() - t0))
        os.sync()
        for r, n, name, d, stop, argvs, check, setup in runs:
            before = device_stat(d)
            wall, claimed, failed, _ = run_claimers(argvs, d, stop, window)
            flush = flush_ms(before, device_stat(d))
            got, twice, lost = check(claimed)
            res[n][name].append({"claims": got, "wall_s": wall, "rate": got / wall,
                                 "failed": failed, "twice": twice, "lost": lost,
                                 "setup_s": setup, "load": os.getloadavg()[0],
                                 "round": r + 1, "flush_ms": flush})
            device = f", device {flush:.2f} ms per flush" if flush is not None else ""
            log(f"claims {name} at {n} pending (round {r + 1}): {got} in {wall:.1f} s = "
                f"{got / wall:.0f}/s, {failed} failed, {twice} twice, {lost} lost{device}")
    finally:
        for run in runs:
            shutil.rmtree(run[3], ignore_errors=True)
    return res


def claim_cpu(base: Path, queues: dict[int, tuple[Path, str]], tools: list[tuple[str, str]],
              sizes: list[int], count: int = CPU_CLAIMS) -> dict[int, dict[str, float]]:
    """CPU ms per claim at each size for each tool: one claimer, `count` claims in a row,
    in two halves on fresh queues, the sizes ascending for the first and descending for
    the second (the kernel's share of a claim drifts over minutes, as the disk does), the
    mean of the two. For pas each half spans a refill of the index's head at every size;
    the shell queue makes a quarter as many."""
    sh = shutil.which("sh") or "sh"
    out: dict[int, dict[str, float]] = {n: {} for n in sizes}
    for half, order in enumerate((sizes, sizes[::-1])):
        for n in order:
            for name, pas in tools:
                d = base / f"cpu-{n}-{half}-{re.sub(r'[^a-z0-9]+', '_', name)}"
                d.mkdir()
                if pas:
                    tpl, cell = queues[n]
                    root = pas_queue(pas, tpl, cell, d)
                    argv = [pas, "--root", str(root), "task", "claim", cell, "--agent",
                            agent_id(1)]
                else:
                    argv = [sh, str(base / "claim.sh"), str(shell_queue(d, n)), "w00"]
                os.sync()
                # The shell queue's claims cost the same each (a whole listing every
                # time), and at 100,000 pending 70 ms of it: a quarter as many tell as much.
                ms = cpu_per_claim(argv, (count if pas else count // 4) // 2)
                out[n][name] = (out[n].get(name, 0.0) + ms / 2) if half else ms / 2
                log(f"claims {name} at {n} pending (half {half + 1}): {ms:.2f} ms CPU per claim")
                shutil.rmtree(d, ignore_errors=True)
    return out


def measure_claims(ctx: Ctx) -> Section:
    sec = Section("claims-peer", "Claims vs a shell queue (`flock` + `mv` + `sync`)")
    workers = 20
    sizes = [1000, 10000] if ctx.quick else [1000, 10000, 100000]
    window = 3.0 if ctx.quick else 5.0
    reps = 1 if ctx.quick else 6  # even: each size as often early in a round as late
    base = ctx.tmp / "claims"
    base.mkdir()
    sh = shutil.which("sh")
    for tool in ("flock", "find", "mv", "sync"):
        if not shutil.which(tool):
            sec.body += [f"**Skipped**: `{tool}` is not installed (the shell queue needs "
                         "util-linux and coreutils).", ""]
            return sec
    (base / "claim.sh").write_text(CLAIM_SH)
    (base / "worker.sh").write_text(WORKER_SH)
    load0 = load_text()
    gen = Generator(ctx.repo)
    queues: dict[int, tuple[Path, str]] = {}
    for n in sizes:
        root, cell = gen.claim_root(base / f"tpl-{n}", workers, n)
        index_queue(ctx, root, cell)
        queues[n] = (root.path, cell)
    tools = [("pas", ctx.pas), ("shell", "")]
    res: dict = claim_runs(base, queues, tools, sizes, reps, window, workers)
    cpu = claim_cpu(base, queues, tools, sizes)
    for n in sizes:
        shutil.rmtree(queues[n][0], ignore_errors=True)
    # Exactly once when claimers die: a SIGKILL storm on the claims in flight.
    storm: dict[str, dict] = {}
    storm_every = 0.03
    storm_n = n = sizes[0]
    for name in ("pas", "shell"):
        d = base / f"storm-{name}"
        d.mkdir()
        stop = d / "STOP"
        if name == "pas":
            root, cell = gen.claim_root(d / "root", workers, n)
            index_queue(ctx, root, cell)
            argvs = [[sh, str(base / "worker.sh"), str(stop),
                      *ctx.pas_cmd(root, "task", "claim", cell, "--agent", agent_id(i))]
                     for i in range(1, workers + 1)]
        else:
            q = shell_queue(d, n)
            argvs = [[sh, str(base / "worker.sh"), str(stop), sh, str(base / "claim.sh"),
                      str(q), f"w{i:02d}"] for i in range(workers)]
        wall, claimed, failed, killed = run_claimers(argvs, d, stop, window, storm_every)
        storm[name] = (storm_pas(ctx, root.path, cell, claimed) if name == "pas"
                       else storm_shell(q, claimed))
        storm[name].update(killed=killed, wall_s=wall)
        log(f"storm {name}: {storm[name]}")
        shutil.rmtree(d, ignore_errors=True)
    res["storm"] = storm
    res["cpu_ms"] = cpu
    ctx.data["claims_peer"] = res
    load1 = load_text()
    med = {n: {name: statistics.median(x["rate"] for x in v) for name, v in res[n].items()}
           for n in sizes}
    sec.body += [
        f"{workers} claimer processes (`sh` loops) on one queue of N pending tasks, all "
        f"started together; after {window:.0f} s a STOP file tells each loop to end after "
        "the claim in hand, and the time runs until the last one exits (or until the "
        "queue is empty: a claim that finds nothing ends its loop). Claims/s is claims "
        f"made / that time. {reps} round(s); each round runs every size in turn "
        f"({', '.join(fmt_n(n) for n in sizes)} pending), ascending in odd rounds and "
        "descending in even ones, and at each size pas and the shell queue, in an order "
        "alternating from one size to the next: sizes and tools interleaved and balanced, "
        "so that a slow spell of the shared disk (its latency drifts over minutes: see "
        "*device* below) falls on all alike. Every run has a fresh queue, and all of them "
        "are made before the first run starts (then the file system is synced) and "
        "removed after the last, so that making or removing 100,000 files never lands on "
        "a run. A pas queue is generated once per size and indexed, and each run gets a "
        "copy of it (task files and index entries hard-linked: pas replaces a task file "
        "by a rename, so the copy's claims never write the template), indexed again.",
        "",
        "- **pas**: `pas task claim CELL --agent AGENT` (one agent per claimer) on a cell "
        "of N pending, unassigned tasks without dependencies, written as files and indexed "
        "with `pas task reindex` before the clock starts. Each claim reads the ready index "
        "and writes the task, the agent's `current_task`, the index and a `task.claimed` "
        "event, fsync'd.",
        "- **shell queue**: one file per task in `ready/`; a claim (`bench/peers.py`, "
        "`CLAIM_SH`) takes `flock` on the queue's lock file, picks the first entry "
        "`find -print -quit` returns (directory order, no priorities; GNU find still reads the "
        "whole directory first, so this queue too costs a little more per claim as it "
        "grows), `mv`s it to "
        "`claimed/`, appends the claimer's name, `sync`s the file and both directories "
        "(fsync), and prints it: five processes (`sh`, `flock`, `find`, `mv`, `sync`).",
        "",
        "*Exactly once* is checked after each run: every id a claimer printed is claimed "
        "by that claimer and by no one else (pas: the task file `in_progress` with "
        "`claimed_by` and `attempts` 1, one `task.claimed` event; shell: the file in "
        "`claimed/` with that one claimer's line), and nothing claimed is missing from "
        "the output or the files. *Failed* counts claims that exited neither 0 nor 7 "
        "(for pas, a lock not had within its 10 s bound is `busy`, exit 6). *Device* is "
        "the disk's mean time per cache flush (each fsync ends in one) during the run, "
        "from the kernel's counters of the device holding the queues. "
        f"Load average at start / end: {load0} / {load1}.",
        "",
    ]
    rows = []
    for n in sizes:
        for name in ("pas", "shell"):
            for x in res[n][name]:
                flush = x.get("flush_ms")
                rows.append([fmt_n(n), name, str(x.get("round", "")), fmt_n(x["claims"]),
                             fmt_time(x["wall_s"]), f"{x['rate']:,.0f}/s",
                             "—" if flush is None else f"{flush:.2f} ms",
                             str(x["failed"]), str(x["twice"]), str(x["lost"])])
    sec.body += table(["pending", "queue", "round", "claims", "time", "claims/s", "device",
                       "failed", "claimed twice", "lost"], rows)
    sec.body.append("")
    crow = []
    for n in sizes:
        a, b = med[n]["pas"], med[n]["shell"]
        ok = a >= 1.5 * b
        crow.append([fmt_n(n), f"{a:,.0f}/s", f"{b:,.0f}/s", f"{a / b:.2f}", "≥ 1.5",
                     "yes" if ok else f"**no**: {a / b:.2f}x"])
        sec.checks.append(Check(f"claims/s vs the shell flock+mv+sync queue, {fmt_n(n)} pending",
                                f"{a / b:.2f}x ({a:,.0f}/s vs {b:,.0f}/s)", "≥ 1.5x", ok))
    sec.body += ["Medians per size:", "",
                 *table(["pending", "pas", "shell queue", "pas / shell", "target", "met?"],
                        crow), ""]
    lo, hi = sizes[0], sizes[-1]
    flat = med[hi]["pas"] / med[lo]["pas"]
    sflat = med[hi]["shell"] / med[lo]["shell"]
    sec.checks.append(Check(f"pas claims/s flat from {fmt_n(lo)} to {fmt_n(hi)} pending",
                            f"x{flat:.2f} ({med[lo]['pas']:,.0f}/s → {med[hi]['pas']:,.0f}/s)",
                            "≥ 0.8 (flat)", flat >= 0.8))
    sec.body += [f"From {fmt_n(lo)} to {fmt_n(hi)} pending tasks the median of pas's "
                 f"claims/s changes x{flat:.2f} (the shell queue's x{sflat:.2f}); *flat* is "
                 "taken as at least 0.8.", ""]
    cflat = cpu[hi]["pas"] / cpu[lo]["pas"]
    sec.checks.append(Check(f"pas CPU per claim at {fmt_n(hi)} vs {fmt_n(lo)} pending",
                            f"x{cflat:.2f} ({cpu[lo]['pas']:.2f} → {cpu[hi]['pas']:.2f} ms)",
                            "info", None))
    sec.body += [f"**CPU per claim**, which the machine's load moves less than claims/s "
                 "(no waiting for a CPU or the lock is counted, but a busy machine's caches "
                 f"still cost a few percent): one claimer, {CPU_CLAIMS} claims in a row, in two "
                 "halves on fresh queues, the sizes ascending for the first half and "
                 "descending for the second (for pas each half includes a refill of the ready "
                 "index's head, one pass over `ready/` per up to 256 claims; the shell queue "
                 f"makes {CPU_CLAIMS // 4}), user + system time of the claim's processes from "
                 "the kernel's accounting, per claim, the mean of the halves:", "",
                 *table(["pending", "pas", "shell queue"],
                        [[fmt_n(n), f"{cpu[n]['pas']:.2f} ms", f"{cpu[n]['shell']:.2f} ms"]
                         for n in sizes]),
                 "", f"pas at {fmt_n(hi)} / at {fmt_n(lo)}: x{cflat:.2f}.", ""]
    bad = sum(x["twice"] + x["lost"] for n in sizes for v in res[n].values() for x in v)
    sec.checks.append(Check("claims exactly once (pas and shell queue, every run)",
                            f"{bad} violations", "0", bad == 0))
    srows = []
    for name, x in storm.items():
        valid = {None: "-", True: "yes", False: "**no**"}[x["valid"]]
        srows.append([name, str(x["killed"]), fmt_n(x["printed"]), fmt_n(x["recorded"]),
                      str(x["unreported"]), str(x["phantom"]), str(x["twice"]),
                      str(x["orphans"]), valid])
    sec.body += [
        f"**Under a SIGKILL storm.** The same {workers} claimers on a fresh queue of "
        f"{fmt_n(storm_n)} tasks for {window:.0f} s, while the harness SIGKILLs a random claim in "
        f"flight (the `pas task claim` process, or the `sh claim.sh` one) about every "
        f"{storm_every * 1000:.0f} ms. *Recorded* is what the queue's files say is claimed; "
        "*unreported*: recorded but never printed (the claimer died after its claim was "
        "made: the task is still known to be its claimer's); *phantom*: printed but not "
        "recorded; *twice*: claimed more than once; *owner unknown*: claimed with no "
        "claimer recorded (for pas, no `claimed_by` or no matching `task.claimed` event; "
        "for the shell queue, moved to `claimed/` by a claim killed before it wrote "
        "its name), so nobody will ever work on it. *Valid*: `pas validate --strict` on "
        "the cell afterwards.", "",
        *table(["queue", "claims killed", "printed", "recorded", "unreported", "phantom",
                "twice", "owner unknown", "valid"], srows), ""]
    if "pas" in storm:
        x = storm["pas"]
        ok = x["twice"] == 0 and x["phantom"] == 0 and x["orphans"] == 0 and bool(x["valid"])
        sec.checks.append(Check(
            "pas claims exactly once under a SIGKILL storm",
            f"{x['killed']} claims killed: {x['twice']} twice, {x['phantom']} phantom, "
            f"{x['orphans']} owner unknown, valid {'yes' if x['valid'] else 'no'}",
            "0, 0, 0, valid", ok))
    if "shell" in storm:
        x = storm["shell"]
        sec.checks.append(Check(
            "shell queue under the same storm",
            f"{x['killed']} claims killed: {x['twice']} twice, {x['orphans']} owner unknown",
            "info", None))
    return sec


SCENARIOS: list[Callable[[Ctx], Section]] = [
    measure_revival,
    measure_footprint,
    measure_claims,
]
