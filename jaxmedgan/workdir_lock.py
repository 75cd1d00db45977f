"""One writer per workdir: `W/.lock` holds the host, PID and start time of the run that owns W.

A second training (or anything else that writes checkpoints into W) is refused at once with the
holder's host and PID. A lock whose process is gone (same host, PID dead or reused) is taken
over with a message. A lock from another host cannot be checked from here: it is refused, and
the message says how to remove it if that run is known to be gone. On many hosts only process 0
takes the lock. Remote workdirs (gs://...) have no atomic create-if-absent here and are not
locked. The same process may take the lock again (`dual_gan` locks W and trains into W/stage1).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from typing import Iterator

LOCK_FILE = ".lock"

log = logging.getLogger(__name__)


class WorkdirLockedError(RuntimeError):
    """Another live process holds the workdir."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot; tells a reused PID apart), if known."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    now = _start_time(pid)
    return started is None or now is None or now == started


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:  # half-written by a process killed while creating it
        return {}


def holder(workdir: str) -> dict | None:
    """The lock record of the live process (other than this one) that holds `workdir`, else None."""
    if "://" in workdir:
        return None
    rec = _read(os.path.join(workdir, LOCK_FILE))
    if not rec or (rec.get("host"), rec.get("pid")) == (socket.gethostname(), os.getpid()):
        return None
    if rec.get("host") == socket.gethostname() and not _alive(int(rec.get("pid", -1)), rec.get("started")):
        return None
    return rec


def _describe(rec: dict) -> str:
    return f"PID {rec.get('pid')} on host {rec.get('host')} (since {rec.get('since', '?')})"


@contextlib.contextmanager
def hold(workdir: str, *, enabled: bool = True) -> Iterator[None]:
    """Holds `workdir`'s lock for the block; WorkdirLockedError if a live process holds it."""
    if not enabled or "://" in workdir:
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    me = _me()
    # flock on the directory serialises the read-check-replace of a stale lock between racing processes.
    guard = os.open(workdir, os.O_RDONLY)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        rec = _read(path)
        if rec is not None and (rec.get("host"), rec.get("pid")) == (me["host"], me["pid"]):
            owned = False  # re-entered by the holder: the outer `hold` releases it
        else:
            if rec is not None:
                if rec and rec.get("host") != me["host"]:
                    raise WorkdirLockedError(
                        f"Workdir {workdir} is locked by {_describe(rec)}; another host's process cannot be "
                        f"checked from here. If that run is gone, delete {path} and retry.")
                if rec and _alive(int(rec.get("pid", -1)), rec.get("started")):
                    raise WorkdirLockedError(
                        f"Workdir {workdir} is in use by {_describe(rec)}: two runs would overwrite each "
                        "other's checkpoints and metrics. Wait for it, stop it, or use another --workdir.")
                log.warning("Taking over the lock on %s left by %s, which is no longer running.", workdir,
                            _describe(rec) if rec else "a process killed while locking")
            tmp = f"{path}.{me['pid']}.tmp"
            with open(tmp, "w") as f:
                json.dump(me, f)
            os.replace(tmp, path)
            owned = True
    finally:
        os.close(guard)  # releases the flock
    try:
        yield
    finally:
        if owned and (_read(path) or {}).get("pid") == me["pid"]:
            os.unlink(path)
