"""workdir_lock: a live holder (another process) refuses a second run; a dead one is taken over."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from jaxmedgan import workdir_lock

HOLDER = """
import sys, time
from jaxmedgan import workdir_lock
with workdir_lock.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_live_holder_refuses_then_dead_holder_is_taken_over(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("jaxmedgan"), "propagate", True)  # main's CLI logging turns it off
    wd = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, wd], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(workdir_lock.WorkdirLockedError, match=rf"PID {proc.pid} on host {socket.gethostname()}"):
            with workdir_lock.hold(wd):
                pass
        assert workdir_lock.holder(wd)["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)  # dies without releasing: the lock file stays behind
        proc.wait()
    assert json.load(open(os.path.join(wd, workdir_lock.LOCK_FILE)))["pid"] == proc.pid
    assert workdir_lock.holder(wd) is None
    with caplog.at_level(logging.WARNING, logger="jaxmedgan.workdir_lock"):
        with workdir_lock.hold(wd):
            assert json.load(open(os.path.join(wd, workdir_lock.LOCK_FILE)))["pid"] == os.getpid()
            with workdir_lock.hold(wd):  # re-entered by the holder (dual_gan: W, then W/stage1)
                pass
            assert os.path.exists(os.path.join(wd, workdir_lock.LOCK_FILE))
    assert f"PID {proc.pid}" in caplog.text and "no longer running" in caplog.text
    assert os.listdir(wd) == []  # released, and nothing else left behind


def test_lock_from_another_host_is_refused_with_how_to_clear_it(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / workdir_lock.LOCK_FILE).write_text(json.dumps({"host": "node-17", "pid": 4242, "since": "x"}))
    with pytest.raises(workdir_lock.WorkdirLockedError, match=r"PID 4242 on host node-17.*delete .*\.lock"):
        with workdir_lock.hold(str(wd)):
            pass


def test_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    # Our own PID's parent is alive, but with a different start time the record is of a dead process.
    rec = {"host": socket.gethostname(), "pid": os.getppid(), "started": "1"}
    (wd / workdir_lock.LOCK_FILE).write_text(json.dumps(rec))
    assert workdir_lock.holder(str(wd)) is None
    rec["started"] = workdir_lock._start_time(os.getppid())
    (wd / workdir_lock.LOCK_FILE).write_text(json.dumps(rec))
    assert workdir_lock.holder(str(wd))["pid"] == os.getppid()
