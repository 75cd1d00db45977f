"""Atomic writers: a reader sees the old file or folder or the complete new one, never a torn one."""
import os

import numpy as np
import pytest

from jaxmedgan import atomic_io


def test_write_dir_replaces_only_when_complete(tmp_path):
    out = tmp_path / "out"

    def write(folder, text="new"):
        (open(os.path.join(folder, "a.txt"), "w")).write(text)

    atomic_io.write_dir(str(out), write)
    assert (out / "a.txt").read_text() == "new"

    def torn(folder):
        write(folder, "half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_io.write_dir(str(out), torn, overwrite=True)
    assert (out / "a.txt").read_text() == "new"  # the old folder stands
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary folder left behind
    with pytest.raises(OSError):  # a non-empty folder is replaced only with overwrite=True
        atomic_io.write_dir(str(out), lambda f: write(f, "other"))
    atomic_io.write_dir(str(out), lambda f: write(f, "other"), overwrite=True)
    assert (out / "a.txt").read_text() == "other"


def test_write_npz_and_text_leave_no_torn_file(tmp_path):
    path = tmp_path / "x.npz"
    atomic_io.write_npz(str(path), {"a": np.arange(3)})
    np.testing.assert_array_equal(np.load(path)["a"], np.arange(3))
    atomic_io.write_json(str(tmp_path / "j.json"), {"k": 1})
    assert atomic_io.read_json(str(tmp_path / "j.json")) == {"k": 1}
    assert atomic_io.read_json(str(tmp_path / "missing.json")) is None
