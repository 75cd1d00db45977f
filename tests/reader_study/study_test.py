"""reader_study.study: balanced, seeded, opaque, metadata-free studies; sources; errors name the culprit."""
import csv
import os
import re
import sys
import types

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from jaxmedgan.reader_study import db, study
from tests.reader_study import write_pngs


def _items(out):
    conn = db.connect(os.path.join(out, db.DB_NAME))
    try:
        return [dict(r) for r in db.items(conn)]
    finally:
        conn.close()


def _pixels(path):
    with Image.open(path) as img:
        return np.asarray(img)


def _folders(tmp_path, n_real=6, n_synthetic=6):
    write_pngs(tmp_path / "real", n_real, seed=1, prefix="real_patient")
    write_pngs(tmp_path / "synthetic", n_synthetic, seed=2, prefix="fake")
    return str(tmp_path / "real"), str(tmp_path / "synthetic")


def test_study_is_balanced_shuffled_seeded_and_opaque(tmp_path):
    real, synth = _folders(tmp_path)
    s = study.create_study(real, synth, 8, str(tmp_path / "a"), seed=3)
    assert (s.num_real, s.num_synthetic, s.warnings) == (4, 4, [])
    items = _items(s.path)
    assert sorted(i["truth"] for i in items) == ["real"] * 4 + ["synthetic"] * 4
    assert [i["truth"] for i in items] != sorted(i["truth"] for i in items)  # shuffled, not grouped
    files = sorted(os.listdir(os.path.join(s.path, "images")))
    assert files == sorted(i["filename"] for i in items)
    assert all(re.fullmatch(r"[0-9a-f]{16}\.png", f) and f == i + ".png" for f, i in
               zip(files, sorted(i["id"] for i in items)))
    assert sorted(os.listdir(s.path)) == ["images", "study.sqlite"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".reader-study")]  # temp dirs gone
    for it in items:  # lossless copy of the chosen source
        np.testing.assert_array_equal(_pixels(os.path.join(s.path, "images", it["filename"])), _pixels(it["source"]))
        assert os.path.basename(it["source"]).startswith("real_patient" if it["truth"] == "real" else "fake")

    again = _items(study.create_study(real, synth, 8, str(tmp_path / "b"), seed=3).path)
    assert [(i["source"], i["truth"]) for i in again] == [(i["source"], i["truth"]) for i in items]  # seeded
    assert not {i["id"] for i in again} & {i["id"] for i in items}  # ids are random, not derived
    other = _items(study.create_study(real, synth, 8, str(tmp_path / "c"), seed=4).path)
    assert [i["source"] for i in other] != [i["source"] for i in items]


def test_png_metadata_and_names_are_stripped(tmp_path):
    real, synth = _folders(tmp_path, 2, 2)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "real scanner, patient Jane Doe")
    for i in range(2):
        img = Image.open(os.path.join(real, f"real_patient{i}.png"))
        img.save(os.path.join(real, f"real_patient{i}.png"), pnginfo=info, dpi=(300, 300))
    out = study.create_study(real, synth, 4, str(tmp_path / "s")).path
    for name in os.listdir(os.path.join(out, "images")):
        data = open(os.path.join(out, "images", name), "rb").read()
        for marker in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP", b"tIME", b"pHYs", b"scanner", b"real_patient",
                       b"fake"):
            assert marker not in data, (name, marker)
        with Image.open(os.path.join(out, "images", name)) as img:
            assert img.info == {} and img.mode == "L"


def test_labels_from_csv_and_subfolders(tmp_path):
    write_pngs(tmp_path / "real" / "lesion", 2, seed=1)
    write_pngs(tmp_path / "real", 2, seed=3, prefix="top")
    with open(tmp_path / "real" / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "label"], ["top0.png", "normal"], ["lesion/img1.png", "cyst"],
                                 ["not_there.png", "x"]])
    write_pngs(tmp_path / "synthetic", 4, seed=2)
    out = study.create_study(str(tmp_path / "real"), str(tmp_path / "synthetic"), 8, str(tmp_path / "s")).path
    labels = {os.path.relpath(i["source"], tmp_path): i["label"] for i in _items(out)}
    assert labels == {"real/top0.png": "normal", "real/top1.png": None, "real/lesion/img0.png": "lesion",
                      "real/lesion/img1.png": "cyst", **{f"synthetic/img{k}.png": None for k in range(4)}}


def test_synthetic_from_samples_npz(tmp_path):
    real, _ = _folders(tmp_path, 3, 0)
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    os.makedirs(tmp_path / "samples")
    np.savez_compressed(tmp_path / "samples" / "samples.npz", images=images, labels=np.array([0, 2, -1]))
    write_pngs(tmp_path / "samples", 5, seed=9)  # PNGs beside samples.npz are ignored
    out = study.create_study(real, str(tmp_path / "samples"), 6, str(tmp_path / "s")).path
    synth = [i for i in _items(out) if i["truth"] == "synthetic"]
    assert len(synth) == 3
    for it in synth:
        path, index = it["source"].split("#")
        assert path == str(tmp_path / "samples" / "samples.npz")
        assert it["label"] == {"0": "0", "1": "2", "2": None}[index]
        np.testing.assert_array_equal(_pixels(os.path.join(out, "images", it["filename"])), images[int(index), ..., 0])


def test_training_workdir_is_sampled_with_sample_to_dir(tmp_path, monkeypatch):
    real, _ = _folders(tmp_path, 2, 0)
    workdir = tmp_path / "run"
    os.makedirs(workdir / "checkpoints")
    (workdir / "config.json").write_text("{}")
    calls = []

    def fake_sample_to_dir(wd, num, out, *, class_id=None, seed=0):
        calls.append((wd, num, seed))
        os.makedirs(out)
        np.savez_compressed(os.path.join(out, "samples.npz"), images=np.full((num, 8, 8, 1), 7, np.uint8),
                            labels=np.arange(num))
        return out

    import jaxmedgan

    fake = types.ModuleType("jaxmedgan.sampling")
    fake.sample_to_dir = fake_sample_to_dir
    monkeypatch.setitem(sys.modules, "jaxmedgan.sampling", fake)  # no jax import, no checkpoint needed
    monkeypatch.setattr(jaxmedgan, "sampling", fake, raising=False)
    s = study.create_study(real, str(workdir), 4, str(tmp_path / "s"), seed=11, size=8)
    assert calls == [(str(workdir), 2, 11)]
    synth = sorted(i["label"] for i in _items(s.path) if i["truth"] == "synthetic")
    assert synth == ["0", "1"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".reader-study")]


def test_pixel_formats_are_unified_and_size_mismatch_is_flagged(tmp_path):
    os.makedirs(tmp_path / "real")
    Image.fromarray((np.arange(1024, dtype=np.uint16) * 60).reshape(32, 32)).save(tmp_path / "real" / "a.png")
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "real" / "b.png")
    write_pngs(tmp_path / "synthetic", 2, size=16)
    s = study.create_study(str(tmp_path / "real"), str(tmp_path / "synthetic"), 4, str(tmp_path / "s"))
    assert len(s.warnings) == 1 and "sizes differ" in s.warnings[0] and "--size" in s.warnings[0]
    modes = set()
    for it in _items(s.path):
        with Image.open(os.path.join(s.path, "images", it["filename"])) as img:
            modes.add(img.mode)
            if it["source"].endswith("a.png"):
                px = np.asarray(img)
                assert px.min() == 0 and px.max() == 255  # 16-bit stretched to 8 bits
    assert modes == {"RGB"}  # one colour image makes every image RGB

    resized = study.create_study(str(tmp_path / "real"), str(tmp_path / "synthetic"), 4, str(tmp_path / "r"), size=24)
    assert resized.warnings == []
    assert {(i["width"], i["height"]) for i in _items(resized.path)} == {(24, 24)}


def test_errors_name_the_folder_file_or_value_and_leave_nothing(tmp_path):
    real, synth = _folders(tmp_path, 3, 6)
    with pytest.raises(ValueError, match=r"--real '.*real' has 3 images; --num 8 needs 4 real"):
        study.create_study(real, synth, 8, str(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"--synthetic '.*synthetic' has 6 images; --num 14 needs 7"):
        write_pngs(tmp_path / "real", 7, seed=1, prefix="more")
        study.create_study(real, synth, 14, str(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"even number >= 2 \(half real, half synthetic\), got 5"):
        study.create_study(real, synth, 5, str(tmp_path / "s"))
    with pytest.raises(FileNotFoundError, match="--real folder '.*nope'"):
        study.create_study(str(tmp_path / "nope"), synth, 4, str(tmp_path / "s"))
    with pytest.raises(FileNotFoundError, match="--synthetic '.*nope'"):
        study.create_study(real, str(tmp_path / "nope"), 4, str(tmp_path / "s"))

    for name in os.listdir(synth):  # every synthetic file corrupt: whichever is chosen is named
        with open(os.path.join(synth, name), "wb") as f:
            f.write(b"not a png")
    with pytest.raises(ValueError, match=r"Cannot read image .*synthetic/fake\d\.png"):
        study.create_study(real, synth, 4, str(tmp_path / "s"))
    assert not os.path.exists(tmp_path / "s")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".reader-study")]

    os.makedirs(tmp_path / "full")
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="'.*full' exists and is not an empty directory"):
        study.create_study(real, real, 4, str(tmp_path / "full"))
    assert (tmp_path / "full" / "x.txt").read_text() == "keep me"

    (tmp_path / "real" / "labels.csv").write_text("name,class\na.png,x\n")
    with pytest.raises(ValueError, match=r"labels.csv: needs a header with columns 'file' and 'label'"):
        study.create_study(real, real, 4, str(tmp_path / "s"))
    os.makedirs(tmp_path / "badnpz")
    np.savez(tmp_path / "badnpz" / "samples.npz", images=np.zeros((2, 4, 4), np.float32), labels=np.zeros(2))
    os.remove(tmp_path / "real" / "labels.csv")
    with pytest.raises(ValueError, match=r"badnpz/samples.npz: 'images' must be uint8 \[N, H, W, 1\|3\]"):
        study.create_study(real, str(tmp_path / "badnpz"), 4, str(tmp_path / "s"))


def test_empty_existing_out_is_used(tmp_path):
    real, synth = _folders(tmp_path, 2, 2)
    os.makedirs(tmp_path / "empty")
    out = study.create_study(real, synth, 4, str(tmp_path / "empty")).path
    assert len(os.listdir(os.path.join(out, "images"))) == 4
