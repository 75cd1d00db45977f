"""The one training loop on a toy step: cadence of logs, periodic work and saves; NaN stop; signals."""
import itertools
import signal

import numpy as np
import pytest

from jaxmedgan import preemption
from jaxmedgan.trainers import loop


def _toy_step(state, batch, step):
    """state: running sum; metrics: the batch and, every other step, an extra key."""
    metrics = {"loss": np.float32(batch)}
    if step % 2:
        metrics["odd"] = np.float32(step)
    return state + batch, metrics


def _run(total=6, start=0, stop=None, batches=None, **kw):
    published, saved, periodic_calls = [], [], []

    def publish(step, scalars):
        published.append((step, dict(scalars)))
        return scalars

    state = loop.run(0, _toy_step, iter(batches or itertools.count(1)), start=start, total=total, log_every=2,
                     save_every=3, publish=publish, save=lambda done, s: saved.append((done, s)), workdir="W",
                     images_per_step=4, desc="toy", quiet=True, stop=stop,
                     periodic=[loop.Periodic(4, lambda done, s: periodic_calls.append(done) or {"eval/x": s})],
                     **kw)
    return state, published, saved, periodic_calls


def test_logs_saves_and_periodic_work_follow_their_cadence_and_the_last_step():
    state, published, saved, periodic = _run(prepare=lambda b: 10 * b, log_scalars=lambda done: {"extra": done})
    assert state == 10 * sum(range(1, 7))
    logs = [(step, s) for step, s in published if "loss" in s]
    assert [step for step, _ in logs] == [2, 3, 4, 6]  # every 2, and at a save (3, 6)
    assert logs[0][1]["loss"] == pytest.approx(15.0) and logs[0][1]["odd"] == pytest.approx(1.0)  # means
    assert logs[1][1]["loss"] == pytest.approx(30.0) and "odd" not in logs[1][1]  # step index 2 is even
    assert all(s["extra"] == step and s["images_per_sec"] == pytest.approx(4 * s["steps_per_sec"])
               for step, s in logs)
    assert saved == [(3, 60), (6, 210)] and periodic == [4, 6]
    assert [s["eval/x"] for step, s in published if "eval/x" in s] == [100, 210]


def test_resumes_from_start_and_in_memory_runs_save_nothing():
    state, published, saved, _ = _run(start=4, batches=[5, 6])
    assert state == 11 and saved == [(6, 11)]
    published.clear()
    state = loop.run(0, _toy_step, iter([1, 2]), start=0, total=2, log_every=1, save_every=1,
                     publish=lambda step, s: published.append(step) or s, save=None, workdir=None,
                     images_per_step=1, desc="toy", quiet=True)
    assert state == 3 and published == [1, 2]


def test_a_non_finite_metric_stops_and_names_the_last_good_checkpoint():
    with pytest.raises(loop.NonFiniteLossError, match=r"'loss': nan.*step 4.*last good checkpoint is step 3 in W"):
        _run(batches=[1, 1, 1, float("nan"), 1, 1], newest_verified=lambda: 3)
    with pytest.raises(FloatingPointError, match="nothing was saved"):
        loop.check_finite(1, {"loss": float("inf")}, None, None)
    loop.check_finite(1, {"loss": 1.0}, None, None)  # finite: no error


def test_a_signal_saves_after_the_step_and_raises_preempted():
    class StopAfter:
        def __init__(self, n):
            self.calls, self.n = 0, n

        def stop_now(self):
            self.calls += 1
            return signal.SIGTERM if self.calls == self.n else None

    with pytest.raises(preemption.Preempted, match=r"SIGTERM after step 2.*W/checkpoints/2") as e:
        _run(stop=StopAfter(2))
    assert e.value.exit_code == 128 + signal.SIGTERM


def test_start_state_inits_without_a_manager():
    assert loop.start_state(None, None, None, lambda: "fresh") == ("fresh", 0)


def test_mean_metrics_averages_each_key_over_the_steps_that_reported_it():
    assert loop.mean_metrics([{"a": 1.0}, {"a": 3.0, "b": 2.0}]) == {"a": 2.0, "b": 2.0}
