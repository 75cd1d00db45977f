"""The typed family contract: every registered trainer exposes a well-formed `Family`."""
import dataclasses

import pytest

from jaxmedgan import trainers
from jaxmedgan.studies import inversion
from jaxmedgan.trainers import common, contract

CALLABLE_FIELDS = [f.name for f in dataclasses.fields(contract.Family) if "Callable" in str(f.type)]
TUPLE_FIELDS = [f.name for f in dataclasses.fields(contract.Family) if str(f.type).startswith("tuple")]


def test_fields_are_sorted_into_callables_and_tuples():
    named = {"name", "kind", *CALLABLE_FIELDS, *TUPLE_FIELDS}
    assert named == {f.name for f in dataclasses.fields(contract.Family)}
    assert set(contract.STEP_FIELDS) <= set(CALLABLE_FIELDS)
    assert common.Family is contract.Family  # fit's argument is the contract


@pytest.mark.parametrize("name", sorted(trainers.TRAINERS))
def test_every_registered_family_is_well_formed(name):
    family = trainers.family(name)
    assert isinstance(family, contract.Family) and family is trainers.get(name).FAMILY
    assert family.name == name and family.kind in contract.KINDS
    for field in CALLABLE_FIELDS:  # optional capabilities: None or callable
        value = getattr(family, field)
        assert value is None or callable(value), (name, field)
    for field in TUPLE_FIELDS:
        value = getattr(family, field)
        assert isinstance(value, tuple) and all(isinstance(v, str) for v in value), (name, field)
    # The step contract comes whole (init_state, train_step, generate all callable) or not at all.
    assert {getattr(family, f) is None for f in contract.STEP_FIELDS} == {not family.has_steps}
    if family.kind == "gan":  # a GAN's workdir can be drawn from, one way or another
        assert family.has_steps or family.draw is not None or family.generate_labelled is not None
    else:
        assert not family.has_steps and family.draw is None and family.generate_labelled is None
    assert set(family.latent_spaces) <= set(inversion.SPACES)
    if family.latent_spaces:  # driven from latents: `generate` takes them; 'z' is always one of them
        assert family.has_steps and "z" in family.latent_spaces and family.draw is None
    if family.stage_training_set_size is not None:
        assert family.stages


def test_capabilities_each_family_declares():
    f = trainers.family
    assert [n for n in sorted(trainers.TRAINERS) if f(n).discriminate] == ["gan", "pggan"]
    assert [n for n in sorted(trainers.TRAINERS) if f(n).draw] == ["dual_gan", "pix2pix"]
    assert [n for n in sorted(trainers.TRAINERS) if f(n).generate_labelled] == ["per_class"]
    assert [n for n in sorted(trainers.TRAINERS) if f(n).kind == "classifier"] == ["classifier"]
    assert [n for n in sorted(trainers.TRAINERS) if f(n).check_private_generator] == ["pix2pix"]
    assert trainers.with_latent_space("z") == ["gan", "pggan", "stylegan2"]
    assert trainers.with_latent_space("w") == ["stylegan2"]
    assert f("stylegan2").latent_spaces[0] == "w" and f("gan").latent_spaces[0] == "z"  # inversion's default
    assert f("dual_gan").stages == ("stage1", "stage2")


def test_image_sizes_come_from_the_family():
    from configs import acgan_liver, pix2pix_brain, stylegan2_ada_spine

    assert trainers.image_sizes(stylegan2_ada_spine.get_config()) == (8, 1024)
    assert trainers.image_sizes(acgan_liver.get_config()) == (8, None)
    c = pix2pix_brain.get_config()
    c.model.bottleneck_size = 4
    assert trainers.image_sizes(c) == (8, None)
    c.trainer = "classifier"
    assert trainers.image_sizes(c) is None
    c.trainer = "nope"
    assert trainers.image_sizes(c) is None


def test_a_family_without_steps_is_refused_by_fit(tmp_path):
    with pytest.raises(ValueError, match="'dual_gan' supplies no step functions"):
        common.fit(None, str(tmp_path), trainers.family("dual_gan"))


def test_the_contract_refuses_a_partial_step_contract_or_an_unknown_kind():
    with pytest.raises(ValueError, match="give all or none"):
        contract.Family(name="half", init_state=lambda c, r: None)
    with pytest.raises(ValueError, match="kind 'vae'"):
        contract.Family(name="x", kind="vae")
    with pytest.raises(ValueError, match="Unknown config.trainer 'nope'"):
        trainers.family("nope")
