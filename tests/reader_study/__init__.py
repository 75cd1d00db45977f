"""Tests for jaxmedgan.reader_study; shared helpers below (tiny PNG folders, studies, answers)."""
from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image


def write_pngs(folder, n: int, *, size: int = 16, seed: int = 0, prefix: str = "img") -> list[str]:
    """Writes n random 8-bit gray size x size PNGs named PREFIX<i>.png; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"{prefix}{i}.png")
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def make_study(tmp_path, *, num: int = 4, n_real: int = 6, n_synthetic: int = 6, seed: int = 0) -> str:
    """A study of `num` images from fresh real / synthetic PNG folders under tmp_path; returns its folder."""
    from jaxmedgan.reader_study import study

    write_pngs(tmp_path / "real", n_real, seed=1, prefix="real_patient")
    write_pngs(tmp_path / "synthetic", n_synthetic, seed=2, prefix="fake")
    out = str(tmp_path / "study")
    study.create_study(str(tmp_path / "real"), str(tmp_path / "synthetic"), num, out, seed=seed)
    return out


def truths(study_dir: str) -> dict[str, str]:
    """{item id: 'real' | 'synthetic'} read straight from the database."""
    from jaxmedgan.reader_study import db

    conn = db.connect(os.path.join(study_dir, db.DB_NAME))
    try:
        return {r["id"]: r["truth"] for r in db.items(conn)}
    finally:
        conn.close()


def start_reader(client, name: str) -> str:
    """Posts the name form; returns the reader's token from the redirect."""
    resp = client.post("/start", data={"name": name})
    assert resp.status_code == 303, resp.data
    m = re.search(r"/r/([A-Za-z0-9_-]{43})$", resp.headers["Location"])
    assert m, resp.headers["Location"]
    return m.group(1)


def current_item(client, token: str) -> str | None:
    """The item id shown on the reader's page, or None on the 'done' page."""
    resp = client.get(f"/r/{token}")
    assert resp.status_code == 200
    m = re.search(rb'name="item_id" value="([0-9a-f]{16})"', resp.data)
    return m.group(1).decode() if m else None
