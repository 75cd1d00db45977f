"""brain_mri: MNI152 label maps (classes, anatomy), seeded tumours, split, NIfTI readers."""
import os

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from jaxmedgan.data import brain_mri as bm
from jaxmedgan.data import paired

SIZE = 32


@pytest.fixture(scope="module")
def mni():
    return bm.mni_slices(SIZE)


def test_mni_label_maps_have_all_tissue_classes_and_wm_lies_inside_the_gm_shell(mni):
    _, tissue, _ = mni
    labels = bm.tissue_labels(tissue)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    brain = labels > 0
    depth = np.stack([ndimage.distance_transform_edt(b) for b in brain])  # px to the background
    assert depth[labels == bm.WM].mean() > 1.3 * depth[labels == bm.GM].mean()
    # WM touching the background (4-neighbourhood) is rare: GM (or CSF) wraps it.
    outside = np.stack([ndimage.binary_dilation(~b) for b in brain])
    assert np.mean(outside[labels == bm.WM]) < 0.05
    assert np.mean(outside[labels == bm.GM]) > 0.15


def test_train_and_test_slices_are_disjoint_with_a_gap(mni):
    _, tissue, _ = mni
    train, test = bm.split_slices((bm.tissue_labels(tissue) > 0).sum(axis=(1, 2)))
    assert len(train) > 2 * len(test) > 0
    assert np.abs(train[:, None] - test[None, :]).min() > 2  # gap = 2 slices (4 mm) each side


def test_tumour_labels_only_where_inserted_and_t1_altered_as_specified(mni):
    images, tissue, _ = mni
    z = 45
    healthy = bm.tissue_labels(tissue[z])
    img, lab, ok = bm.insert_tumour(images[z], tissue[z], np.random.default_rng([7, z, 0]))
    assert ok and {bm.CORE, bm.OEDEMA} <= set(np.unique(lab))
    tumour = lab >= bm.CORE
    assert ndimage.label(tumour)[1] == 1  # one lesion
    # Mass effect + lesion change the map only near the lesion: nothing beyond 2.5 oedema radii.
    r_max = 0.10 * SIZE * 2.2 * 1.3
    far = ndimage.distance_transform_edt(~tumour) > 2.5 * r_max
    assert np.array_equal(lab[far], healthy[far])
    assert not (lab[~tumour] >= bm.CORE).any() and set(np.unique(healthy)) <= {0, 1, 2, 3}
    # Oedema is hypointense versus the same tissue elsewhere; the enhancing rim is brighter than WM.
    wm_mean = images[z][healthy == bm.WM].mean()
    assert img[lab == bm.OEDEMA].mean() < images[z][np.isin(healthy, (bm.GM, bm.WM))].mean()
    assert img[lab == bm.CORE].max() > wm_mean
    # Same seed -> same tumour; another seed -> another one.
    again = bm.insert_tumour(images[z], tissue[z], np.random.default_rng([7, z, 0]))
    np.testing.assert_array_equal(again[1], lab)
    other = bm.insert_tumour(images[z], tissue[z], np.random.default_rng([8, z, 0]))
    assert not np.array_equal(other[1], lab)


def test_mni_pairs_healthy_slices_have_no_tumour_and_images_are_normalised(mni):
    pairs = bm.mni_pairs(SIZE, "test", variants=1)
    assert pairs["image"].shape[1:] == (SIZE, SIZE, 1) and pairs["map"].dtype == np.uint8
    assert pairs["image"].min() >= -1 and pairs["image"].max() <= 1
    has = (pairs["map"] >= bm.CORE).any(axis=(1, 2))
    np.testing.assert_array_equal(has, pairs["tumour"])
    assert has.sum() == len(has) // 2  # one healthy + one tumour version per slice, all inserted
    assert set(np.unique(pairs["map"])) == set(range(bm.NUM_CLASSES))
    train = bm.mni_pairs(SIZE, "train", variants=1)
    assert not set(train["z"]) & set(pairs["z"])


def test_synthetic_maps_are_new_tumours_on_training_slices(mni):
    maps = bm.synthetic_maps(SIZE, 6, seed=5)
    assert maps.shape == (6, SIZE, SIZE) and maps.dtype == np.uint8
    assert (maps >= bm.CORE).any(axis=(1, 2)).mean() >= 0.5
    np.testing.assert_array_equal(maps, bm.synthetic_maps(SIZE, 6, seed=5))
    train = bm.mni_pairs(SIZE, "train", variants=1)["map"]
    assert not any(np.array_equal(m, t) for m in maps for t in train if (m >= bm.CORE).any())


# ---------------------------------------------------------------------------------------------
# NIfTI readers on generated files.

def _volume(shape=(20, 24, 10), seed=0):
    """A T1-like ellipsoid (CSF < GM < WM shells) and a BraTS seg with labels 1, 2, 4."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x**2 + y**2 + (z * 0.8) ** 2)
    t1 = np.where(r < 0.9, 300.0, 0.0) + np.where(r < 0.75, 300.0, 0) + np.where(r < 0.5, 300.0, 0)
    t1 = np.where(r < 0.9, t1 + rng.normal(0, 5, shape), 0.0).astype(np.float32)
    seg = np.zeros(shape, np.int16)
    d = np.sqrt((x - 0.3) ** 2 + y**2 + z**2)
    seg[(d < 0.35) & (r < 0.9)] = 2
    seg[d < 0.2] = 1
    seg[(d >= 0.12) & (d < 0.2)] = 4
    return t1, seg


def _save(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def test_brats_folder_reader_maps_labels_and_normalises_per_volume(tmp_path):
    for i in range(3):
        t1, seg = _volume(seed=i)
        case = f"BraTS_{i:03d}"
        _save(str(tmp_path / case / f"{case}_t1.nii.gz"), t1 * (i + 1))  # per-volume scale differs
        _save(str(tmp_path / case / f"{case}_seg.nii.gz"), seg)
    cases = bm.find_brats_cases(str(tmp_path))
    assert [c[0] for c in cases] == ["BraTS_000", "BraTS_001", "BraTS_002"]
    out = bm.load_cases(cases, 16)
    assert out["image"].shape[1:] == (16, 16, 1) and out["map"].shape[1:] == (16, 16)
    assert out["image"].min() >= -1 and out["image"].max() <= 1
    assert set(np.unique(out["map"])) == set(range(6))  # tissue by multi-Otsu + core + oedema
    # Per-volume normalisation removes the x1/x2/x3 scanner scale: the cases' slices match.
    per_case = [out["image"][out["case"] == f"BraTS_{i:03d}"] for i in range(3)]
    np.testing.assert_allclose(per_case[0].mean(), per_case[2].mean(), atol=0.05)
    # Healthy tissue by multi-Otsu on T1: CSF darkest, WM brightest.
    means = [out["image"][..., 0][out["map"] == k].mean() for k in (bm.CSF, bm.GM, bm.WM)]
    assert means[0] < means[1] < means[2]

    from configs import pix2pix_brain

    cfg = pix2pix_brain.get_config()
    cfg.data.source, cfg.data.image_dir, cfg.data.image_size = "brats-folder", str(tmp_path), 16
    train, test = paired.load(cfg)
    assert len(train) + len(test["image"]) == len(out["image"])
    assert len(test["image"]) in {len(p) for p in per_case}  # one whole case held out


def test_nifti_errors_name_the_file(tmp_path):
    t1, seg = _volume()
    _save(str(tmp_path / "a" / "X_t1.nii.gz"), t1)
    with pytest.raises(ValueError, match=r"X_t1\.nii\.gz: no segmentation.*X_seg\.nii\.gz"):
        bm.find_brats_cases(str(tmp_path / "a"))
    _save(str(tmp_path / "a" / "X_seg.nii.gz"), seg[:, :, :5])
    with pytest.raises(ValueError, match=r"X_seg\.nii\.gz: shape \(20, 24, 5\)"):
        bm.load_cases(bm.find_brats_cases(str(tmp_path / "a")), 16)
    bad = seg.copy()
    bad[0, 0, 0] = 7
    _save(str(tmp_path / "a" / "X_seg.nii.gz"), bad)
    with pytest.raises(ValueError, match=r"X_seg\.nii\.gz: label values \[7\] have no mapping"):
        bm.load_cases(bm.find_brats_cases(str(tmp_path / "a")), 16)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="junk.nii.gz: cannot read NIfTI"):
        bm.read_nifti(str(tmp_path / "junk.nii.gz"))


def test_nifti_folder_pairs_use_label_values_as_classes(tmp_path):
    t1, _ = _volume()
    labels = np.zeros(t1.shape, np.uint8)
    labels[t1 > 0] = 2
    labels[t1 > 700] = 3
    for name in ("p1", "p2"):
        _save(str(tmp_path / "images" / f"{name}.nii.gz"), t1)
        _save(str(tmp_path / "labels" / f"{name}.nii.gz"), labels)
    pairs = bm.find_nifti_pairs(str(tmp_path))
    out = bm.load_cases(pairs, 16, mapping=None)
    assert set(np.unique(out["map"])) == {0, 2, 3}
    _save(str(tmp_path / "images" / "p3.nii"), t1)
    with pytest.raises(ValueError, match=r"unmatched: \['p3'\]"):
        bm.find_nifti_pairs(str(tmp_path))
