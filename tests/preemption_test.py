"""SIGTERM / SIGINT: a real process is signalled; it saves and exits, and a rerun matches an uninterrupted run."""
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxmedgan import checkpointing, metric_writers
from jaxmedgan import main as cli
from tests.trainers.gan_train_test import CONFIG, REPO, _final_state, tiny_overrides

WAITER = """
import sys, time
from jaxmedgan import preemption
with preemption.StopOnSignal() as stop:
    print("ready", flush=True)
    while stop.requested is None:
        time.sleep(0.01)
    print("requested", stop.requested, flush=True)
    time.sleep(60)  # a long save: a second Ctrl-C must not wait for it
"""


def test_first_signal_is_a_request_and_a_second_ctrl_c_aborts_at_once():
    proc = subprocess.Popen([sys.executable, "-c", WAITER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().split() == ["requested", str(int(signal.SIGINT))]
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 128 + signal.SIGINT and time.time() - t0 < 10
    err = proc.stderr.read()
    assert "finishing this step" in err and "aborting now" in err and "Traceback" not in err


@pytest.mark.slow  # three tiny trainings (~40 s on 2 cores); CI runs it after the default suite
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_at_a_random_step_then_rerun_matches_uninterrupted_run(tmp_path, sig):
    dd, steps = tmp_path / "data", 14
    # checkpoint.every > steps: the only mid-run checkpoint is the one the signal makes.
    over = [*tiny_overrides(dd, steps=steps, every=1), "--config.checkpoint.every=1000",
            "--config.samples.every=1000", "--config.train.eval_every=1000"]
    full = tmp_path / "full"
    assert cli.main(["jaxmedgan", "train", "--config", CONFIG, "--workdir", str(full), *over]) == 0

    at = random.randint(2, steps - 4)  # a step reached with >= 2 steps to spare
    wd = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "jaxmedgan.main", "train", "--config", CONFIG, "--workdir", str(wd), *over]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(wd / "metrics.jsonl") and sum(
                "d_loss" in r for r in metric_writers.read_jsonl(wd / "metrics.jsonl")) >= at:
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + sig, (at, err[-2000:])
    last_line = err.strip().splitlines()[-1]
    assert f"Stopped by {signal.Signals(sig).name} after step" in last_line and "Traceback" not in err, err[-2000:]
    saved = [int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit()]
    assert len(saved) == 1 and at <= saved[0] < steps, (at, saved)
    assert checkpointing.verify(wd / "checkpoints" / str(saved[0])) is None
    assert os.path.exists(wd / "checkpoints" / str(saved[0]) / checkpointing.MANIFEST_FILE)
    logged = [r["step"] for r in metric_writers.read_jsonl(wd / "metrics.jsonl") if "d_loss" in r]
    assert logged == list(range(1, saved[0] + 1))  # metrics flushed up to the saved step
    assert not os.path.exists(wd / ".lock")

    assert cli.main(["jaxmedgan", "train", "--config", CONFIG, "--workdir", str(wd), *over]) == 0
    step_a, a = _final_state(full)
    step_b, b = _final_state(wd)
    assert step_a == step_b == steps
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=f"{jax.tree_util.keystr(path)} (signal at step {at})")
