"""Tests for jaxmedgan/data/tfds_builders.py: round trips, reuse, interrupted builds, no TensorFlow."""

import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image
import pytest

from jaxmedgan.privacy import secret as dp_secret
from jaxmedgan.data import chest_phantoms
from jaxmedgan.data import phantoms
from jaxmedgan.data import readers
from jaxmedgan.data import tfds_builders

_SMALL = ((3, 3, 3), (1, 2, 1))  # Tiny phantom train / test counts.
_HALF_STEP = 1.0 / 255.0 + 1e-6  # Largest error of uint8 storage of [-1, 1] (half a step of 2/255).


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> str:
    """A tiny phantom dataset built once for the module."""
    out = tmp_path_factory.mktemp("tfds")
    return tfds_builders.build_dataset("phantom-liver", str(out), phantom_counts=_SMALL)


def _write_folder(root, counts: dict[str, int], size: int = 16, seed: int = 0) -> None:
    """Writes random 8-bit gray PNGs as root/<class>/<i>.png."""
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(
                os.path.join(root, name, f"{i:03d}.png"))


def test_uint8_round_trip_error_is_half_a_step():
    x = np.linspace(-1, 1, 10001, dtype=np.float32)
    u = tfds_builders.to_uint8(x)
    assert u.dtype == np.uint8 and u.min() == 0 and u.max() == 255
    assert np.abs(tfds_builders.from_uint8(u) - x).max() <= _HALF_STEP
    all_u8 = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(tfds_builders.to_uint8(tfds_builders.from_uint8(all_u8)), all_u8)


def test_phantom_round_trip_equals_generate(phantom_dir):
    splits = (("train", _SMALL[0], phantoms.TRAIN_SEED), ("test", _SMALL[1], phantoms.TEST_SEED))
    for split, counts, seed in splits:
        images, labels = tfds_builders.load_arrays(phantom_dir, "phantom-liver", split)
        ref_images, ref_labels = phantoms.generate(counts, seed)
        assert images.shape == ref_images.shape and images.dtype == np.float32
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(labels, ref_labels)
        assert np.abs(images - ref_images).max() <= _HALF_STEP
    assert tfds_builders.class_names(phantom_dir, "phantom-liver") == phantoms.CLASS_NAMES
    source = tfds_builders.load_split(phantom_dir, "phantom_liver", "train")  # TFDS name works too.
    assert len(source) == 9
    example = source[4]
    assert example["image"].shape == (64, 64, 1) and example["image"].dtype == np.uint8
    assert int(example["label"]) == 1


def test_existing_complete_dataset_is_reused_not_rebuilt(phantom_dir, monkeypatch):
    out_dir = os.path.dirname(phantom_dir)
    version_dir = os.path.join(phantom_dir, "phantom_liver", "1.0.0")
    before = {f: os.stat(os.path.join(version_dir, f)).st_mtime_ns for f in os.listdir(version_dir)}

    def fail(*args, **kwargs):
        raise AssertionError("phantoms.generate must not run for an existing dataset")

    monkeypatch.setattr(phantoms, "generate", fail)
    again = tfds_builders.build_dataset("phantom-liver", out_dir, phantom_counts=_SMALL)
    assert again == phantom_dir
    after = {f: os.stat(os.path.join(version_dir, f)).st_mtime_ns for f in os.listdir(version_dir)}
    assert after == before


def test_different_inputs_get_different_directories(phantom_dir):
    out_dir = os.path.dirname(phantom_dir)
    other = tfds_builders.build_dataset("phantom-liver", out_dir, phantom_counts=((1, 1, 1), (1, 1, 1)),
                                        image_size=32, window=(40.0, 400.0))
    assert other != phantom_dir
    images, _ = tfds_builders.load_arrays(other, "phantom-liver", "train")
    ref, _ = phantoms.generate((1, 1, 1), phantoms.TRAIN_SEED, 32, window=(40.0, 400.0))
    assert images.shape == (3, 32, 32, 1)
    assert np.abs(images - ref).max() <= _HALF_STEP


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real_generate = phantoms.generate

    def crash(counts, seed, *args, **kwargs):
        if seed == phantoms.TEST_SEED:  # Train split already written when this fires.
            raise RuntimeError("simulated crash while writing the test split")
        return real_generate(counts, seed, *args, **kwargs)

    monkeypatch.setattr(phantoms, "generate", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tfds_builders.build_dataset("phantom-liver", str(tmp_path), phantom_counts=_SMALL)
    leftovers = [os.path.join(r, d) for r, ds, _ in os.walk(tmp_path) for d in ds]
    assert not any("1.0.0" in d for d in leftovers), leftovers  # Neither final nor incomplete.*_1.0.0.
    data_dir = os.path.join(tmp_path, os.listdir(tmp_path)[0])
    with pytest.raises(ValueError, match="No complete 'phantom_liver' dataset"):
        tfds_builders.load_split(data_dir, "phantom-liver", "train")
    monkeypatch.setattr(phantoms, "generate", real_generate)
    rebuilt = tfds_builders.build_dataset("phantom-liver", str(tmp_path), phantom_counts=_SMALL)
    assert rebuilt == data_dir
    assert len(tfds_builders.load_split(rebuilt, "phantom-liver", "test")) == 4


def test_image_folder_round_trip_and_stratified_holdout(tmp_path):
    image_dir = tmp_path / "images"
    _write_folder(image_dir, {"malignant": 6, "benign": 4})
    ref_images, ref_labels, names = readers.read_image_folder(str(image_dir), image_size=16)
    data_dir = tfds_builders.build_dataset("image-folder", str(tmp_path / "out"), image_dir=str(image_dir),
                                           image_size=16, holdout_fraction=0.25, seed=3)
    assert tfds_builders.class_names(data_dir, "image-folder") == names == ("benign", "malignant")
    train, train_labels = tfds_builders.load_arrays(data_dir, "image-folder", "train")
    test, test_labels = tfds_builders.load_arrays(data_dir, "image-folder", "test")
    # Stratified: round(0.25 * 4) = 1 benign, round(0.25 * 6) = 2 malignant held out.
    np.testing.assert_array_equal(np.bincount(test_labels), [1, 2])
    np.testing.assert_array_equal(np.bincount(train_labels), [3, 4])
    # PNGs are 8-bit, so the uint8 storage is lossless; train + test is the folder, in file order.
    is_test = tfds_builders.holdout_split(ref_labels, 0.25, 3)
    to_u8 = tfds_builders.to_uint8
    np.testing.assert_array_equal(to_u8(train), to_u8(ref_images[~is_test]))
    np.testing.assert_array_equal(to_u8(test), to_u8(ref_images[is_test]))
    np.testing.assert_allclose(train, ref_images[~is_test], atol=1e-6)
    np.testing.assert_array_equal(train_labels, ref_labels[~is_test])


def test_image_folder_without_holdout_has_only_train(tmp_path):
    image_dir = tmp_path / "images"
    _write_folder(image_dir, {"a": 2, "b": 1})
    data_dir = tfds_builders.build_dataset("image-folder", str(tmp_path / "out"), image_dir=str(image_dir),
                                           image_size=16)
    images, labels = tfds_builders.load_arrays(data_dir, "image-folder", "train")
    assert images.shape == (3, 16, 16, 1)
    with pytest.raises(ValueError, match=r"Split 'test' not in .*available: \['train'\]"):
        tfds_builders.load_split(data_dir, "image-folder", "test")
    # Changing the folder (a new file) gives a new dataset directory instead of stale reuse.
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image_dir / "b" / "new.png")
    rebuilt = tfds_builders.build_dataset("image-folder", str(tmp_path / "out"), image_dir=str(image_dir),
                                          image_size=16)
    assert rebuilt != data_dir


def test_holdout_split_is_deterministic_by_seed():
    labels = np.repeat(np.arange(3), 20)
    a = tfds_builders.holdout_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(a, tfds_builders.holdout_split(labels, 0.2, seed=0))
    assert not np.array_equal(a, tfds_builders.holdout_split(labels, 0.2, seed=1))
    np.testing.assert_array_equal(np.bincount(labels[a]), [4, 4, 4])
    with pytest.raises(ValueError, match="holdout_fraction"):
        tfds_builders.holdout_split(labels, 1.0, seed=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "mnist"}, "Unknown data source 'mnist'"),
        ({"source": "image-folder"}, "needs image_dir"),
        ({"source": "phantom-liver", "channels": 3}, "'phantom-liver' is 1-channel; got channels=3"),
        ({"source": "phantom-liver", "holdout_fraction": 0.1},
         r"'phantom-liver' takes window, phantom_counts .*holdout_fraction=0.1 \(applies to image-folder, "
         r"stylegan-folder, chestxray14\)"),
        ({"source": "phantom-liver", "image_dir": "/x"}, r"image_dir='/x' \(applies to image-folder, npz"),
        ({"source": "phantom-liver", "window": (50.0, 0.0)}, "width > 0"),
        ({"source": "phantom-liver", "num_examples": (2, 2)}, r"num_examples=\(2, 2\) \(applies to phantom-chest\)"),
        ({"source": "phantom-chest", "image_dir": "/x"}, "'phantom-chest' takes num_examples, prevalence, findings"),
        ({"source": "npz", "image_dir": "/x.npz", "holdout_fraction": 0.2}, "npz' takes image_dir"),
        ({"source": "phantom-chest", "findings": ("effusion", "fracture")}, r"unknown \['fracture'\]"),
        ({"source": "phantom-chest", "prevalence": (0.5,)}, "one probability in"),
        ({"source": "chexpert"}, "needs image_dir"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfds_builders.build_dataset(out_dir=str(tmp_path), **kwargs)


_NO_TF_SCRIPT = textwrap.dedent("""
    import sys

    attempts = []

    class _HideTensorflow:
        # Wraps every import finder so that `tensorflow` looks uninstalled (find_spec -> None).
        def __init__(self, finder):
            self._finder = finder

        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                attempts.append(name)
                return None
            find_spec = getattr(self._finder, "find_spec", None)
            return find_spec(name, path, target) if find_spec else None

        def __getattr__(self, attr):
            return getattr(self._finder, attr)

    sys.meta_path[:] = [_HideTensorflow(f) for f in sys.meta_path]
    try:
        import tensorflow  # noqa: F401
        raise SystemExit("tensorflow is still importable")
    except ImportError:
        pass

    import numpy as np
    from PIL import Image
    from jaxmedgan.data import phantoms, tfds_builders

    out = sys.argv[1]
    d = tfds_builders.build_dataset("phantom-liver", out, phantom_counts=((2, 1, 1), (1, 1, 1)))
    x, y = tfds_builders.load_arrays(d, "phantom-liver", "train")
    ref, ref_y = phantoms.generate((2, 1, 1), phantoms.TRAIN_SEED)
    assert np.abs(x - ref).max() <= 1 / 255 + 1e-6 and (y == ref_y).all()
    src = tfds_builders.load_split(d, "phantom-liver", "test")
    assert len(src) == 3 and src[0]["image"].dtype == np.uint8

    import os
    for c in ("a", "b"):
        os.makedirs(os.path.join(out, "img", c))
        Image.fromarray(np.full((8, 8), 7, np.uint8)).save(os.path.join(out, "img", c, "0.png"))
    d2 = tfds_builders.build_dataset("image-folder", out, image_dir=os.path.join(out, "img"), image_size=8)
    x2, y2 = tfds_builders.load_arrays(d2, "image-folder", "train")
    assert x2.shape == (2, 8, 8, 1) and list(y2) == [0, 1]

    d3 = tfds_builders.build_dataset("phantom-chest", out, image_size=16, num_examples=(3, 2))
    assert tfds_builders.class_names(d3, "phantom-chest")[0] == "cardiomegaly"
    x3, y3 = tfds_builders.load_arrays(d3, "phantom-chest", "train")
    assert x3.shape == (3, 16, 16, 1) and y3.shape == (3, 5)

    assert "tensorflow" not in sys.modules, "tensorflow was imported"
    print("NO_TF_OK", len(attempts))
""")


def test_build_and_read_work_without_tensorflow(tmp_path):
    env = dict(os.environ)
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = repo_root + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", _NO_TF_SCRIPT, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "NO_TF_OK" in result.stdout


def test_phantom_chest_round_trip_is_multi_hot_with_names(tmp_path):
    d = tfds_builders.build_dataset("phantom-chest", str(tmp_path), image_size=16, num_examples=(6, 3),
                                    findings=("pneumothorax", "effusion"))
    assert tfds_builders.is_multi_label(d, "phantom-chest")
    assert tfds_builders.class_names(d, "phantom-chest") == ("pneumothorax", "effusion")
    for split, n, seed in (("train", 6, chest_phantoms.TRAIN_SEED), ("test", 3, chest_phantoms.TEST_SEED)):
        images, targets = tfds_builders.load_arrays(d, "phantom-chest", split)
        ref_images, ref_targets = chest_phantoms.generate(n, seed, 16)
        assert targets.dtype == np.float32 and targets.shape == (n, 2)
        np.testing.assert_array_equal(targets, ref_targets[:, [4, 1]])  # the chosen columns, in order
        assert np.abs(images - ref_images).max() <= _HALF_STEP
    example = tfds_builders.load_split(d, "phantom-chest", "train")[0]
    assert example["label"].shape == (2,) and example["label"].dtype == np.uint8
    other = tfds_builders.build_dataset("phantom-chest", str(tmp_path), image_size=16, num_examples=(6, 3),
                                        prevalence=(0.5,) * 5)
    assert other != d  # the prevalence is part of the fingerprint


def test_multi_hot_labels_flow_through_the_gan_pipeline_and_step(tmp_path):
    """An unconditional GAN trains on a multi-label source; a conditional one is refused."""
    import functools

    import jax

    from configs import dcgan_liver
    from jaxmedgan.data import datasets, pipeline
    from jaxmedgan.trainers import gan

    c = dcgan_liver.get_config()
    c.data.source, c.data.data_dir, c.data.image_size = "phantom-chest", str(tmp_path), 16
    c.data.num_train, c.data.num_test = 8, 4
    c.model.latent_dim, c.model.g_features, c.model.d_features = 8, 4, 4
    train, (eval_images, eval_labels) = datasets.load(c)
    assert len(train) == 8 and eval_images.shape == (4, 16, 16, 1) and eval_labels.shape == (4, 5)
    ds = pipeline.train_dataset(train, global_batch_size=4, seed=0, augment=True, process_index=0,
                                process_count=1)
    batch = ds[0]
    assert batch["image"].shape == (4, 16, 16, 1) and batch["label"].shape == (4, 5)
    assert batch["label"].dtype == np.int32 and set(np.unique(batch["label"])) <= {0, 1}
    # Traced, not compiled (compiling the GAN step costs ~20 s on a busy 2-core CPU): a label the
    # step cannot take would fail here with a shape or dtype error.
    state = jax.eval_shape(functools.partial(gan.init_state, c), jax.random.PRNGKey(0))
    new, metrics = jax.eval_shape(functools.partial(gan.train_step, c), state, batch)
    assert new.step.shape == () and metrics["d_loss"].shape == ()
    dp = pipeline.poisson_train_dataset(train, sampling_rate=0.5, max_batch_size=4, secret=dp_secret.from_seed(0),
                                        seed=0, augment=False,
                                        process_index=0, process_count=1)
    assert dp[0]["label"].shape == (4, 5)
    c.model.num_classes = 5
    with pytest.raises(ValueError, match="multi-label"):
        datasets.load(c)
