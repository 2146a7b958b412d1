"""Fixture missions roots, written directly as files (no pas commands, so it is fast).

Every cell looks like what `pas cell create` + `pas agent add` + a few `pas agent beat` +
`pas task add` leave behind: cell.json from templates/cell.json with a real uuid4 as both the
directory name and `cell_id`, config/{isolation,policies,permissions}.json from templates/,
the six subdirectories, AGENTS_PER_CELL agent files and TASKS_PER_CELL task files.

Every agent is healthy and within its context budget, and every cell within its timeout
(created 10-20 minutes ago). Every agent says it is healthy (`"health": "healthy"`), with a last_heartbeat a few
seconds old. So that the fixture stays healthy for the whole run, config/policies.json sets
`heartbeat_interval` to 3600 s (the default is 30 s; an older beat would make the agent
`late`, and the first `pas status` would then rewrite every agent file and log an event per
agent, which is not what the status benchmark means to measure).
"""

from __future__ import annotations

import json
import os
import sys
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

AGENTS_PER_CELL = 10
TASKS_PER_CELL = 3
HEARTBEAT_INTERVAL = 3600  # seconds; written to every cell's config/policies.json
SUBDIRS = ("agents", "tasks", "checkpoints", "logs", "artifacts", "config")

ROLES = ("lead", "write", "write", "write", "read", "read", "audit", "write", "read", "write")
CAPS = ("planning", "coding", "review", "testing", "docs", "research", "coordination", "ops")
NOTES = (
    "writing tests",
    "reading the spec",
    "refactoring the store",
    "waiting for review",
    "summarising findings",
)


def stamp(t: datetime) -> str:
    """RFC 3339 UTC with microseconds and Z, the form pas writes."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps(obj: dict) -> str:
    """pas's on-disk form: two-space indent, trailing newline."""
    return json.dumps(obj, indent=2) + "\n"


@dataclass
class Root:
    """One generated missions root."""

    path: Path
    agents: int
    cells: list[str] = field(default_factory=list)
    files: int = 0
    json_files: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def agent_file(self, cell: str, agent: str) -> Path:
        return self.path / cell / "agents" / f"{agent}.json"


def load_templates(repo: Path) -> dict[str, dict]:
    names = ("cell", "task", "isolation", "policies", "permissions")
    return {n: json.loads((repo / "templates" / f"{n}.json").read_text()) for n in names}


def agent_id(i: int) -> str:
    return f"agent_{i:03d}"


def task_id(i: int) -> str:
    return f"task_{i:03d}"


class Generator:
    """Writes cells into a root; deterministic given `seed` (apart from the uuids and times)."""

    def __init__(self, repo: Path, seed: int = 1):
        self.t = load_templates(repo)
        self.rng = random.Random(seed)
        policies = dict(self.t["policies"])
        policies["heartbeat_interval"] = HEARTBEAT_INTERVAL
        # Constant files, serialised once.
        self.isolation = dumps(self.t["isolation"])
        self.permissions = dumps(self.t["permissions"])
        self.policies = dumps(policies)

    def cell_doc(self, cell_id: str, n: int, created: datetime) -> dict:
        doc = dict(self.t["cell"])
        doc["cell_id"] = cell_id
        doc["mission_name"] = f"Bench mission {n:06d}"
        doc["created_at"] = stamp(created)
        doc["status"] = "active"
        doc["max_agents"] = max(AGENTS_PER_CELL, int(doc.get("max_agents") or 0))
        return doc

    def agent_doc(self, i: int, now: datetime, created: datetime) -> dict:
        rng = self.rng
        aid = agent_id(i)
        beats = rng.randint(3, 400)
        last = now - timedelta(seconds=rng.uniform(0.0, 3.0))
        caps = sorted(rng.sample(CAPS, rng.randint(1, 3)))
        ctx_limit = 200000
        # What `pas agent add` writes (templates/agent.json), then what beats add.
        return {
            "agent_id": aid,
            "name": f"Agent {i}",
            "role": ROLES[(i - 1) % len(ROLES)],
            "capabilities": caps,
            "gateway": f"gw-{rng.randint(1, 4)}",
            "status": "active",
            "current_task": task_id(i) if i <= TASKS_PER_CELL else None,
            "checkpoint": None,
            "created_at": stamp(created + timedelta(seconds=i)),
            "last_heartbeat": stamp(last),
            "heartbeat_count": beats,
            "reported_status": "ACTIVE",
            "progress": round(rng.random(), 2),
            "ctx_used": rng.randint(1000, ctx_limit * 2 // 5),  # under the 50% warning line
            "ctx_limit": ctx_limit,
            "metadata": {},
            "note": rng.choice(NOTES),
            "health": "healthy",
            "health_changed_at": stamp(created + timedelta(seconds=i, microseconds=3781)),
        }

    def task_doc(self, i: int, created: datetime) -> dict:
        doc = dict(self.t["task"])
        doc["task_id"] = task_id(i)
        doc["created_at"] = stamp(created + timedelta(seconds=30 + i))
        # A realistic mix: one done, one in progress, one waiting on it (shown as blocked).
        if i == 1:
            doc.update(title="Outline the guide", description="Agree the structure.",
                       assigned_to=agent_id(1), status="completed", priority="high",
                       completed_at=stamp(created + timedelta(minutes=5)))
        elif i == 2:
            doc.update(title="Write the draft", description="First full draft.",
                       assigned_to=agent_id(2), status="in_progress",
                       dependencies=[task_id(1)])
        else:
            doc.update(title=f"Review part {i}", description="Review and comment.",
                       assigned_to=agent_id(i) if i <= AGENTS_PER_CELL else None,
                       status="pending", priority="low", dependencies=[task_id(i - 1)])
        return doc

    def write_cell(self, root: Root, n: int, agents: int, now: datetime) -> None:
        cell_id = str(uuid.uuid4())
        # Created 10-20 minutes ago: within the template's cell timeout (3600 s) for the
        # whole run, so `pas status` never fails the cell for running out of time.
        created = now - timedelta(minutes=self.rng.uniform(10, 20))
        cell = root.path / cell_id
        os.mkdir(cell)
        for sub in SUBDIRS:
            os.mkdir(cell / sub)
        files = [
            (cell / "cell.json", dumps(self.cell_doc(cell_id, n, created))),
            (cell / "config" / "isolation.json", self.isolation),
            (cell / "config" / "policies.json", self.policies),
            (cell / "config" / "permissions.json", self.permissions),
        ]
        for i in range(1, TASKS_PER_CELL + 1):
            files.append((cell / "tasks" / f"{task_id(i)}.json", dumps(self.task_doc(i, created))))
        for i in range(1, agents + 1):
            files.append((cell / "agents" / f"{agent_id(i)}.json",
                          dumps(self.agent_doc(i, now, created))))
        for path, text in files:
            data = text.encode()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            root.bytes += len(data)
        root.files += len(files)
        root.json_files += len(files)
        root.cells.append(cell_id)

    def claim_root(self, path: Path, agents: int, tasks: int) -> tuple[Root, str]:
        """A root of one cell with `agents` idle agents and `tasks` pending, unassigned tasks
        without dependencies: a queue for `pas task claim`. Returns the root and the cell."""
        os.makedirs(path)
        root = Root(path=path, agents=agents)
        now = datetime.now(timezone.utc)
        created = now - timedelta(minutes=5)
        cell_id = str(uuid.uuid4())
        cell = path / cell_id
        os.mkdir(cell)
        for sub in SUBDIRS:
            os.mkdir(cell / sub)
        cell_doc = self.cell_doc(cell_id, 0, created)
        cell_doc["max_agents"] = max(agents, int(cell_doc.get("max_agents") or 0))
        files = [
            (cell / "cell.json", dumps(cell_doc)),
            (cell / "config" / "isolation.json", self.isolation),
            (cell / "config" / "policies.json", self.policies),
            (cell / "config" / "permissions.json", self.permissions),
        ]
        for i in range(1, agents + 1):
            doc = self.agent_doc(i, now, created)
            doc["current_task"] = None
            files.append((cell / "agents" / f"{agent_id(i)}.json", dumps(doc)))
        for i in range(1, tasks + 1):
            doc = dict(self.t["task"])
            doc.update(task_id=f"job_{i:05d}", title=f"Job {i}", status="pending",
                       assigned_to=None, dependencies=[],
                       created_at=stamp(created + timedelta(milliseconds=i)))
            files.append((cell / "tasks" / f"job_{i:05d}.json", dumps(doc)))
        for file, text in files:
            file.write_text(text)
            root.bytes += len(text)
        root.files = root.json_files = len(files)
        root.cells.append(cell_id)
        return root, cell_id

    def root(self, path: Path, agents: int) -> Root:
        """A root of `agents` agents, AGENTS_PER_CELL per cell (the last cell may hold fewer).

        On a terminal, a progress line on stderr counts the agents written (silent in pipes
        and logs, like pas's own progress lines)."""
        import time

        t0 = time.perf_counter()
        os.makedirs(path)
        root = Root(path=path, agents=agents)
        now = datetime.now(timezone.utc)
        progress = Progress(f"writing {agents:,} agents")
        left, n = agents, 0
        while left > 0:
            k = min(AGENTS_PER_CELL, left)
            self.write_cell(root, n, k, now)
            left -= k
            n += 1
            progress.update(agents - left, agents)
        progress.done()
        root.cells.sort()
        root.seconds = time.perf_counter() - t0
        return root


class Progress:
    """A transient line on stderr, only when stderr is a terminal, at most 10 times a second."""

    def __init__(self, what: str):
        import time

        self.what = what
        self.on = sys.stderr.isatty()
        self.clock = time.monotonic
        self.drawn = 0.0
        self.shown = False

    def update(self, done: int, total: int) -> None:
        now = self.clock()
        if not self.on or now - self.drawn < 0.1:
            return
        self.drawn = now
        self.shown = True
        sys.stderr.write(f"\r\x1b[K{self.what}: {done:,}/{total:,}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False


def read_count(path: Path) -> int:
    """heartbeat_count of an agent file."""
    return int(json.loads(path.read_text()).get("heartbeat_count") or 0)
