"""ops.patches: unfolded patches against jax.lax.conv_general_dilated_patches and the convs they feed."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.ops import patches
from jaxmedgan.privacy import ghost


@pytest.mark.parametrize("kernel,strides,pads,dilation", [
    ((4, 4), (2, 2), ((1, 2), (1, 2)), (1, 1)),  # DCGAN: the space-to-depth route
    ((3, 3), (2, 2), ((0, 0), (1, 1)), (1, 1)),  # 3 % 2 != 0: strided slices
    ((2, 3), (1, 2), ((1, 0), (2, 1)), (2, 1)),  # dilation, asymmetric pads
    ((1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1)),  # StyleGAN2's 1x1 down-sampling skip
])
def test_unfold_matches_lax_patches(kernel, strides, pads, dilation):
    x = np.random.default_rng(0).normal(size=(2, 9, 8, 3)).astype(np.float32)
    got = patches.unfold(jnp.asarray(x), kernel, strides, pads, dilation)
    ref = jax.lax.conv_general_dilated_patches(x, kernel, strides, pads, rhs_dilation=dilation,
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # lax orders each patch channel-major (C, kh, kw); ours is the HWIO kernel's (kh, kw, C).
    n, h, w, _ = ref.shape
    ref = ref.reshape(n, h, w, 3, *kernel).transpose(0, 1, 2, 4, 5, 3).reshape(n, h * w, -1)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_dilated_input_unfolded_times_kernel_is_the_transposed_conv(padding):
    """lax.conv_transpose = a stride-1 correlation over `dilate`d input: patches @ kernel reproduce it."""
    x = np.random.default_rng(1).normal(size=(2, 5, 4, 3)).astype(np.float32)
    kernel = np.random.default_rng(2).normal(size=(4, 3, 3, 5)).astype(np.float32)
    want = jax.lax.conv_transpose(x, kernel, (2, 2), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    pads = tuple(ghost._transpose_pads(k, 2, padding) for k in (4, 3))
    a = patches.unfold(patches.dilate(jnp.asarray(x), (2, 2), pads), (4, 3), (1, 1), ((0, 0), (0, 0)))
    got = (a @ kernel.reshape(-1, 5)).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"must be \[N, \*spatial \(2 axes\), C\]"):
        patches.unfold(jnp.ones((2, 1, 5, 5, 1)), (3, 3), (1, 1), ((0, 0), (0, 0)))
    with pytest.raises(ValueError, match="does not fit input"):
        patches.unfold(jnp.ones((1, 2, 2, 1)), (3, 3), (1, 1), ((0, 0), (0, 0)))
