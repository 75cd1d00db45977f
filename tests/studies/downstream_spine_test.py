"""The spine downstream config: abnormal vs normal from 4 lesion types, synthetic labels merged alike."""
import numpy as np

from configs import classifier_spine, downstream_spine
from jaxmedgan import images
from jaxmedgan.data import spine_phantoms
from jaxmedgan.studies import downstream


def test_spine_configs_relabel_the_four_lesion_types_to_abnormal_vs_normal(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMEDGAN_DATA_DIR", str(tmp_path / "data"))
    counts = (8, 4, 4, 4)  # a small phantom-spine build (the dataset fingerprint includes the counts)
    monkeypatch.setattr(spine_phantoms, "TRAIN_COUNTS", counts)
    monkeypatch.setattr(spine_phantoms, "TEST_COUNTS", (2, 2, 2, 2))
    assert classifier_spine.get_config().model.num_classes == len(spine_phantoms.CLASS_NAMES)
    c = downstream_spine.get_config()
    c.data.image_size, c.model.features, c.mesh.data = 16, (4, 8), 1
    c.train.batch_size, c.train.steps, c.optim.warmup_steps, c.train.quiet = 8, 2, 1, True
    c.downstream.num_folds, c.downstream.seeds, c.downstream.bootstrap_samples = 2, (0,), 20
    c.downstream.synthetic_per_class = 3
    c.downstream.experiments = ("real", "synthetic")
    x, y = spine_phantoms.generate((3, 3, 3, 3), 4242, 16)  # stand-in GAN samples in the 4 source classes
    np.savez(tmp_path / "samples.npz", images=images.to_uint8(x), labels=y.astype(np.int64))
    report = downstream.run(c, str(tmp_path / "samples.npz"), str(tmp_path / "out"))
    assert report["task"]["class_names"] == ["normal", "abnormal"]
    assert report["task"]["class_counts"] == [8, 12]
    assert report["synthetic"]["class_counts"] == [3, 9]  # 3 normal + 3 x 3 abnormal lesion types
    assert report["reference"] is None
    assert report["experiments"]["synthetic"]["train_size_mean"] == 12
