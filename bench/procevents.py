"""The kernel's process events (the netlink process connector), to time supervision.

Every fork, exec and exit on the machine is reported by the kernel with its own timestamp
(CLOCK_MONOTONIC, the clock of `time.monotonic_ns()`), so a revival can be timed from the
`kill` to the `exec` of the replacement without polling and without asking the supervisor,
and the same way for pas, s6 and runit. Listening needs CAP_NET_ADMIN (root); `open()`
returns None where it is refused, and the callers then say so instead of measuring.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Optional

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3

FORK = 0x00000001
EXEC = 0x00000002
EXIT = 0x80000000

_NLHDR = struct.Struct("IHHII")  # nlmsghdr: len, type, flags, seq, pid
_CNHDR = struct.Struct("IIIIHH")  # cn_msg: idx, val, seq, ack, len, flags
_EVHDR = struct.Struct("IIQ")  # proc_event: what, cpu, timestamp_ns


@dataclass
class Event:
    what: int
    ts: int  # ns, CLOCK_MONOTONIC
    pid: int  # the process (thread group) concerned; the child for a fork
    parent: int  # for a fork: the parent's thread group; else 0
    code: int = 0  # for an exit: the wait status


class Listener:
    """A subscription to process events; `events(until_ns)` yields them as they come."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray(65536)

    def close(self) -> None:
        try:
            self._control(PROC_CN_MCAST_IGNORE)
        except OSError:
            pass
        self.sock.close()

    def _control(self, op: int) -> None:
        payload = struct.pack("I", op)
        cn = _CNHDR.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        self.sock.send(_NLHDR.pack(_NLHDR.size + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn)

    def drain(self) -> None:
        """Throws away what is queued."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv_into(self.buf)
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            self.sock.setblocking(True)

    def next(self, deadline_ns: int) -> Optional[Event]:
        """The next fork, exec or exit event, or None at the deadline (monotonic ns)."""
        while True:
            left = deadline_ns - time.monotonic_ns()
            if left <= 0:
                return None
            self.sock.settimeout(left / 1e9)
            try:
                n = self.sock.recv_into(self.buf)
            except socket.timeout:
                return None
            except OSError as e:
                if e.errno == 105:  # ENOBUFS: the kernel dropped events; keep going
                    continue
                raise
            ev = self._parse(memoryview(self.buf)[:n])
            if ev is not None:
                return ev

    @staticmethod
    def _parse(m: memoryview) -> Optional[Event]:
        off = _NLHDR.size + _CNHDR.size
        if len(m) < off + _EVHDR.size:
            return None
        what, _cpu, ts = _EVHDR.unpack_from(m, off)
        d = off + _EVHDR.size
        if what == FORK:
            ppid, ptgid, cpid, ctgid = struct.unpack_from("iiii", m, d)
            if cpid != ctgid:
                return None  # a new thread, not a process
            return Event(what, ts, ctgid, ptgid)
        if what == EXEC:
            pid, tgid = struct.unpack_from("ii", m, d)
            return Event(what, ts, tgid, 0)
        if what == EXIT:
            pid, tgid, code = struct.unpack_from("iiI", m, d)
            if pid != tgid:
                return None  # a thread
            return Event(what, ts, tgid, 0, code)
        return None


def open_listener() -> tuple[Optional[Listener], str]:
    """A listener, or None and why not."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    except (OSError, AttributeError) as e:
        return None, f"no netlink process connector here ({e})"
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((0, CN_IDX_PROC))
        lst = Listener(sock)
        lst._control(PROC_CN_MCAST_LISTEN)
    except OSError as e:
        sock.close()
        return None, f"cannot listen to the kernel's process events ({e}; needs root)"
    # Check that events really arrive: a child of our own.
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)
    deadline = time.monotonic_ns() + 2_000_000_000
    while True:
        ev = lst.next(deadline)
        if ev is None:
            lst.close()
            return None, "the kernel's process events connector delivered nothing"
        if ev.pid == pid:
            return lst, ""


class Tree:
    """Follows descendants of some roots through fork events: `parent_of` for each."""

    def __init__(self, roots: set[int]):
        self.parent: dict[int, int] = {}
        self.roots = set(roots)

    def add(self, ev: Event) -> None:
        if ev.what == FORK:
            self.parent[ev.pid] = ev.parent

    def depth_under(self, pid: int, root: int) -> Optional[int]:
        """1 for a child of root, 2 for a grandchild...; None when not under it."""
        d, p = 0, pid
        while p in self.parent and d < 16:
            p = self.parent[p]
            d += 1
            if p == root:
                return d
        return None
