"""The host batch loop: fixed chunk shape, trimmed padding, empty input."""
import numpy as np
import pytest

from jaxmedgan import batching


def test_map_padded_calls_one_shape_and_trims_the_padding():
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    shapes = []

    def fn(chunk):
        shapes.append(chunk.shape)
        return chunk.sum(axis=1)

    out = batching.map_padded(fn, x, 4)
    np.testing.assert_array_equal(out, x.sum(axis=1))  # numpy reference, padding cut
    assert shapes == [(4, 3)] * 3  # 4 + 4 + (2 real + 2 repeated rows)
    np.testing.assert_array_equal(batching.map_padded(lambda c: c * 2, x, 32), x * 2)


def test_map_padded_empty_input_and_bad_batch_size():
    empty = np.zeros((0, 5), np.float32)
    assert batching.map_padded(lambda c: c, np.zeros((0, 3)), 4, empty=empty) is empty
    with pytest.raises(ValueError, match="No rows"):
        batching.map_padded(lambda c: c, np.zeros((0, 3)), 4)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batching.map_padded(lambda c: c, np.zeros((2, 3)), 0)
