"""Banded matrix-factorization noise (privacy.mechanism='band_mf'): accounting, noise, sampling, runs."""
import os
import shutil
import stat

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax_privacy.accounting import accountants, analysis

from configs import acgan_liver_dp
from jaxmedgan import checkpointing
from jaxmedgan import main as cli
from jaxmedgan import sampling as sampling_lib
from jaxmedgan.data import pipeline
from jaxmedgan.privacy import accounting, noise, plan, sampling, secret
from jaxmedgan.privacy.config import DPConfig

from tests.trainers.gan_train_test import CONFIG, tiny_overrides


@pytest.mark.parametrize("bands", [1, 2, 5])
def test_epsilon_equals_jax_privacys_band_mf_accountant(bands):
    # jax-privacy's DpsgdTrainingAccountant with cycle_length=b is the reference (N divisible by b,
    # so its q = B / (N // b) equals our b q).
    n, batch, steps, sigma, delta = 10_000, 50, 600, 0.9, 1e-5
    ours = accounting.epsilon(batch / n, sigma, steps, delta, accountant="pld", cycle_length=bands)
    params = analysis.DpParams(noise_multipliers=sigma, num_samples=n, delta=delta, batch_size=batch,
                               cycle_length=bands)
    ref = analysis.DpsgdTrainingAccountant(accountants.PldAccountantConfig()).compute_epsilon(steps, params)
    assert ours == pytest.approx(ref, rel=1e-6)
    rdp_ref = analysis.DpsgdTrainingAccountant(accountants.RdpAccountantConfig()).compute_epsilon(steps, params)
    assert accounting.epsilon(batch / n, sigma, steps, delta, cycle_length=bands) == pytest.approx(rdp_ref, rel=2e-3)
    if bands == 1:  # one band is DP-SGD
        assert ours == accounting.epsilon(batch / n, sigma, steps, delta, accountant="pld")
    else:  # fewer participations at a higher rate: here a larger epsilon for the same sigma
        assert ours > accounting.epsilon(batch / n, sigma, steps, delta, accountant="pld")


def test_calibration_and_cli_cover_band_mf(capsys):
    sigma = accounting.calibrate_noise(3.0, 1e-5, 0.005, 2000, cycle_length=4)
    assert accounting.epsilon(0.005, sigma, 2000, 1e-5, cycle_length=4) <= 3.0
    assert accounting.epsilon(0.005, sigma * 0.99, 2000, 1e-5, cycle_length=4) > 3.0
    argv = ["jaxmedgan", "privacy", "epsilon", "--sampling-rate", "0.005", "--noise-multiplier", str(sigma),
            "--steps", "2000", "--delta", "1e-5", "--mechanism", "band_mf", "--bands", "4"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert float(out.split("epsilon = ")[1].split()[0]) == accounting.epsilon(0.005, sigma, 2000, 1e-5,
                                                                                cycle_length=4)
    assert "band_mf, 4 bands" in out
    assert cli.main(argv[:-4] + ["--bands", "4"]) == 1  # bands without band_mf
    assert "--bands 4 needs --mechanism band_mf" in capsys.readouterr().err
    with pytest.raises(ValueError, match="bands > 1"):
        accounting.epsilon(0.3, 1.0, 10, 1e-5, cycle_length=4)  # b q > 1


def test_config_refuses_bands_without_band_mf():
    with pytest.raises(ValueError, match="config.privacy.bands=4"):
        DPConfig.from_config({"privacy": {"enabled": True, "bands": 4}})
    with pytest.raises(ValueError, match="config.privacy.mechanism"):
        DPConfig.from_config({"privacy": {"mechanism": "mf"}})
    assert DPConfig.from_config({"privacy": {"mechanism": "band_mf", "bands": 3}}).cycle_length == 3


def _noise_sequence(tx, params, keys):
    state, out = tx.init(params), []
    for key in keys:
        noised, state = tx.update(params, state, noise_key=key)
        out.append(np.concatenate([np.ravel(x) for x in jax.tree.leaves(noised)]).astype(np.float64))
    return np.array(out), state


def test_band_mf_noise_is_c_inverse_z_and_one_band_is_dp_sgd_bit_for_bit():
    steps, bands, sigma, clip, batch = 10, 3, 0.7, 2.0, 4.0
    params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros((4,))}
    keys = [np.random.SeedSequence([11, t]).generate_state(2, np.uint32) for t in range(steps)]
    iid, _ = _noise_sequence(noise.gaussian_noise(sigma, clip, batch), params, keys)
    mf, state = _noise_sequence(noise.gaussian_noise(sigma, clip, batch, strategy=noise.banded_strategy(steps, bands)),
                                params, keys)
    # Reference: C built in numpy from Fichtenberger et al.'s coefficients c_k = prod_{j<=k} (2j-1)/(2j),
    # truncated to b bands and column-normalised; the noise is C^{-1} applied to the same i.i.d. draws.
    k = np.arange(bands)
    coefs = np.cumprod(np.where(k == 0, 1.0, (2 * k - 1) / np.maximum(2 * k, 1)))
    c = sum(np.diag(np.full(steps - j, coefs[j]), -j) for j in range(bands))
    c /= np.linalg.norm(c, axis=0)
    np.testing.assert_allclose(mf, np.linalg.solve(c, iid), atol=1e-5)
    assert isinstance(state, noise.CorrelatedNoiseState)  # per noised leaf: (step index, b solved draws)
    assert [int(x) for x in jax.tree.leaves(state.correlated) if x.ndim == 0] == [steps, steps]
    one, _ = _noise_sequence(noise.gaussian_noise(sigma, clip, batch, strategy=noise.banded_strategy(steps, 1)),
                             params, keys)
    np.testing.assert_array_equal(one, iid)


def test_cyclic_sampling_draws_each_example_only_in_its_groups_steps_at_rate_q():
    n, bands, q, steps = 400, 4, 0.05, 400
    c = acgan_liver_dp.get_config()
    run_secret = secret.Secret(tuple(range(8)), "os-csprng")
    source = [{"image": np.zeros((2, 2, 1), np.float32), "label": 0} for _ in range(n)]
    fn = pipeline._PoissonBatch(source, q, 64, run_secret, c.seed, None, 0, 1, cycle_length=bands)
    groups = sampling.cyclic_groups(run_secret.partition_rng(), n, bands)
    seen = np.zeros(n)
    for t in range(steps):
        drawn = sampling.poisson_batch(run_secret.sampling_rng(t), n, q * bands, 64,
                                       population=fn.groups[t % bands])
        members = drawn.indices[drawn.mask > 0]
        assert set(groups[members]) <= {t % bands}
        seen[members] += 1
        batch = fn(t)
        assert int(batch["num_real"]) == len(members)
    # Overall rate q per example per step (binomial test on the total count).
    total = seen.sum()
    assert abs(total - n * steps * q) < 4 * np.sqrt(n * steps * q)


def test_plan_accounts_band_mf_and_refuses_too_many_bands():
    c = acgan_liver_dp.get_config()
    c.train.steps, c.train.batch_size = 200, 16
    c.privacy.mechanism, c.privacy.bands = "band_mf", 4
    p = plan.prepare(c, {}, 400, 1)
    assert p.epsilon_at_end == accounting.epsilon(16 / 400, p.noise_multiplier, p.max_steps, p.delta,
                                                  cycle_length=4)
    assert plan.run_guarantee(c, p.max_steps)[0] == p.epsilon_at_end
    c.privacy.bands = 30  # 16 x 30 > 400 examples
    with pytest.raises(ValueError, match="config.privacy.bands=30"):
        plan.prepare(c, {}, 400, 1)


@pytest.mark.slow  # three tiny band_mf DP runs; CI runs it after the default suite (.ci/run)
def test_band_mf_runs_keep_the_noise_state_private_and_resume_exactly(tmp_path):
    dp_config = os.path.join(os.path.dirname(CONFIG), "acgan_liver_dp.py")

    def train(wd, steps=3):
        return cli.main(["jaxmedgan", "train", "--config", dp_config, "--workdir", str(wd),
                         *tiny_overrides(tmp_path / "data", steps=steps, every=1), "--config.checkpoint.keep=5",
                         "--config.privacy.mechanism=band_mf", "--config.privacy.bands=2"])

    def d_params(wd, step):
        mngr = checkpointing.manager(str(wd), async_save=False)
        state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        return jax.tree_util.tree_leaves(state["d_params"])

    a = tmp_path / "a"
    assert train(a) == 0
    # The checkpoint holds zeros where the streaming noise state is; the real one is private (0600).
    _, state, step = sampling_lib.restore_state(str(a))
    held = [s for s in state.d_opt_state if isinstance(s, noise.CorrelatedNoiseState)]
    assert step == 3 and len(held) == 1
    assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(held[0].correlated))
    private = secret.noise_state_path(str(a), 3)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    with np.load(private) as saved:
        assert int(saved["leaf_0"]) == 3 and any(np.any(saved[k]) for k in saved.files[1:])
    # Resume after step 2 reproduces step 3 bit for bit (the noise continues its correlation).
    c = tmp_path / "c"
    shutil.copytree(a, c)
    shutil.rmtree(c / "checkpoints" / "3")
    os.remove(secret.noise_state_path(str(c), 3))
    assert train(c) == 0
    for x, y in zip(d_params(a, 3), d_params(c, 3)):
        np.testing.assert_array_equal(x, y)
    with np.load(private) as p_a, np.load(secret.noise_state_path(str(c), 3)) as p_c:
        for k in p_a.files:
            np.testing.assert_array_equal(p_a[k], p_c[k])
    # Without its private noise state a run refuses to resume (it could not continue the noise).
    d = tmp_path / "d"
    shutil.copytree(a, d)
    shutil.rmtree(d / "checkpoints" / "3")
    os.remove(secret.noise_state_path(str(d), 2))
    os.remove(secret.noise_state_path(str(d), 3))
    assert train(d) == 1


def test_runs_from_before_band_mf_resume_as_dpsgd_and_refuse_a_switch():
    new = acgan_liver_dp.get_config()
    old = plan.flatten(new)
    del old["privacy.mechanism"], old["privacy.bands"]  # config.json written before the fields existed
    old_tree: dict = {}
    for key, value in old.items():
        node = old_tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    plan.check_resume(old_tree, new)  # the fields at their defaults: the same mechanism
    new.privacy.mechanism = "band_mf"
    with pytest.raises(ValueError, match="privacy.mechanism: None -> 'band_mf'"):
        plan.check_resume(old_tree, new)
