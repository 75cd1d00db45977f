"""The Flax FID Inception-v3 against pytorch-fid's network (vendored in tests/reference/) with the
same random weights, plus the weight converter. Needs torch (test-only extra); skipped without it."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.evaluators import features, inception_convert
from jaxmedgan.models import inception

torch = pytest.importorskip("torch")
SIZE = 75  # px: the smallest input the network accepts; keeps the test fast (no 299 px resize)


def _random_reference(seed: int = 0):
    """pytorch-fid's InceptionV3 (pool3 output, no resize, [0,1] -> [-1,1]) with random weights
    scaled to keep activations O(1), and random BatchNorm statistics (so folding BN is tested)."""
    from tests.reference import pytorch_fid_inception as ref

    g = torch.Generator().manual_seed(seed)
    base = ref.torchvision.models.inception_v3(num_classes=1008, aux_logits=False, init_weights=False)
    sd = {}
    for k, v in base.state_dict().items():
        if k.endswith("conv.weight"):
            fan_in = v.shape[1] * v.shape[2] * v.shape[3]
            sd[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif k.endswith("bn.weight"):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith(("bn.bias", "running_mean")):
            sd[k] = 0.2 * torch.randn(v.shape, generator=g)
        elif k.endswith("running_var"):
            sd[k] = 0.5 + 1.5 * torch.rand(v.shape, generator=g)
        elif k.startswith("fc."):
            sd[k] = 0.01 * torch.randn(v.shape, generator=g)
        else:
            sd[k] = v
    net = ref.InceptionV3([3], resize_input=False, normalize_input=True, state_dict=sd).eval()
    return net, sd


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(torch reference net, its state dict, the .pth file, the npz the converter CLI wrote)."""
    net, sd = _random_reference()
    root = tmp_path_factory.mktemp("inception")
    pth, npz = root / "weights.pth", root / "inception_fid.npz"
    torch.save(sd, pth)
    assert inception_convert.main(["--pth", str(pth), "--out", str(npz)]) == 0
    return net, sd, pth, npz


def test_pool_features_match_pytorch_fid(reference):
    # Through the user path: .pth -> inception_convert -> npz -> features.inception -> extract.
    net, _, _, npz = reference
    rng = np.random.default_rng(0)
    x01 = rng.uniform(size=(2, SIZE, SIZE, 3)).astype(np.float32)  # pytorch-fid's input range
    with torch.no_grad():
        want = net(torch.from_numpy(x01.transpose(0, 3, 1, 2)))[0][:, :, 0, 0].numpy()
    extractor = features.inception(str(npz), resize_to=None)
    got = features.extract(extractor, 2 * x01 - 1)  # our convention: [-1, 1]
    assert got.shape == (2, inception.FEATURE_DIM) == want.shape
    assert 0.05 < np.abs(want).mean() < 50  # activations neither vanished nor exploded
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # The two images give different features (the comparison is not between constants).
    assert np.abs(want[0] - want[1]).max() > 1e-2 * np.abs(want).max()


@pytest.mark.parametrize("src,dst", [(20, 37), (40, 23), (32, 299)])
def test_resize_matches_torch_bilinear(src, dst):
    x = np.random.default_rng(1).normal(size=(2, src, src, 3)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(dst, dst),
                                           mode="bilinear", align_corners=False).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(inception.resize_bilinear(jnp.asarray(x), dst)), want, atol=1e-5)


def test_convert_file_roundtrip_and_checks(reference, tmp_path):
    _, sd, pth, npz = reference
    variables = inception.load_variables(str(npz))
    kernel = np.asarray(variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"])
    torch_w = sd["Mixed_6b.branch7x7_2.conv.weight"].numpy()  # [O, I, 1, 7]
    assert kernel.shape == (1, 7, 128, 128)
    np.testing.assert_array_equal(kernel, torch_w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]["var"]),
                                  sd["Conv2d_1a_3x3.bn.running_var"].numpy())
    # A name that claims a hash the contents do not have is refused.
    bad = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    bad.write_bytes(b"truncated download")
    with pytest.raises(ValueError, match="SHA-256"):
        inception_convert.convert_file(str(bad), str(tmp_path / "x.npz"))


def test_convert_names_missing_and_unexpected_entries(reference):
    _, sd, _, _ = reference
    broken = {k: v for k, v in sd.items() if k != "Mixed_7c.branch_pool.conv.weight"}
    with pytest.raises(ValueError, match="Mixed_7c/branch_pool/conv/kernel"):
        inception_convert.convert_state_dict(broken)
    with pytest.raises(ValueError, match="AuxLogits.conv0.conv.bias"):
        inception_convert.convert_state_dict({**sd, "AuxLogits.conv0.conv.bias": np.zeros(3)})
    with pytest.raises(FileNotFoundError, match="inception_convert"):
        inception.load_variables("/nonexistent/inception_fid.npz")
