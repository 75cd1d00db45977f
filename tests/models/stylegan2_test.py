"""StyleGAN2-ADA networks: parameter counts vs published summaries and a hand formula; shapes; behaviour.

Published references (StyleGAN2-ADA's own printed network summaries, `--cfg=auto`, RGB, z=w=512):
* 1024 px (channel_base 32768, mapping 2 layers), stylegan2-ada-pytorch training log:
  Generator Total 28,794,124; Discriminator Total 29,012,513; per-layer rows e.g.
  synthesis.b4.conv1 2,622,465, synthesis.b128.conv0 1,442,561, b1024.fromrgb 128, b64.conv0
  2,359,808, b4.conv 2,364,416, b4.fc 4,194,816, b4.out 513.
* 256 px (channel_base 16384, mapping 2 layers), stylegan2-ada (TF) G summary: Total 23,191,522;
  e.g. 256x256/Conv0_up 139,457, 256x256/ToRGB 33,027.
Conditional networks (label embedding, D's 8-layer label mapping and projection head) are checked
against `_hand_count_*`, a per-layer formula written from the architecture spec.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.models import stylegan2 as sg


def _hand_count_g(res, ch_img, c_dim, z_dim, w_dim, n_map, base, cmax):
    """Generator parameters from the StyleGAN2-ADA spec (skip architecture)."""
    ch = lambda r: min(base // r, cmax)
    fc = lambda i, o: i * o + o
    embed = w_dim if c_dim else 0
    n = (fc(c_dim, embed) if c_dim else 0)
    feats = [z_dim + embed] + [w_dim] * n_map
    n += sum(fc(a, b) for a, b in zip(feats[:-1], feats[1:]))
    # Modulated layer: affine (w_dim -> cin, bias) + weight k*k*cin*cout + bias cout + noise strength.
    synth = lambda cin, cout: fc(w_dim, cin) + 9 * cin * cout + cout + 1
    torgb = lambda cin: fc(w_dim, cin) + cin * ch_img + ch_img
    r = 4
    n += 16 * ch(4) + synth(ch(4), ch(4)) + torgb(ch(4))
    while r < res:
        r *= 2
        n += synth(ch(r // 2), ch(r)) + synth(ch(r), ch(r)) + torgb(ch(r))
    return n


def _hand_count_d(res, ch_img, c_dim, base, cmax, mbstd_ch=1, n_map=8):
    """Discriminator parameters from the StyleGAN2-ADA spec (resnet architecture, projection head)."""
    ch = lambda r: min(base // r, cmax)
    conv = lambda k, i, o, bias=True: k * k * i * o + (o if bias else 0)
    n = conv(1, ch_img, ch(res))  # fromrgb
    r = res
    while r > 4:
        t, o = ch(r), ch(r // 2)
        n += conv(3, t, t) + conv(3, t, o) + conv(1, t, o, bias=False)
        r //= 2
    c4 = ch(4)
    cmap = c4 if c_dim else 0
    n += conv(3, c4 + mbstd_ch, c4) + (16 * c4 * c4 + c4) + (c4 * (cmap or 1) + (cmap or 1))
    if c_dim:
        n += c_dim * cmap + cmap + n_map * (cmap * cmap + cmap)
    return n


def _params(module, *args):
    return sg.abstract_variables(module, *args)["params"]


def test_generator_param_counts_match_published_stylegan2_ada_summaries():
    g1024 = sg.Generator(z_dim=512, w_dim=512, img_resolution=1024, img_channels=3, mapping_layers=2,
                         channel_base=32768, channel_max=512)
    p = _params(g1024, jnp.zeros((2, 512)), None)
    assert sg.count_params(p) == 28_794_124 == _hand_count_g(1024, 3, 0, 512, 512, 2, 32768, 512)
    syn = p["synthesis"]
    assert sg.count_params(syn["b4"]["conv1"]) == 2_622_465
    assert sg.count_params(syn["b4"]["torgb"]) == 264_195
    assert sg.count_params(syn["b4"]["const"]) == 8_192
    assert sg.count_params(syn["b128"]["conv0"]) == 1_442_561
    assert sg.count_params(syn["b1024"]["conv1"]) == 25_665
    assert sg.count_params(p["mapping"]["fc0"]) == 262_656

    g256 = sg.Generator(img_resolution=256, img_channels=3, mapping_layers=2, channel_base=16384)
    p = _params(g256, jnp.zeros((2, 512)), None)
    assert sg.count_params(p) == 23_191_522 == _hand_count_g(256, 3, 0, 512, 512, 2, 16384, 512)
    assert sg.count_params(p["synthesis"]["b256"]["conv0"]) == 139_457
    assert sg.count_params(p["synthesis"]["b256"]["torgb"]) == 33_027
    assert g256.num_ws == 14


def test_discriminator_param_count_matches_published_stylegan2_ada_summary():
    d = sg.Discriminator(img_resolution=1024, img_channels=3, channel_base=32768, channel_max=512)
    p = _params(d, jnp.zeros((4, 1024, 1024, 3)))
    assert sg.count_params(p) == 29_012_513 == _hand_count_d(1024, 3, 0, 32768, 512)
    rows = {("b1024", "fromrgb"): 128, ("b1024", "skip"): 2048, ("b1024", "conv0"): 9248,
            ("b1024", "conv1"): 18496, ("b64", "conv0"): 2_359_808, ("b64", "skip"): 262_144,
            ("b4", "conv"): 2_364_416, ("b4", "fc"): 4_194_816, ("b4", "out"): 513}
    for (block, layer), count in rows.items():
        assert sg.count_params(p[block][layer]) == count, (block, layer)


@pytest.mark.parametrize("res,ch_img,c_dim,mbstd", [(256, 1, 4, 1), (32, 3, 10, 1), (64, 1, 4, 0)])
def test_conditional_counts_match_hand_formula(res, ch_img, c_dim, mbstd):
    g = sg.Generator(c_dim=c_dim, img_resolution=res, img_channels=ch_img, mapping_layers=2,
                     channel_base=16384)
    pg = _params(g, jnp.zeros((2, 512)), jnp.zeros((2,), jnp.int32))
    assert sg.count_params(pg) == _hand_count_g(res, ch_img, c_dim, 512, 512, 2, 16384, 512)
    assert sg.count_params(pg["mapping"]["embed"]) == c_dim * 512 + 512
    assert sg.count_params(pg["mapping"]["fc0"]) == 1024 * 512 + 512  # z and embedding concatenated
    d = sg.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=ch_img, channel_base=16384,
                         mbstd_group_size=4 if mbstd else 0)
    pd = _params(d, jnp.zeros((4, res, res, ch_img)), jnp.zeros((4,), jnp.int32))
    assert sg.count_params(pd) == _hand_count_d(res, ch_img, c_dim, 16384, 512, mbstd_ch=mbstd)
    assert sorted(pd["mapping"]) == ["embed"] + [f"fc{i}" for i in range(8)]


def _init_tiny(res, ch_img, c_dim, n=4, seed=0):
    g, d = sg.make_networks(res, ch_img, c_dim=c_dim, preset="tiny")
    key = jax.random.PRNGKey(seed)
    z = jax.random.normal(key, (n, g.z_dim))
    c = jnp.arange(n) % c_dim if c_dim else None
    gv = g.init({"params": key, "noise": key}, z, c)
    return g, d, gv, z, c


@pytest.mark.parametrize("res,ch_img", [(16, 1), (32, 3), (64, 1), (16, 2), (256, 1)])
def test_output_shapes_for_resolutions_and_channels(res, ch_img):
    g, d = sg.make_networks(res, ch_img, c_dim=3, preset="tiny")
    z, c = jnp.zeros((4, g.z_dim)), jnp.arange(4) % 3
    rngs = {"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}

    def forward():
        gv = g.init(rngs, z, c)
        img = g.apply(gv, z, c, rngs=rngs)
        return gv, img, d.apply(d.init(rngs, img, c), img, c)

    gv, img, logits = jax.eval_shape(forward)  # shapes only: no compile, any resolution
    assert img.shape == (4, res, res, ch_img) and img.dtype == jnp.float32
    assert logits.shape == (4,) and logits.dtype == jnp.float32
    assert set(gv) == {"params", "stats"} and gv["stats"]["mapping"]["w_avg"].shape == (g.w_dim,)
    assert sorted(gv["params"]["synthesis"]) == sorted(f"b{r}" for r in sg.synthesis_resolutions(res))


def test_forward_pass_is_finite_and_starts_near_zero():
    g, d, gv, z, c = _init_tiny(16, 1, c_dim=4)
    img = g.apply(gv, z, c, rngs={"noise": jax.random.PRNGKey(1)})
    logits = d.apply(d.init(jax.random.PRNGKey(2), img, c), img, c)
    assert np.isfinite(np.asarray(img)).all() and np.isfinite(np.asarray(logits)).all()
    # Equalised lr keeps unit-scale activations at init: images and logits of order 1, not 1e3.
    assert 0.05 < float(jnp.std(img)) < 10 and float(jnp.max(jnp.abs(logits))) < 10


def test_conditional_generator_gives_different_images_for_different_labels():
    g, _, gv, z, _ = _init_tiny(16, 1, c_dim=4)
    same_z = jnp.repeat(z[:1], 4, axis=0)
    img = g.apply(gv, same_z, jnp.arange(4), noise_mode="const")
    for i in range(4):
        for j in range(i + 1, 4):
            assert float(jnp.mean(jnp.abs(img[i] - img[j]))) > 1e-3, (i, j)
    again = g.apply(gv, same_z, jnp.arange(4), noise_mode="const")  # const noise: deterministic
    np.testing.assert_array_equal(np.asarray(img), np.asarray(again))
    with pytest.raises(ValueError, match="class-conditional"):
        g.apply(gv, z, None, noise_mode="none")


def test_w_avg_tracking_and_truncation():
    g, _, gv, z, c = _init_tiny(16, 1, c_dim=2)
    ws, upd = g.apply(gv, z, c, update_w_avg=True, method=g.map, mutable=["stats"])
    mean = np.asarray(ws[:, 0]).mean(0)
    np.testing.assert_allclose(upd["stats"]["mapping"]["w_avg"], (1 - 0.995) * mean, rtol=1e-5, atol=1e-7)
    gv = {**gv, **upd}
    # psi = 0 collapses every latent onto w_avg; psi = 1 is the identity.
    ws0 = g.apply(gv, z, c, truncation_psi=0.0, method=g.map)
    np.testing.assert_allclose(ws0, np.broadcast_to(upd["stats"]["mapping"]["w_avg"], ws0.shape), atol=1e-6)
    ws_cut = g.apply(gv, z, c, truncation_psi=0.0, truncation_cutoff=2, method=g.map)
    np.testing.assert_allclose(ws_cut[:, 2:], ws[:, 2:], atol=1e-6)
    np.testing.assert_allclose(ws_cut[:, :2], ws0[:, :2], atol=1e-6)


def test_discriminator_mbstd_mixes_examples_only_for_group_size_above_one():
    img = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 1))
    other = img.at[1:].set(jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 1)))
    for group, mixes in ((4, True), (1, False), (0, False)):
        d = sg.Discriminator(img_resolution=16, img_channels=1, channel_base=256, channel_max=16,
                             mbstd_group_size=group)
        v = d.init(jax.random.PRNGKey(2), img)
        a, b = d.apply(v, img)[0], d.apply(v, other)[0]  # example 0 is the same in both batches
        assert (abs(float(a - b)) > 1e-6) == mixes, group


def test_bad_inputs_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"power of two in \[8, 1024\]"):
        sg.check_resolution(48)
    d = sg.Discriminator(img_resolution=16, img_channels=1, channel_base=128, channel_max=16)
    with pytest.raises(ValueError, match=r"expects images \[N, 16, 16, 1\]"):
        d.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 3)))
    g = sg.SynthesisNetwork(w_dim=8, img_resolution=16, img_channels=1, channel_base=64, channel_max=8)
    with pytest.raises(ValueError, match=r"ws must be \[N, num_ws=6, w_dim=8\]"):
        g.init({"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(0)}, jnp.zeros((2, 5, 8)))
