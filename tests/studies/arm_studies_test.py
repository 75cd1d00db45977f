"""The arm studies (studies/diversity.py, studies/data_efficient.py): every arm's overrides name real
config keys, and the shared command line writes the JSON and the markdown table."""
import json
import os

import pytest

from jaxmedgan.studies import data_efficient, diversity, fold_gans


@pytest.mark.parametrize("module", [diversity, data_efficient], ids=["diversity", "data_efficient"])
def test_every_arm_override_is_a_known_key_of_its_config(module):
    for arm, (path, overrides) in module.ARMS.items():
        entries = [o.removeprefix("--config.") for o in overrides]
        config = fold_gans.load_gan_config(path, entries)  # raises naming an unknown key
        for entry in entries:
            key, value = entry.split("=", 1)
            node = config
            for part in key.split("."):
                node = node[part]
            assert str(node) == value or float(node) == float(value), (arm, key)


def test_study_main_writes_json_and_table_and_refuses_unknown_arms(tmp_path, capsys):
    seen = {}

    def run(args):
        seen["args"] = args
        return [{"arm": a, "train_s": 60.0, "metrics": {"fid_domain": 0.5}, "per_class": {}} for a in args.arms]

    out = str(tmp_path / "res" / "study.json")
    argv = ["--classifier", "C", "--workdir", str(tmp_path), "--out", out, "--arms", "base,diffaug"]
    diversity.study_main(argv, module="jaxmedgan.studies.data_efficient", description="d",
                         arms=data_efficient.ARMS, run=run, markdown=data_efficient.markdown)
    assert seen["args"].arms == ["base", "diffaug"] and seen["args"].num == 100
    saved = json.load(open(out))
    assert saved["command"].startswith("python -m jaxmedgan.studies.data_efficient --classifier C")
    assert [r["arm"] for r in saved["rows"]] == ["base", "diffaug"]
    table = open(os.path.splitext(out)[0] + ".md").read()
    assert "| base |" in table and "| 0.50 |" in table
    with pytest.raises(SystemExit):
        diversity.study_main(argv[:-1] + ["nope"], module="m", description="d", arms=data_efficient.ARMS,
                             run=run, markdown=data_efficient.markdown)
    assert "unknown arms ['nope']" in capsys.readouterr().err
