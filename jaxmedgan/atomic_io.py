"""Files written so a crash never leaves half of one: the atomic writers (text, JSON, npz, folders) and a JSON reader."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from typing import Callable

import numpy as np


def write_file(path: str, write: Callable[[str], None], *, suffix: str = "", mode: int = 0o666) -> str:
    """Calls write(tmp) on a new temporary file in `path`'s folder (created), then renames it to
    `path`, so a reader sees the old file or the new one, never a torn one; on any failure the
    temporary file is removed and `path` is left as it was. The file gets `mode` less the umask
    (0o600 for secrets). `suffix`: the temporary name's ending, for writers that read it (".npz").
    Returns path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_dir(path: str, write: Callable[[str], None], *, overwrite: bool = False) -> str:
    """Calls write(tmp) on a temporary sibling folder of `path`, then renames it to `path`, so a
    reader sees the old folder or the complete new one; on any failure the temporary folder is
    removed. An existing `path` is replaced when empty, or whatever it holds with overwrite=True
    (OSError otherwise). Creates the parent folder. Returns path."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(path)) + "-", dir=parent)
    try:
        write(tmp)
        if os.path.isdir(path):
            shutil.rmtree(path) if overwrite else os.rmdir(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_text(path: str, text: str) -> str:
    """Writes `text` (UTF-8) to `path` through a temporary file in the same folder and a rename, so a
    reader sees the old file or the new one, never a torn one; creates the folder. Returns path."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return write_file(path, write)


def write_npz(path: str, arrays: dict, *, compressed: bool = True, mode: int = 0o666) -> str:
    """np.savez(_compressed) of `arrays` to `path` (ending in .npz) through a temporary file in the
    same folder and a rename, as `write_text`; creates the folder; `mode` as `write_file`. Returns path."""
    save = np.savez_compressed if compressed else np.savez
    return write_file(path, lambda tmp: save(tmp, **arrays), suffix=".npz", mode=mode)


def write_json(path: str, obj, **dump_kwargs) -> str:
    """`write_text` of json.dumps(obj, **dump_kwargs)."""
    return write_text(path, json.dumps(obj, **dump_kwargs))


def read_json(path: str):
    """The JSON value in `path`, or None when there is no such file."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
