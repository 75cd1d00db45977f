"""The DP guarantee around the mechanism: secret randomness, private logs, delta', resume, clinical term."""
import json
import os
import shutil
import stat

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from scipy import stats

from configs import acgan_liver_dp, common as config_common, stylegan2_ada_spine_dp
from jaxmedgan import checkpointing, export, metric_writers
from jaxmedgan import main as cli
from jaxmedgan.data import pipeline
from jaxmedgan.privacy import accounting, monitoring, plan, secret
from jaxmedgan.privacy.config import DPConfig
from jaxmedgan.trainers import stylegan2

from tests.trainers.gan_train_test import CONFIG, tiny_overrides


def test_dp_config_is_read_in_one_place_with_one_line_errors():
    assert DPConfig.from_config({}) == DPConfig() and not DPConfig().enabled
    c = acgan_liver_dp.get_config()
    assert DPConfig.from_config(c).enabled and DPConfig.from_config(c).secure_rng
    c.privacy.l2_clip = 0.0
    with pytest.raises(ValueError, match=r"^config.privacy.l2_clip=0.0 must be > 0.$"):
        DPConfig.from_config(c)
    with pytest.raises(ValueError, match=r"Unknown key\(s\) config.privacy.l2_clipp"):
        DPConfig.from_config({"privacy": {"l2_clipp": 1.0}})
    with pytest.raises(ValueError, match=r"config.privacy.accountant='moments' must be one of"):
        DPConfig.from_config({"privacy": {"accountant": "moments"}})
    with pytest.raises(ValueError, match=r"config.privacy.noise_multiplier='x' is not a float"):
        DPConfig.from_config({"privacy": {"noise_multiplier": "x"}})
    with pytest.raises(ValueError, match="Unknown privacy field"):
        config_common.privacy(sigma=1.0)


def test_secret_is_drawn_once_kept_private_and_read_back(tmp_path):
    wd = str(tmp_path / "run")
    a = secret.load_or_create(wd, secure=True, seed=0, resuming=False)
    assert a.source == "os-csprng" and not a.public and len(a.words) == 8
    assert stat.S_IMODE(os.stat(secret.path(wd)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(wd, secret.PRIVATE_DIR)).st_mode) == 0o700
    assert secret.load_or_create(wd, secure=True, seed=0, resuming=True) == a  # resume: the same streams
    assert "hidden" in repr(a) and str(a.words[0]) not in repr(a)
    b = secret.load_or_create(str(tmp_path / "other"), secure=True, seed=0, resuming=False)
    assert a.words != b.words  # same config, fresh entropy
    with pytest.raises(ValueError, match="no secret at .*dp_secret.json"):
        secret.load_or_create(str(tmp_path / "lost"), secure=True, seed=0, resuming=True)
    public = secret.load_or_create(str(tmp_path / "debug"), secure=False, seed=7, resuming=False)
    assert public.public and public == secret.from_seed(7) and not os.path.exists(secret.path(str(tmp_path / "debug")))
    # band-MF's streaming noise state: private too, whatever the umask.
    old_umask = os.umask(0o022)
    try:
        noise_file = secret.save_noise_state(wd, 3, [np.arange(3)])
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(noise_file).st_mode) == 0o600
    assert os.path.dirname(noise_file) == os.path.join(wd, secret.PRIVATE_DIR)


def test_membership_and_noise_follow_the_secret_not_the_seed():
    src = pipeline.ArraySource(np.arange(64, dtype=np.float32).reshape(64, 1, 1, 1) / 64, np.zeros(64, np.int32))
    kw = dict(sampling_rate=0.25, max_batch_size=32, seed=0, augment=False, process_index=0, process_count=1)
    s1, s2 = secret.Secret(tuple(range(1, 9)), "os-csprng"), secret.Secret(tuple(range(2, 10)), "os-csprng")
    a, a_again, b = (pipeline.poisson_train_dataset(src, secret=s, **kw)[3] for s in (s1, s1, s2))
    for key in ("image", "mask", "dp_noise_key"):
        np.testing.assert_array_equal(a[key], a_again[key])  # a pure function of (secret, step)
    assert not np.array_equal(a["mask"] * a["image"][:, 0, 0, 0], b["mask"] * b["image"][:, 0, 0, 0])
    assert not np.array_equal(a["dp_noise_key"][0], b["dp_noise_key"][0])
    assert (a["dp_noise_key"] == a["dp_noise_key"][0]).all()  # one key per step, on every row
    assert not np.array_equal(s1.noise_key(3), s1.noise_key(4))


def _planned(overflow_prob=0.0, steps=100, sigma=1.0):
    c = acgan_liver_dp.get_config()
    c.train.steps, c.train.batch_size, c.privacy.overflow_prob = steps, 16, overflow_prob
    c.privacy.noise_multiplier = sigma
    return c, plan.prepare(c, {}, 182, 1)


def test_padding_keeps_delta_prime_within_one_percent_and_reports_it():
    c, p = _planned()
    q, n, t = 16 / 182, 182, 100
    overflow = stats.binom.sf(p.max_batch_size, n, q)  # independent: scipy's binomial tail
    assert p.overflow_prob == pytest.approx(overflow, rel=1e-6, abs=1e-300)
    eps = accounting.epsilon(q, p.noise_multiplier, t, p.delta)
    assert p.delta_prime == pytest.approx(p.delta + t * overflow * (1 + np.exp(eps)), rel=1e-6)
    assert p.delta <= p.delta_prime <= 1.01 * p.delta
    assert plan.run_guarantee(c, t) == pytest.approx((eps, p.delta_prime), rel=1e-6)
    # A user-chosen overflow probability is honoured and its (larger) delta' reported, not hidden.
    c2, p2 = _planned(overflow_prob=1e-7, sigma=4.0)
    assert p2.max_batch_size < p.max_batch_size and 1 > p2.delta_prime > 1.01 * p2.delta
    overflow2, eps2 = stats.binom.sf(p2.max_batch_size, n, q), accounting.epsilon(q, 4.0, t, p2.delta)
    assert p2.delta_prime == pytest.approx(p2.delta + t * overflow2 * (1 + np.exp(eps2)), rel=1e-6)
    assert plan.delta_prime(p.delta, 1e-3, t, eps) == 1.0  # no guarantee left: reported as such
    # The PGGAN chest config's former setting: overflow 1e-9 per step over 1125 steps at epsilon 10.
    assert plan.delta_prime(5e-5, 1e-9, 1125, 10.0) - 5e-5 == pytest.approx(1125e-9 * (1 + np.exp(10)))


def test_resume_refuses_any_change_to_privacy_seed_or_data():
    old, _ = _planned()
    saved = json.loads(old.to_json())  # what config.json holds
    new, _ = _planned()
    plan.check_resume(saved, new)  # the same command resumes
    new.privacy.log_private_metrics = True  # where monitoring goes may change
    plan.check_resume(saved, new)
    off = acgan_liver_dp.get_config()
    off.privacy.enabled = False
    with pytest.raises(ValueError, match=r"privacy.enabled: True -> False"):
        plan.check_resume(saved, off)
    for field, value in (("seed", 1), ("data.source", "image-folder"), ("privacy.l2_clip", 2.0)):
        changed, _ = _planned()
        section, _, key = field.rpartition(".")
        (changed[section] if section else changed)[key] = value
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            plan.check_resume(saved, changed)
    plan.check_resume({"privacy": {"enabled": False}, "seed": 0}, {"privacy": {"enabled": False}, "seed": 1})


def test_unnoised_real_data_metrics_are_private():
    scalars = {"g_loss": 1.0, "d_real_logit": 2.0, "dp_grad_norm_max": 3.0, "dp/epsilon": 4.0,
               "eval/aux_accuracy": 0.5, "dp/num_dropped": 0.0, "steps_per_sec": 9.0}
    public, private = monitoring.split(scalars, ("g_loss",))
    assert set(public) == {"g_loss", "dp/epsilon", "eval/aux_accuracy", "steps_per_sec"}
    assert set(private) == {"d_real_logit", "dp_grad_norm_max", "dp/num_dropped"}


def test_clinical_term_is_refused_under_dp_unless_its_classifier_saw_only_public_data():
    c = stylegan2_ada_spine_dp.get_config()
    c.clinical.checkpoint, c.clinical.weight = "/clf", 0.1
    with pytest.raises(ValueError, match="trained without privacy.*G is no longer differentially private"):
        stylegan2.check_clinical_under_dp(c)
    c.clinical.public_data = True
    stylegan2.check_clinical_under_dp(c)
    report = export.privacy_report(_filled(c), 10, None)
    assert report["clinical_classifier"] == {"checkpoint": "/clf", "public_data": True}


def _filled(c):
    c.privacy.sampling_rate, c.privacy.delta = 0.1, 1e-5
    return c


def test_manifest_states_delta_prime_and_where_the_randomness_came_from():
    c = _filled(acgan_liver_dp.get_config())
    c.privacy.overflow_prob = 1e-7
    report = export.privacy_report(c, 50, None)
    assert report["delta_prime"] == pytest.approx(plan.delta_prime(1e-5, 1e-7, 50, report["epsilon"]))
    assert report["randomness"].startswith("secret")
    c.privacy.secure_rng = False
    assert "noise derivable from the seed" in export.privacy_report(c, 50, None)["randomness"]


def _words_in_bytes(words, blob: bytes, text: str) -> list[str]:
    """Secret words found in a file: as decimal / hex text, or two consecutive words as raw bytes."""
    hits = [f"word {w}" for w in words if str(w) in text or f"{w:08x}" in text]
    raw = np.asarray(words, np.uint32)
    for i in range(len(raw) - 1):
        for order in ("<", ">"):
            if raw[i:i + 2].astype(order + "u4").tobytes() in blob:
                hits.append(f"bytes of words {i},{i + 1}")
    return hits


@pytest.mark.slow  # three tiny DP runs + export; CI runs it after the default suite (.ci/run)
def test_dp_runs_are_unpredictable_resume_exactly_and_leak_no_secret(tmp_path):
    dp_config = os.path.join(os.path.dirname(CONFIG), "acgan_liver_dp.py")

    def train(wd, steps=2):
        args = ["jaxmedgan", "train", "--config", dp_config, "--workdir", str(wd),
                *tiny_overrides(tmp_path / "data", steps=steps, every=1), "--config.checkpoint.keep=5"]
        assert cli.main(args) == 0

    def d_params(wd, step):
        mngr = checkpointing.manager(str(wd), async_save=False)
        state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        return jax.tree_util.tree_leaves(state["d_params"])

    a, b = tmp_path / "a", tmp_path / "b"
    train(a)
    train(b)
    # Same config and seed, fresh secrets: different Poisson draws and noise after one step.
    assert any(not np.array_equal(x, y) for x, y in zip(d_params(a, 1), d_params(b, 1)))
    # Resume: a copy of run a interrupted after step 1 reruns to the same step-2 parameters, bitwise.
    c = tmp_path / "c"
    shutil.copytree(a, c)
    shutil.rmtree(c / "checkpoints" / "2")
    train(c)
    for x, y in zip(d_params(a, 2), d_params(c, 2)):
        np.testing.assert_array_equal(x, y)
    # No unnoised real-data metric in the public log; the secret in no file outside private/.
    records = metric_writers.read_jsonl(a / "metrics.jsonl")
    assert any("dp/epsilon" in r and "dp/delta_prime" in r for r in records)
    leaked = {k for r in records for k in r} & {"d_real_logit", "d_real_acc", "dp_grad_norm_max", "dp_num_examples",
                                                 "dp_loss_mean", "d_loss", "dp/num_dropped", "aux_real_acc"}
    assert not leaked
    words = json.load(open(secret.path(str(a))))["words"]
    out = tmp_path / "export"
    export.export(str(a), 4, str(out))
    scanned = 0
    for root in (a, out):
        for dirpath, _, files in os.walk(root):
            if os.path.relpath(dirpath, a).split(os.sep)[0] == secret.PRIVATE_DIR:
                continue
            for name in files:
                blob = open(os.path.join(dirpath, name), "rb").read()
                scanned += 1
                assert not _words_in_bytes(words, blob, blob.decode("latin-1")), os.path.join(dirpath, name)
    assert scanned > 10
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["privacy"]["randomness"].startswith("secret")
    assert manifest["privacy"]["delta_prime"] <= 1.01 * manifest["privacy"]["delta"]


def test_padding_buckets_pick_the_smallest_size_holding_the_draw_and_the_pipeline_reports_it():
    c = acgan_liver_dp.get_config()
    c.train.steps, c.train.batch_size, c.privacy.padding_buckets = 100, 16, 3
    p = plan.prepare(c, {}, 182, 1)
    assert len(p.buckets) == 3 and p.buckets[-1] == p.max_batch_size
    assert [p.bucket_for(k) for k in (0, p.buckets[0], p.buckets[0] + 1, p.max_batch_size)] == [
        p.buckets[0], p.buckets[0], p.buckets[1], p.max_batch_size]
    assert _planned()[1].buckets == (_planned()[1].max_batch_size,)  # default: one padded size
    src = [{"image": np.full((4, 4, 1), i, np.float32), "label": np.int32(0)} for i in range(40)]
    batch = pipeline.poisson_train_dataset(src, sampling_rate=0.2, max_batch_size=24, secret=secret.from_seed(0),
                                           seed=0, augment=False, process_index=0, process_count=1)[2]
    assert batch["num_real"] == batch["mask"].sum()  # the global draw's size, reals first
    assert batch["mask"][:batch["num_real"]].all()
