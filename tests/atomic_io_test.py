"""Atomic writers: a reader sees the old file or folder or the complete new one, never a torn one."""
import os
import stat

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


def test_write_file_keeps_the_old_file_on_failure_and_sets_the_mode(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_io.write_file(str(path), lambda tmp: open(tmp, "wb").write(b"old"))
    old_umask = os.umask(0o022)
    try:
        atomic_io.write_file(str(path), lambda tmp: open(tmp, "wb").write(b"new"))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # 0o666 less the umask: shareable exports
        secret = tmp_path / "secret.json"
        atomic_io.write_file(str(secret), lambda tmp: open(tmp, "w").write("{}"), mode=0o600)
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    finally:
        os.umask(old_umask)

    def torn(tmp):
        open(tmp, "wb").write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_io.write_file(str(path), torn)
    assert path.read_bytes() == b"new" and sorted(os.listdir(path.parent)) == ["f.bin"]
