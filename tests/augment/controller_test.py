"""ADA p controller: direction and size of each update, clipping, modes."""
import numpy as np
import pytest

from jaxmedgan.augment import controller


def test_p_moves_up_when_d_overfits_and_down_when_it_does_not():
    s = controller.AdaSettings()
    ctl = controller.AdaController(s, batch_size=32)
    step = 32 * 4 / (500 * 1000)  # batch * interval / (ada_kimg * 1000)
    p, r_t = ctl.update(0.1, sign_sum=0.9 * 64, count=64)  # r_t = 0.9 > 0.6
    assert r_t == pytest.approx(0.9) and p == pytest.approx(0.1 + step)
    p, r_t = ctl.update(0.1, sign_sum=0.2 * 64, count=64)  # r_t = 0.2 < 0.6
    assert p == pytest.approx(0.1 - step)
    assert ctl.update(0.1, sign_sum=0.6 * 10, count=10)[0] == pytest.approx(0.1)  # at target: unchanged


def test_p_is_clipped_into_unit_interval_and_updates_every_interval():
    assert controller.adjust(0.0, -1.0, target=0.6, batch_size=64, interval=4, ada_kimg=500) == 0.0
    assert controller.adjust(0.9999, 1.0, target=0.6, batch_size=64, interval=4, ada_kimg=500) == 1.0
    ctl = controller.AdaController(controller.AdaSettings(interval=4), batch_size=8)
    assert [ctl.due(k) for k in range(1, 9)] == [False, False, False, True] * 2
    assert not controller.AdaController(controller.AdaSettings(mode="fixed", p=0.3), 8).due(4)
    p, r_t = ctl.update(0.2, 0.0, 0)
    assert p == 0.2 and np.isnan(r_t)


def test_many_updates_above_target_take_ada_kimg_to_reach_one():
    s = controller.AdaSettings(kimg=1.0)  # 1 kimg: p goes 0 -> 1 in 1000 images
    ctl = controller.AdaController(s, batch_size=50)
    p = 0.0
    for _ in range(5):  # 5 updates x 4 steps x 50 images = 1000 images
        p, _ = ctl.update(p, 1.0, 1.0)
    assert p == pytest.approx(1.0)


def test_settings_validate_and_read_config():
    assert not controller.AdaSettings(mode="none").augments
    assert controller.AdaSettings(mode="fixed", p=0.2).augments
    assert not controller.AdaSettings(mode="fixed", p=0.0).augments
    s = controller.AdaSettings.from_config({"mode": "fixed", "p": 0.25, "pipeline": "bgc"})
    assert s.mode == "fixed" and s.p == 0.25
    with pytest.raises(ValueError, match="ada.mode must be one of"):
        controller.AdaSettings(mode="sometimes")
    with pytest.raises(ValueError, match=r"Unknown config.ada key\(s\) \['taget'\]"):
        controller.AdaSettings.from_config({"taget": 0.5})
