"""Input-only robustness augmentations (fmc.data.robustness) and their config checks."""

from __future__ import annotations

import numpy as np
import pytest

from fmc.core.errors import FmcConfigError
from fmc.data.robustness import KINDS, RobustnessAugment


def _patch() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((8, 16, 16)).astype(np.float32)


def test_off_by_default_and_the_identity_when_off():
    view = _patch()
    augment = RobustnessAugment()
    assert not augment.enabled
    np.testing.assert_array_equal(augment.apply(view, np.random.default_rng(1)), view)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_the_view_reproducibly_and_keeps_its_shape(kind):
    view = _patch()
    augment = RobustnessAugment(probability=1.0, **{kind: 0.5})
    first = augment.apply(view, np.random.default_rng(3))
    again = augment.apply(view, np.random.default_rng(3))
    assert first.shape == view.shape and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, view)
    np.testing.assert_array_equal(view, _patch())  # the input is not modified in place


def test_attenuation_dims_one_side_and_blur_smooths():
    view = np.ones((8, 16, 16), np.float32)
    dimmed = RobustnessAugment(probability=1.0, attenuation=2.0).apply(view, np.random.default_rng(5))
    assert dimmed.max() <= 1.0 + 1e-6 and dimmed.min() < 0.99  # u drawn in [0, 2]
    noisy = _patch()
    blurred = RobustnessAugment(probability=1.0, blur=2.0).apply(noisy, np.random.default_rng(2))
    assert blurred.std() < noisy.std()


def test_config_errors_name_the_key():
    with pytest.raises(FmcConfigError, match="unknown key"):
        RobustnessAugment.from_mapping({"gama": 0.2})
    with pytest.raises(FmcConfigError, match="data.robustness.noise"):
        RobustnessAugment.from_mapping({"noise": -1})
    with pytest.raises(FmcConfigError, match="probability"):
        RobustnessAugment.from_mapping({"probability": 2})


def test_training_patches_change_the_view_only(h5_root):
    from fmc.data.dataset import PatchDataset
    from fmc.preprocessing.splits import read_list

    pairs = read_list(h5_root / "lists" / "study1_nucleus_train.csv", h5_root)
    common = dict(channels=["raw_image", "surface_distance"], patch_size=(8, 16, 16), seed=4)
    plain = PatchDataset(pairs, **common)
    robust = PatchDataset(pairs, robustness=RobustnessAugment(probability=1.0, noise=0.3),
                          **common)
    fixed = PatchDataset(pairs, robustness=RobustnessAugment(probability=1.0, noise=0.3),
                         fixed=True, **common)
    assert fixed.robustness is None  # validation/test patches are never augmented
    import torch

    torch.manual_seed(0)
    a = plain[0]
    torch.manual_seed(0)
    b = robust[0]
    np.testing.assert_array_equal(a["target"], b["target"])
    np.testing.assert_array_equal(a["input"][1], b["input"][1])  # surface distance unchanged
    assert not np.allclose(a["input"][0], b["input"][0])


def test_resample_z_keeps_constants_and_ramps():
    from fmc.data.robustness import resample_z

    constant = np.full((2, 12, 4, 4), 3.0, np.float32)
    np.testing.assert_allclose(resample_z(constant, 6), 3.0, rtol=1e-6)
    np.testing.assert_allclose(resample_z(constant, 20), 3.0, rtol=1e-6)
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 3, 3)).copy()
    up = resample_z(ramp, 16)  # finer planes: the ramp at the new plane centres
    np.testing.assert_allclose(up[4:12, 0, 0], (np.arange(4, 12) + 0.5) / 2 - 0.5, atol=1e-5)
    assert resample_z(ramp, 8) is ramp


def test_anisotropy_resamples_view_and_target_alike(h5_root):
    import torch

    from fmc.data.dataset import PatchDataset
    from fmc.preprocessing.splits import read_list

    pairs = read_list(h5_root / "lists" / "study1_nucleus_train.csv", h5_root)
    common = dict(channels=["raw_image", "surface_distance"], patch_size=(8, 16, 16), seed=1,
                  foreground_share=0.0)
    robust = PatchDataset(pairs, robustness=RobustnessAugment(probability=1.0, anisotropy=1.0),
                          epoch_samples=6, **common)
    factors = []
    for index in range(6):
        torch.manual_seed(index)
        sample = robust[index]
        assert sample["input"].shape == (2, 8, 16, 16) and sample["target"].shape == (1, 8, 16, 16)
        torch.manual_seed(index)
        factors.append(robust.robustness.z_step_factor(robust.generator(index)))
    assert min(factors) < 1 < max(factors)
