"""StyleGAN2-ADA throughput benchmark runs end to end at 16 px for 2 steps (figures never asserted)."""
import pytest
import json

from benchmarks import stylegan2_throughput


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_stylegan2_throughput_smoke(tmp_path):
    out = tmp_path / "sg2.json"
    rows = stylegan2_throughput.main(["--resolution", "16", "--batch", "8", "--devices", "1", "--ada", "off",
                                      "--reg", "off", "--channel-base", "128", "--channel-max", "16",
                                      "--latent", "16", "--steps", "2", "--fast-compile", "--out", str(out)])
    assert len(rows) == 1
    saved = json.loads(out.read_text())[0]
    assert saved["steps"] == 2 and saved["images_per_s"] > 0 and saved["sec_per_kimg"] > 0
    assert set(saved["compile_s_by_phase"]) == {"Gmain", "Dmain", "finish"}  # no reg phases with --reg off
