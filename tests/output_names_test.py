"""Class names in every output of a conditional GAN workdir (grids, `sample`, `export`), and
`export --format png16|dicom` mapping generated images back to native units (HU) through the window."""
import csv
import json
import os
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image

from configs import acgan_liver
from jaxmedgan import export, images, sampling
from jaxmedgan import main as cli
from jaxmedgan.data import datasets, intensity, tfds_builders
from tests.data.readers_test import _write_dicom
from jaxmedgan.trainers import common, gan

NAMES = ["cyst", "metastasis", "hemangioma"]  # phantom-liver, label order


def _read_dicom_native(path) -> tuple[np.ndarray, pydicom.Dataset]:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept), ds


@pytest.fixture(scope="module")
def acgan_workdir(tmp_path_factory):
    """An ACGAN briefly trained (2 steps, 16 px) on the liver phantoms: its dataset.json names the classes."""
    root = tmp_path_factory.mktemp("acgan")
    c = acgan_liver.get_config()
    c.data.data_dir, c.data.image_size = str(root / "data"), 16
    c.model.latent_dim, c.model.g_features, c.model.d_features = 8, 4, 4
    c.train.batch_size, c.train.steps = 8, 2
    c.train.log_every = c.checkpoint.every = c.samples.every = 2
    c.train.eval_every, c.samples.per_row, c.train.quiet = 100, 2, True
    common.fit(c, str(root / "run"), gan.FAMILY)
    return root / "run"


def _native_copy(workdir, dest, class_windows, window=None):
    """A copy of `workdir` whose dataset record claims native intensities (as a DICOM build records them)."""
    shutil.copytree(workdir, dest)
    record = json.load(open(dest / datasets.WORKDIR_RECORD))
    record.update(window=window, intensity={"kind": "dicom", "class_windows": class_windows,
                                            "window_sources": {"class": 1}})
    json.dump(record, open(dest / datasets.WORKDIR_RECORD, "w"))
    return dest


def _rows(out):
    return list(csv.DictReader(open(out / "labels.csv")))


def test_label_rows_writes_each_name_beside_its_row():
    tiles = np.full((6, 16, 16, 1), 128, np.uint8)
    grid = images.grid(tiles, rows=3)
    labelled = images.label_rows(grid, ["cyst", "metastasis", "x"])
    strip_width = labelled.shape[1] - grid.shape[1]
    assert labelled.shape[0] == grid.shape[0] and strip_width > 0 and labelled.dtype == np.uint8
    np.testing.assert_array_equal(labelled[:, strip_width:], grid)  # the images are untouched
    strip = labelled[:, :strip_width, 0]
    bands = [strip[2 + r * 18: 2 + r * 18 + 16] for r in range(3)]
    assert all(b.max() > 0 for b in bands)  # each row has its text
    assert int((bands[1] > 0).sum()) > int((bands[2] > 0).sum())  # the longer name inks more
    rgb = images.label_rows(np.repeat(grid, 3, axis=-1), ["a", "b", "c"])
    assert rgb.shape[-1] == 3 and (rgb[..., 0] == rgb[..., 2]).all()


def test_training_grid_rows_carry_the_class_names(acgan_workdir):
    assert datasets.workdir_record(str(acgan_workdir))["class_names"] == NAMES
    grid = np.asarray(Image.open(acgan_workdir / "samples" / "step_0000002.png"))
    plain_width = 2 * 18 + 2  # 2 columns of 16 px + 2 px gaps
    assert grid.shape[0] == 3 * 18 + 2 and grid.shape[1] > plain_width
    strip = grid[:, :grid.shape[1] - plain_width]
    bands = [strip[2 + r * 18: 2 + r * 18 + 16] for r in range(3)]
    assert all(b.max() > 0 for b in bands)  # not blank
    assert not np.array_equal(bands[0], bands[1]) and not np.array_equal(bands[1], bands[2])


def test_sample_names_files_and_npz_by_class(acgan_workdir, tmp_path):
    out = tmp_path / "s"
    assert cli.main(["jaxmedgan", "sample", "--workdir", str(acgan_workdir), "--num", "6", "--out", str(out)]) == 0
    npz = np.load(out / "samples.npz")
    assert npz["class_names"].tolist() == NAMES
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert pngs == [f"{i:06d}_{NAMES[lab]}.png" for i, lab in enumerate(npz["labels"])]
    # By name or by index: the same draw.
    by_name, by_index = tmp_path / "name", tmp_path / "index"
    assert cli.main(["jaxmedgan", "sample", "--workdir", str(acgan_workdir), "--num", "3", "--out", str(by_name),
                     "--class", "metastasis"]) == 0
    sampling.sample_to_dir(str(acgan_workdir), 3, str(by_index), class_id=1)
    a, b = np.load(by_name / "samples.npz"), np.load(by_index / "samples.npz")
    assert a["labels"].tolist() == b["labels"].tolist() == [1] * 3
    np.testing.assert_array_equal(a["images"], b["images"])
    assert sorted(os.listdir(by_name)) == ["000000_metastasis.png", "000001_metastasis.png",
                                           "000002_metastasis.png", "samples.npz"]


def test_unknown_class_name_fails_in_one_line_naming_the_classes(acgan_workdir, tmp_path, capsys):
    for cmd in (["jaxmedgan", "sample"], ["jaxmedgan", "export"]):
        code = cli.main([*cmd, "--workdir", str(acgan_workdir), "--num", "2", "--out", str(tmp_path / "o"),
                         "--class", "nope"])
        err = capsys.readouterr().err.strip()
        assert code == 1 and "'nope'" in err and "0=cyst, 1=metastasis, 2=hemangioma" in err, err
        assert len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_export_labels_and_manifest_carry_the_class_names(acgan_workdir, tmp_path):
    out = tmp_path / "ds"
    export.export(str(acgan_workdir), 6, str(out), seed=1)
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["label_names"] == manifest["class_names"] == NAMES and manifest["format"] == "png8"
    assert manifest["dataset"] == datasets.workdir_record(str(acgan_workdir))
    assert manifest["dataset"]["source"] == "phantom-liver" and manifest["windows"] is None
    rows = _rows(out)
    assert [r["label_name"] for r in rows] == [NAMES[int(r["label"])] for r in rows]
    # --class metastasis and --class 1 give the same labels (and images).
    by_name, by_index = tmp_path / "name", tmp_path / "index"
    assert export.export_command(["--workdir", str(acgan_workdir), "--num", "3", "--out", str(by_name),
                                  "--class", "metastasis"]) == 0
    export.export(str(acgan_workdir), 3, str(by_index), class_id="1")
    assert [r["label_name"] for r in _rows(by_name)] == [r["label_name"] for r in _rows(by_index)] == ["metastasis"] * 3
    assert json.load(open(by_name / "manifest.json"))["class_name"] == "metastasis"
    for r in _rows(by_name):
        np.testing.assert_array_equal(np.asarray(Image.open(by_name / r["image"])),
                                      np.asarray(Image.open(by_index / r["image"])))


def test_png16_and_dicom_refused_without_native_intensities(acgan_workdir, tmp_path, capsys):
    for fmt in ("png16", "dicom"):  # phantoms: 8-bit display images, no native units
        code = export.export_command(["--workdir", str(acgan_workdir), "--num", "2", "--out", str(tmp_path / fmt),
                                      "--format", fmt])
        err = capsys.readouterr().err.strip()
        assert code == 1 and f"--format {fmt}" in err and "no native intensities" in err and "phantom-liver" in err
        assert len(err.splitlines()) == 1 and not (tmp_path / fmt).exists()
    bare = tmp_path / "bare"  # a workdir trained before dataset.json existed
    shutil.copytree(acgan_workdir, bare)
    os.remove(bare / datasets.WORKDIR_RECORD)
    with pytest.raises(ValueError, match="no dataset.json"):
        export.export(str(bare), 2, str(tmp_path / "x"), fmt="dicom")
    mixed = _native_copy(acgan_workdir, tmp_path / "mixed", {"cyst": {"center": 40.0, "width": 400.0, "invert": False},
                                                             "metastasis": None, "hemangioma": None})
    with pytest.raises(ValueError, match="class 'metastasis'.*differing windows"):
        export.export(str(mixed), 2, str(tmp_path / "x"), fmt="png16", class_id="metastasis")
    export.export(str(mixed), 2, str(tmp_path / "cyst_only"), fmt="png16", class_id="cyst")  # its window is known
    assert not (tmp_path / "x").exists()


def test_png16_and_dicom_exports_map_back_to_native_units(acgan_workdir, tmp_path):
    windows = {"cyst": {"center": 40.0, "width": 400.0, "invert": False},
               "metastasis": {"center": 60.0, "width": 350.0, "invert": False},
               "hemangioma": {"center": 300.0, "width": 1500.0, "invert": True}}
    wd = _native_copy(acgan_workdir, tmp_path / "native", windows)
    config, state, _ = sampling.restore_state(str(wd))
    x, labels = sampling.generate(config, state, gan.FAMILY, 6, None, 5, as_float=True)  # what export draws
    assert x.dtype == np.float32 and x.shape == (6, 16, 16, 1) and np.abs(x).max() <= 1.0
    u8, labels8 = sampling.generate(config, state, gan.FAMILY, 6, None, 5)
    np.testing.assert_array_equal(u8, images.to_uint8(x))  # the uint8 path is unchanged
    np.testing.assert_array_equal(labels8, labels)

    out16, outdcm = tmp_path / "png16", tmp_path / "dicom"
    export.export(str(wd), 6, str(out16), seed=5, fmt="png16")
    assert export.export_command(["--workdir", str(wd), "--num", "6", "--out", str(outdcm), "--seed", "5",
                                  "--format", "dicom"]) == 0
    manifest = json.load(open(out16 / "manifest.json"))
    assert manifest["format"] == "png16" and "u16 / 65535 * width" in manifest["pixel_encoding"]["to_native"]
    assert manifest["windows"]["hemangioma"] == {**windows["hemangioma"], "source": "class"}
    assert manifest["dataset"]["intensity"]["class_windows"] == windows
    rows16, rowsdcm = _rows(out16), _rows(outdcm)
    uids = set()
    for i, (r16, rd) in enumerate(zip(rows16, rowsdcm)):
        name = NAMES[labels[i]]
        assert r16["label_name"] == rd["label_name"] == name and rd["image"] == f"images/{i:06d}.dcm"
        w = windows[name]
        window = intensity.Window(w["center"], w["width"], w["invert"])
        assert float(r16["window_center"]) == w["center"] and int(r16["window_invert"]) == w["invert"]
        want = intensity.from_model_range(x[i, ..., 0], w["center"], w["width"], w["invert"])
        u16 = np.asarray(Image.open(out16 / r16["image"]))
        assert u16.dtype == np.uint16
        np.testing.assert_array_equal(u16, np.rint((x[i, ..., 0].astype(np.float64) + 1) / 2 * 65535))
        np.testing.assert_allclose(export.png16_to_native(u16, window), want, atol=w["width"] / 65535)
        native, ds = _read_dicom_native(outdcm / rd["image"])
        np.testing.assert_allclose(native, want, atol=w["width"] / 65535)
        assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage and ds.ConversionType == "SYN"
        assert ds.PhotometricInterpretation == ("MONOCHROME1" if w["invert"] else "MONOCHROME2")
        assert float(ds.WindowCenter) == w["center"] and float(ds.WindowWidth) == w["width"]
        assert "SYNTHETIC" in ds.ImageComments and name in ds.ImageComments and "SYNTHETIC" in ds.SeriesDescription
        uids.add(ds.SOPInstanceUID)
    assert len(uids) == 6  # one fresh instance UID per image


def test_16_bit_round_trip_within_1_hu(tmp_path):
    """CT DICOMs with known HU -> built dataset (windowed on read to [-1, 1]) -> write_dicom / write_png16
    with the recorded window -> read back: within 1 HU inside the window (also for an inverted class)."""
    rng = np.random.default_rng(0)
    hu = {"liver": rng.integers(-300, 400, (16, 16)), "lung": rng.integers(-1500, 400, (16, 16)),
          "film": rng.integers(-300, 400, (16, 16))}  # film: MONOCHROME1, an inverted window
    for name, values in hu.items():
        _write_dicom(str(tmp_path / "dcm" / name / "0.dcm"), values + 1024, slope=1, intercept=-1024,
                     photometric="MONOCHROME1" if name == "film" else "MONOCHROME2")
    data_dir = tfds_builders.build_dataset("image-folder", str(tmp_path / "built"), image_dir=str(tmp_path / "dcm"),
                                           image_size=16, window=(40., 400.), class_windows="lung=-600/1500")
    info = datasets.read_info(data_dir)
    names, class_windows = info["class_names"], info["intensity"]["class_windows"]
    assert class_windows["lung"]["width"] == 1500 and class_windows["film"]["invert"]
    split = tfds_builders.load_split(data_dir, "image-folder", "train")
    assert len(split) == 3
    for k in range(len(split)):
        example = split[k]
        x, name = np.asarray(example["image"]), names[int(example["label"])]
        assert x.dtype == np.float32 and x.shape == (16, 16, 1)
        w = class_windows[name]
        window = intensity.Window(w["center"], w["width"], w["invert"])
        lo, hi = w["center"] - w["width"] / 2, w["center"] + w["width"] / 2
        inside = (hu[name] > lo) & (hu[name] < hi)
        assert inside.mean() > 0.5, name
        export.write_dicom(str(tmp_path / "out" / f"{name}.dcm"), x, window)
        native, ds = _read_dicom_native(tmp_path / "out" / f"{name}.dcm")
        assert ds.pixel_array.dtype == np.uint16 and ds.Rows == ds.Columns == 16
        assert np.abs(native - hu[name])[inside].max() <= 1.0, name
        export.write_png16(str(tmp_path / "out" / f"{name}.png"), x, window)
        u16 = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        y = u16 / 65535 if not w["invert"] else 1 - u16 / 65535  # the manifest's documented inverse
        assert np.abs(y * w["width"] + lo - hu[name])[inside].max() <= 1.0, name
        np.testing.assert_array_equal(export.png16_to_native(u16, window), y * w["width"] + lo)


def test_writers_refuse_colour_images(tmp_path):
    window = intensity.Window(40.0, 400.0)
    with pytest.raises(ValueError, match=r"single-channel.*\(8, 8, 3\)"):
        export.write_dicom(str(tmp_path / "a.dcm"), np.zeros((8, 8, 3), np.float32), window)
    with pytest.raises(ValueError, match="single-channel"):
        export.write_png16(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.float32), window)
