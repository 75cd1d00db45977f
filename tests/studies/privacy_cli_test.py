"""`jaxmedgan privacy epsilon|calibrate`: printed numbers equal the accounting functions; range errors."""
import re

import pytest

from jaxmedgan.privacy import accounting
from jaxmedgan.studies import privacy_cli as cli

Q, SIGMA, STEPS, DELTA = 256 / 60000, 1.1, 14063, 1e-5


def _value(out, name):
    m = re.search(rf"^{name} = (\S+)$", out, re.M)
    assert m, out
    return float(m.group(1))


@pytest.mark.parametrize("acc", ["rdp", "pld"])
def test_epsilon_prints_the_accountants_value(capsys, acc):
    code = cli.main(["epsilon", "--sampling-rate", repr(Q), "--noise-multiplier", str(SIGMA),
                     "--steps", str(STEPS), "--delta", str(DELTA), "--accountant", acc])
    out = capsys.readouterr().out
    assert code == 0
    assert _value(out, "epsilon") == accounting.epsilon(Q, SIGMA, STEPS, DELTA, accountant=acc)
    assert f"accountant: {acc}" in out and "sampling: poisson (q = 0.00426667)" in out


def test_epsilon_with_shuffle_says_it_is_an_approximation(capsys):
    assert cli.epsilon_command(["--sampling-rate", "0.01", "--noise-multiplier", "1", "--steps", "100",
                                "--delta", "1e-5", "--sampling", "shuffle"]) == 0
    out = capsys.readouterr().out
    assert _value(out, "epsilon") == accounting.epsilon(0.01, 1.0, 100, 1e-5, sampling="shuffle")
    assert "approximation" in out


def test_calibrate_prints_sigma_that_meets_the_target(capsys):
    code = cli.main(["calibrate", "--target-epsilon", "3", "--delta", str(DELTA), "--sampling-rate", repr(Q),
                     "--steps", str(STEPS)])
    out = capsys.readouterr().out
    assert code == 0
    sigma = _value(out, "noise_multiplier")
    assert sigma == accounting.calibrate_noise(3.0, DELTA, Q, STEPS)
    assert 2.97 <= accounting.epsilon(Q, sigma, STEPS, DELTA) <= 3.0


@pytest.mark.parametrize("flag,value,message", [
    ("--sampling-rate", "0", r"argument --sampling-rate: must be in \(0, 1\], got 0"),
    ("--sampling-rate", "1.5", r"argument --sampling-rate: must be in \(0, 1\], got 1.5"),
    ("--noise-multiplier", "0", r"argument --noise-multiplier: must be in \(0, inf\), got 0"),
    ("--delta", "1", r"argument --delta: must be in \(0, 1\), got 1"),
    ("--steps", "0", r"argument --steps: must be an integer >= 1, got 0"),
    ("--steps", "2.5", r"argument --steps: must be an integer >= 1, got '2.5'"),
    ("--accountant", "moments", r"argument --accountant: invalid choice: 'moments'"),
])
def test_epsilon_rejects_out_of_range_values(capsys, flag, value, message):
    args = {"--sampling-rate": "0.01", "--noise-multiplier": "1", "--steps": "10", "--delta": "1e-5"}
    args[flag] = value
    code = cli.epsilon_command([x for kv in args.items() for x in kv])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)


def test_calibrate_reports_unreachable_targets(capsys):
    code = cli.calibrate_command(["--target-epsilon", "1e5", "--delta", "1e-5", "--sampling-rate", "0.01",
                                  "--steps", "10"])
    assert code == 1
    assert "jaxmedgan privacy calibrate: error: target_epsilon=100000.0 is met" in capsys.readouterr().err


def test_main_dispatch_and_usage(capsys):
    assert cli.main([]) == 2 and "usage: jaxmedgan privacy" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    capsys.readouterr()
    assert cli.main(["epsilom"]) == 2
    assert "unknown command 'epsilom'" in capsys.readouterr().err
    assert cli.main(["epsilon", "--help"]) == 0
    assert "--noise-multiplier" in capsys.readouterr().out


def test_curve_is_listed_and_dispatched(capsys):
    assert cli.main(["--help"]) == 0
    assert "curve      privacy-utility curve" in capsys.readouterr().out
    assert cli.main(["curve", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jaxmedgan privacy curve --config CONFIG.py") and "--epsilons" in out
    assert cli.main(["curve", "--epsilons", "1"]) == 2  # no --config / --workdir / --classifier
    assert "--config, --workdir and --classifier are required" in capsys.readouterr().err
