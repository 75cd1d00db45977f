"""The one source list agrees with the modules that implement the sources."""
import pytest

from jaxmedgan import config_validation, trainers
from jaxmedgan.data import brain_mri, native, paired, registry, tfds_builders
from configs import dcgan_liver


def test_registry_drives_the_builders_and_the_pair_loaders():
    assert set(tfds_builders.SOURCES) == set(registry.names(buildable=True))
    assert set(native.READERS) == set(registry.names(native=True))
    assert set(paired.SOURCES) == {"mni-brain", "brats-folder", "nifti-folder", "retina", "fundus-folder"}
    assert registry.get("brats-folder").map_names == brain_mri.CLASS_NAMES
    assert set(tfds_builders.CHEST_SOURCES) == {"phantom-chest", "chexpert", "chestxray14"}
    assert not registry.get("phantom-liver").needs_image_dir and registry.get("npz").needs_image_dir


def test_unknown_sources_are_refused_with_a_hint():
    with pytest.raises(ValueError, match=r"Unknown data source 'image-foldr' \(did you mean 'image-folder'\?\)"):
        registry.get("image-foldr")
    with pytest.raises(ValueError, match=r"'mni-brain' is read in memory"):
        tfds_builders.build_dataset("mni-brain", "/nonexistent")
    c = dcgan_liver.get_config()
    c.data.source = "npzz"
    with pytest.raises(config_validation.ConfigError, match=r"data.source: Unknown data source 'npzz'.*'npz'"):
        config_validation.validate(c, None, image_sizes=trainers.image_sizes)
