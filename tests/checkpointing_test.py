"""checkpointing: manifests after finalisation; corrupt checkpoints moved aside; fallback to a verified one."""
import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmedgan import checkpointing


def _state(value):
    return {"w": jnp.full((64,), value, jnp.float32), "b": jnp.arange(8, dtype=jnp.float32) * value}


def _saved(tmp_path, steps=(1, 2), async_save=True, manifests=True):
    config = ml_collections.ConfigDict({"seed": 0})
    mngr = checkpointing.manager(str(tmp_path), max_to_keep=5, async_save=async_save)
    for s in steps:
        checkpointing.save(mngr, s, _state(float(s)), config)
    checkpointing.finalize(mngr)
    if not manifests:
        for s in steps:
            os.remove(tmp_path / "checkpoints" / str(s) / checkpointing.MANIFEST_FILE)
    return mngr


def _biggest_file(step_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs
             if f != checkpointing.MANIFEST_FILE]
    return max(files, key=os.path.getsize)


def _restore(tmp_path):
    mngr = checkpointing.manager(str(tmp_path), async_save=False)
    return checkpointing.restore_latest(mngr, checkpointing.abstract_like(_state(0.0)))


@pytest.mark.parametrize("async_save", [True, False])
def test_every_finished_step_gets_a_manifest_that_verifies(tmp_path, async_save):
    mngr = _saved(tmp_path, async_save=async_save)
    for s in (1, 2):
        manifest = json.load(open(tmp_path / "checkpoints" / str(s) / checkpointing.MANIFEST_FILE))["files"]
        assert any(k.startswith("state/") for k in manifest), manifest
        assert checkpointing.verify(mngr.directory / str(s)) is None
    state, step = _restore(tmp_path)
    assert step == 2 and float(state["w"][0]) == 2.0


@pytest.mark.parametrize("fault", ["same_size", "truncated"])
def test_corrupt_latest_is_moved_aside_and_the_previous_restored(tmp_path, fault, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("jaxmedgan"), "propagate", True)  # main's CLI logging turns it off
    mngr = _saved(tmp_path)
    path = _biggest_file(tmp_path / "checkpoints" / "2")
    data = bytearray(open(path, "rb").read())
    if fault == "same_size":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    open(path, "wb").write(bytes(data))
    assert checkpointing.verify(mngr.directory / "2") is not None
    assert checkpointing.newest_verified_step(mngr) == 1  # what the NaN stop names
    state, step = _restore(tmp_path)
    assert step == 1 and float(state["w"][0]) == 1.0
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
    moved = os.listdir(tmp_path / checkpointing.CORRUPT_DIR)
    assert len(moved) == 1 and moved[0].startswith("2-")  # kept, never deleted
    assert "Checkpoint step 2" in caplog.text and "moved aside" in caplog.text


def test_without_manifest_an_unrestorable_checkpoint_falls_back_too(tmp_path):
    _saved(tmp_path, manifests=False)
    for root, _, files in os.walk(tmp_path / "checkpoints" / "2" / "state"):
        for name in files:  # as a disk-full or killed copy leaves them
            path = os.path.join(root, name)
            open(path, "wb").write(open(path, "rb").read()[:10])
    _, step = _restore(tmp_path)
    assert step == 1


def test_when_none_verifies_the_error_says_so_and_keeps_them(tmp_path):
    _saved(tmp_path)
    for s in (1, 2):
        path = _biggest_file(tmp_path / "checkpoints" / str(s))
        open(path, "ab").write(b"x")
    with pytest.raises(checkpointing.CorruptCheckpointError, match=r"No checkpoint .* verifies.*step 2.*step 1"):
        _restore(tmp_path)
    assert len(os.listdir(tmp_path / checkpointing.CORRUPT_DIR)) == 2


def test_intact_checkpoint_of_another_model_is_not_called_corrupt(tmp_path):
    _saved(tmp_path, steps=(1,))
    mngr = checkpointing.manager(str(tmp_path), async_save=False)
    other = checkpointing.abstract_like({"w": jnp.zeros((32,)), "b": jnp.zeros((8,))})
    with pytest.raises(ValueError, match="matches its checksums but does not fit this model"):
        checkpointing.restore_latest(mngr, other)
    assert os.listdir(tmp_path / "checkpoints") == ["1"]


def test_a_live_writer_makes_readers_skip_rather_than_move(tmp_path):
    _saved(tmp_path)
    path = _biggest_file(tmp_path / "checkpoints" / "2")
    open(path, "ab").write(b"x")
    mngr = checkpointing.manager(str(tmp_path), async_save=False)
    _, step = checkpointing.restore_latest(mngr, checkpointing.abstract_like(_state(0.0)), may_move=lambda: False)
    assert step == 1 and sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
