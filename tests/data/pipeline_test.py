"""Tests for jaxmedgan/data/pipeline.py: batch k = f(seed, k), exact resume, per-host sharding."""

import itertools

import numpy as np
import pytest

from jaxmedgan.privacy import secret as dp_secret
from jaxmedgan.data import phantoms
from jaxmedgan.data import pipeline

_N = 24  # examples in the toy source; label = unique example id


def _source(n: int = _N, size: int = 8) -> pipeline.ArraySource:
    """uint8 images [n, size, size, 1] whose pixels are a ramp plus the id; label = id."""
    ramp = np.arange(size * size, dtype=np.int64).reshape(size, size, 1)
    images = ((ramp[None] + 7 * np.arange(n)[:, None, None, None]) % 256).astype(np.uint8)
    return pipeline.ArraySource(images, np.arange(n, dtype=np.int32))


def _ds(seed: int = 0, augment: bool = True, batch: int = 4, index: int = 0, count: int = 1, source=None):
    """train_dataset over the toy source."""
    return pipeline.train_dataset(_source() if source is None else source, global_batch_size=batch,
                                  seed=seed, augment=augment, process_index=index, process_count=count)


def _assert_batches_equal(a: dict, b: dict) -> None:
    """Exact equality of two batches."""
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_batch_shapes_dtypes_and_range():
    batch = _ds(batch=6)[3]
    assert batch["image"].shape == (6, 8, 8, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (6,) and batch["label"].dtype == np.int32
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0


def test_batches_deterministic_by_seed_and_index():
    a, b, c = _ds(seed=1), _ds(seed=1), _ds(seed=2)
    for k in (0, 5, 123):
        _assert_batches_equal(a[k], b[k])
    assert not all(np.array_equal(a[k]["label"], c[k]["label"]) for k in range(6))
    assert not np.array_equal(a[0]["image"], a[6]["image"])


def test_iterate_matches_random_access_and_resume_is_exact():
    ds = _ds(seed=3, augment=True)
    uninterrupted = list(itertools.islice(pipeline.iterate(ds, 0), 10))
    for k, batch in enumerate(uninterrupted):
        _assert_batches_equal(batch, ds[k])
    # A "restarted" run rebuilds the dataset from config and resumes at step 6.
    resumed = list(itertools.islice(pipeline.iterate(_ds(seed=3, augment=True), 6), 4))
    for got, want in zip(resumed, uninterrupted[6:]):
        _assert_batches_equal(got, want)
    far = next(pipeline.iterate(ds, 10**9))  # Random access: no need to replay 10**9 steps.
    _assert_batches_equal(far, ds[10**9])


def test_each_epoch_is_a_permutation_reshuffled_per_epoch():
    ds = _ds(seed=4, augment=False, batch=4)
    steps_per_epoch = _N // 4
    epoch0 = np.concatenate([ds[k]["label"] for k in range(steps_per_epoch)])
    epoch1 = np.concatenate([ds[k]["label"] for k in range(steps_per_epoch, 2 * steps_per_epoch)])
    np.testing.assert_array_equal(np.sort(epoch0), np.arange(_N))
    np.testing.assert_array_equal(np.sort(epoch1), np.arange(_N))
    assert not np.array_equal(epoch0, epoch1)
    assert not np.array_equal(epoch0, np.arange(_N))


def test_per_host_shards_are_disjoint_and_cover_each_epoch():
    hosts = [_ds(seed=5, batch=4, index=p, count=2) for p in range(2)]
    single = _ds(seed=5, batch=4, index=0, count=1)
    steps_per_epoch = _N // 4
    seen = {0: [], 1: []}
    for k in range(steps_per_epoch):
        b0, b1 = hosts[0][k], hosts[1][k]
        assert b0["label"].shape == (2,) and b0["image"].shape == (2, 8, 8, 1)
        assert not set(b0["label"]) & set(b1["label"])
        seen[0].extend(b0["label"])
        seen[1].extend(b1["label"])
        # The global batch (and every augmented image in it) does not depend on the process count.
        g = single[k]
        order = np.argsort(g["label"])
        both_labels = np.concatenate([b0["label"], b1["label"]])
        both_images = np.concatenate([b0["image"], b1["image"]])
        o2 = np.argsort(both_labels)
        np.testing.assert_array_equal(both_labels[o2], g["label"][order])
        np.testing.assert_array_equal(both_images[o2], g["image"][order])
    assert not set(seen[0]) & set(seen[1])
    np.testing.assert_array_equal(np.sort(seen[0] + seen[1]), np.arange(_N))


def test_augment_off_returns_exact_source_images():
    source = _source()
    ds = _ds(seed=6, augment=False, source=source)
    for k in range(3):
        batch = ds[k]
        for image, label in zip(batch["image"], batch["label"]):
            expected = source[int(label)]["image"].astype(np.float32) / 127.5 - 1.0
            np.testing.assert_array_equal(image, expected)
    floats = pipeline.ArraySource(*phantoms.generate((2, 2, 2), seed=0))
    batch = _ds(seed=0, augment=False, batch=6, source=floats)[0]
    for image, label in zip(batch["image"], batch["label"]):
        assert any(np.array_equal(image, floats[i]["image"]) for i in range(6) if floats[i]["label"] == label)


def test_augment_on_changes_images_but_not_labels():
    source = _source()
    batch = _ds(seed=7, augment=True, source=source)[0]
    plain = _ds(seed=7, augment=False, source=source)[0]
    np.testing.assert_array_equal(batch["label"], plain["label"])
    assert not np.array_equal(batch["image"], plain["image"])


def test_uint8_conversion_matches_tfds_builders():
    from jaxmedgan.data import tfds_builders

    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    out = pipeline.to_model_example({"image": u8, "label": 3})
    np.testing.assert_array_equal(out["image"], tfds_builders.from_uint8(u8))
    assert out["label"].dtype == np.int32


def test_tfds_phantom_source_end_to_end(tmp_path):
    from jaxmedgan.data import tfds_builders

    data_dir = tfds_builders.build_dataset("phantom-liver", str(tmp_path),
                                           phantom_counts=((2, 2, 2), (1, 1, 1)))
    source = tfds_builders.load_split(data_dir, "phantom-liver", "train")
    ds = pipeline.train_dataset(source, global_batch_size=4, seed=0, augment=True, process_index=1,
                                process_count=2)
    batches = list(itertools.islice(pipeline.iterate(ds, 0), 3))
    for batch in batches:
        assert batch["image"].shape == (2, 64, 64, 1) and batch["image"].dtype == np.float32
        assert batch["label"].dtype == np.int32 and set(batch["label"]) <= {0, 1, 2}
    _assert_batches_equal(batches[2], ds[2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch": 5, "count": 2}, "not divisible by process_count=2"),
        ({"index": 2, "count": 2}, r"process_index=2 must be in \[0, process_count=2\)"),
        ({"batch": 0}, "global_batch_size must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _ds(**kwargs)


def test_bad_sources_and_start_step_raise():
    with pytest.raises(ValueError, match="empty"):
        _ds(source=pipeline.ArraySource(np.zeros((0, 8, 8, 1), np.uint8), np.zeros((0,), np.int32)))
    with pytest.raises(ValueError, match="labels"):
        pipeline.ArraySource(np.zeros((3, 8, 8, 1), np.uint8), np.zeros((2,), np.int32))
    with pytest.raises(ValueError, match="'image' must be uint8 or float"):
        pipeline.to_model_example({"image": np.zeros((2, 2, 1), np.int16), "label": 0})
    with pytest.raises(ValueError, match="start_step"):
        pipeline.iterate(_ds(), -1)


def test_poisson_dataset_is_padded_masked_deterministic_and_split_over_hosts():
    images = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1) / 40
    src = pipeline.ArraySource(images, np.arange(40) % 3)
    kw = dict(sampling_rate=0.25, max_batch_size=24, secret=dp_secret.from_seed(3), seed=3, augment=False)
    ds = pipeline.poisson_train_dataset(src, process_index=0, process_count=1, **kw)
    sizes = []
    for k in range(200):
        b = ds[k]
        assert b["image"].shape == (24, 1, 1, 1) and b["mask"].shape == (24,)
        n = int(b["mask"].sum())
        sizes.append(n)
        chosen = b["image"][:n, 0, 0, 0]
        assert len(set(chosen.tolist())) == n  # no example twice in one Poisson batch
        assert b["mask"][:n].all() and not b["mask"][n:].any()
    assert abs(np.mean(sizes) - 10) < 1.0  # E[batch] = q N = 10
    np.testing.assert_array_equal(ds[7]["image"], pipeline.poisson_train_dataset(
        src, process_index=0, process_count=1, **kw)[7]["image"])
    h0 = pipeline.poisson_train_dataset(src, process_index=0, process_count=2, **kw)[5]
    h1 = pipeline.poisson_train_dataset(src, process_index=1, process_count=2, **kw)[5]
    full = ds[5]
    np.testing.assert_array_equal(h0["image"], full["image"][0::2])
    np.testing.assert_array_equal(h1["mask"], full["mask"][1::2])
