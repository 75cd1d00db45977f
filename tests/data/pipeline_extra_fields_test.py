"""pipeline: extra array fields (pix2pix condition maps) pass through plain and Poisson batches."""
import numpy as np
import pytest

from jaxmedgan.privacy import secret as dp_secret
from jaxmedgan.data import pipeline


class _PairSource:
    """n examples {"image" f32 [4,4,1], "label", "cond" u8/f64 [4,4,2], "name" str}; cond = id."""

    def __init__(self, n: int = 12, cond_dtype=np.float64, cond_key: str = "cond"):
        self.n, self.cond_dtype, self.cond_key = n, cond_dtype, cond_key

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": np.full((4, 4, 1), i / self.n, np.float32), "label": i,
                self.cond_key: np.full((4, 4, 2), i, self.cond_dtype), "name": f"ex{i}"}


def test_to_model_example_passes_arrays_and_drops_the_rest():
    out = pipeline.to_model_example(_PairSource()[3])
    assert set(out) == {"image", "label", "cond"}
    assert out["cond"].dtype == np.float32 and out["cond"].shape == (4, 4, 2)
    u8 = pipeline.to_model_example(_PairSource(cond_dtype=np.uint8)[3])["cond"]
    assert u8.dtype == np.uint8  # integer maps keep their dtype


def test_extra_field_stays_paired_with_its_image_in_train_and_poisson_batches():
    src = _PairSource()
    batch = pipeline.train_dataset(src, global_batch_size=4, seed=0, augment=False, process_index=0,
                                   process_count=1)[2]
    assert batch["cond"].shape == (4, 4, 4, 2)
    np.testing.assert_array_equal(batch["cond"][:, 0, 0, 0], batch["label"])
    ds = pipeline.poisson_train_dataset(src, sampling_rate=0.5, max_batch_size=12, secret=dp_secret.from_seed(0),
                                        seed=0, augment=False, process_index=0, process_count=1)
    b = ds[1]
    assert b["cond"].shape == (12, 4, 4, 2) and b["mask"].shape == (12,)
    np.testing.assert_array_equal(b["cond"][:, 0, 0, 0], b["label"])
    np.testing.assert_allclose(b["image"][:, 0, 0, 0], b["label"] / 12)


def test_a_mask_field_is_refused_under_poisson_sampling():
    ds = pipeline.poisson_train_dataset(_PairSource(cond_key="mask"), sampling_rate=0.5, max_batch_size=12,
                                        secret=dp_secret.from_seed(0), seed=0, augment=False, process_index=0,
                                        process_count=1)
    with pytest.raises(ValueError, match="'mask' collides"):
        ds[0]
