"""fmc.data.datamodule / fmc.data.patches: patch placement, padding, augmentation, fixed
validation, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.data.datamodule import FmcDataModule, PatchDataset, resolve_list
from fmc.data.patches import (
    Augmentation,
    apply_augmentation,
    centred_origin,
    default_augment_axes,
    default_rot90_planes,
    lateral_augment_axes,
    pad_to_patch,
    uniform_origin,
)
from fmc.io.h5 import FOREGROUND, write_h5
from fmc.preprocessing.channel_specs import scale_channel
from fmc.preprocessing.conversion import convert_folder
from fmc.preprocessing.splits import read_list, write_lists
from fmc.simulation.synth import write_pair

SHAPE = (24, 48, 48)


@pytest.fixture(scope="module")
def h5_root(tmp_path_factory) -> Path:
    """Four synthetic study-1 nucleus pairs, prepared as fmc.prepare does, with split lists."""
    base = tmp_path_factory.mktemp("data")
    raw, h5 = base / "raw", base / "h5"
    for index in range(4):
        write_pair(raw, 1, "nucleus", index, shape=SHAPE, scale=3.0)
    convert_folder(raw, h5, progress=False)
    write_lists(h5, fractions=(0.5, 0.25, 0.25))
    return h5


def ramp() -> np.ndarray:
    """Every voxel holds its own coordinates: z·10000 + y·100 + x (exact in float32)."""
    z, y, x = np.indices(SHAPE)
    return (z * 10000 + y * 100 + x).astype(np.float32)


@pytest.fixture(scope="module")
def ramp_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A pair whose target equals its raw_image, so that any misalignment shows."""
    folder = tmp_path_factory.mktemp("ramp")
    attrs = {"study": 1, "content": "nucleus", "spacing_zyx": [1.0, 0.2, 0.2]}
    volume = ramp()
    angle = write_h5(folder / "r_angle.h5", {"data/raw_image": volume,
                                             "data/surface_distance": volume - 50.0,
                                             "data/light_map": volume}, {**attrs, "kind": "angle"})
    coordinates = np.array([[0, 0, 0], [12, 24, 24], [23, 47, 47], [5, 40, 3]], np.uint16)
    fused = write_h5(folder / "r_fused.h5", {"data/raw_image": volume, FOREGROUND: coordinates},
                     {**attrs, "kind": "fused"})
    return angle, fused


def test_scale_channel():
    distance = np.array([-1000.0, 0.0, 50.0, 1000.0])
    assert np.array_equal(scale_channel("raw_image", distance), distance.astype(np.float32))
    scaled = scale_channel("surface_distance", distance)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, [-1.0, 0.0, np.tanh(1.0), 1.0], atol=1e-6)
    np.testing.assert_allclose(scale_channel("data/light_map", np.array([100.0])), [np.tanh(1.0)])
    np.testing.assert_allclose(scale_channel("light_map", np.array([10.0]), 10.0), [np.tanh(1.0)])
    with pytest.raises(FmcConfigError, match="choose one of raw_image, surface_distance, light_map"):
        scale_channel("nuclei", distance)


def test_placement_rules():
    assert centred_origin((12, 24, 24), (8, 16, 16), SHAPE).tolist() == [8, 16, 16]
    assert centred_origin((0, 47, 1), (8, 16, 16), SHAPE).tolist() == [0, 32, 0]  # clamped
    assert centred_origin((5, 5, 5), (32, 16, 16), SHAPE).tolist() == [0, 0, 0]  # too small: 0
    starts = {tuple(uniform_origin(np.random.default_rng(i), (23, 47, 48), SHAPE)) for i in range(64)}
    assert {s[0] for s in starts} == {0, 1} and {s[1] for s in starts} == {0, 1}  # last start drawn
    assert {s[2] for s in starts} == {0}


def test_pad_to_patch_reflects_and_falls_back():
    volume = ramp()[None]
    padded = pad_to_patch(volume, (32, 50, 48))
    assert padded.shape == (1, 32, 50, 48)
    assert np.array_equal(padded[0, 24, :48], volume[0, 22])  # reflection about the last plane
    assert np.array_equal(padded[0, :24, 49], volume[0, :, 45])
    assert np.array_equal(padded[0, :24, :48], volume[0])
    single = pad_to_patch(np.ones((1, 1, 2, 2), np.float32), (3, 2, 2))
    assert single.shape == (1, 3, 2, 2) and np.all(single == 1)


def test_default_augment_axes():
    assert default_augment_axes(1) == (1, 2)
    assert default_augment_axes(3) == ()
    assert default_augment_axes(4) == (0, 1)
    assert default_augment_axes(None) == ()
    assert default_rot90_planes((1, 2), (16, 32, 32)) == ((1, 2),)
    assert default_rot90_planes((0, 1), (16, 32, 32)) == ()


def test_lateral_flips_cover_every_lateral_side():
    assert lateral_augment_axes([1, 2, 4, 5]) == (1, 2)     # Z is studies 1-2's light axis
    assert lateral_augment_axes([4, 5]) == (0, 1, 2)        # nobody's light along Z
    assert lateral_augment_axes([3]) == (1, 2)              # study 3's light has a Z part
    assert lateral_augment_axes([4, None]) == (1, 2)        # an unknown study's might
    assert lateral_augment_axes([]) == (1, 2)


def test_pooled_studies_keep_their_light_unless_lateral_is_asked_for(tmp_path):
    from tests.conftest import TINY_DATA

    raw, root = tmp_path / "raw", tmp_path / "h5"
    for study in (1, 4):
        write_pair(raw, study, "nucleus", study, **TINY_DATA)
    convert_folder(raw, root, progress=False)
    rows = [f"image_{s}_nucleus_angle.h5;image_{s}_nucleus_fused.h5" for s in (1, 4)]
    (root / "pooled.csv").write_text("\n".join(rows) + "\n")
    settings = dict(root=root, train_list=root / "pooled.csv", patch_size=(8, 16, 16))
    # auto: only Y is no study's light axis; lateral: Y and X, turned in YX.
    for flip_axes, expected in (("auto", ((1,), ())), ("lateral", ((1, 2), ((1, 2),)))):
        pooled = FmcDataModule(**settings, flip_axes=flip_axes)
        pooled.setup("fit")
        assert pooled.augmentation_axes() == expected
        assert pooled.datasets["train"].flip_axes == expected[0]
    (root / "study4.csv").write_text(rows[1] + "\n")
    alone = FmcDataModule(**{**settings, "train_list": root / "study4.csv"}, flip_axes="lateral",
                          degradation_axes=["X"])
    alone.setup("fit")
    assert alone.augmentation_axes() == ((0, 1, 2), ((1, 2),))  # study 4's light is along X only
    with pytest.raises(FmcConfigError, match="use auto, lateral or axes"):
        FmcDataModule(**settings, flip_axes="sideways").setup("fit")


def test_items_shapes_and_dtypes(h5_root):
    pairs = read_list(h5_root / "lists" / "study1_nucleus_train.csv")
    dataset = PatchDataset(pairs, ["raw_image", "surface_distance"], (16, 32, 32), samples_per_volume=3)
    assert len(dataset) == 3 * len(pairs)
    item = dataset[len(dataset) - 1]
    assert item["input"].shape == (2, 16, 32, 32) and item["input"].dtype == torch.float32
    assert item["target"].shape == (1, 16, 32, 32) and item["target"].dtype == torch.float32
    assert item["origin"].dtype == torch.int64 and item["index"] == len(dataset) - 1
    assert item["input"][1].abs().max() <= 1.0  # the distance channel is tanh-scaled
    pickle.loads(pickle.dumps(dataset))  # open handles are never pickled
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_foreground_patch_is_centred(ramp_pair):
    patch = (8, 16, 16)
    dataset = PatchDataset([ramp_pair], ["raw_image"], patch, foreground_share=1.0,
                           samples_per_volume=40)
    coordinates = np.array([[0, 0, 0], [12, 24, 24], [23, 47, 47], [5, 40, 3]])
    allowed = {tuple(centred_origin(c, patch, SHAPE)) for c in coordinates}
    origins = {tuple(dataset[i]["origin"].tolist()) for i in range(len(dataset))}
    assert origins <= allowed and len(origins) > 1
    # The unclamped coordinate sits exactly at the patch centre.
    assert (8, 16, 16) in origins and np.array_equal(coordinates[1] - patch_half(patch), [8, 16, 16])


def patch_half(patch):
    return np.array(patch) // 2


def test_patch_larger_than_volume_is_padded(ramp_pair):
    dataset = PatchDataset([ramp_pair], ["raw_image"], (32, 64, 40), foreground_share=0.0)
    item = dataset[0]
    assert item["input"].shape == (1, 32, 64, 40) and item["target"].shape == (1, 32, 64, 40)
    origin = item["origin"].tolist()
    assert origin[:2] == [0, 0]
    expected = pad_to_patch(ramp()[None, :, :, origin[2]:origin[2] + 40], (32, 64, 40))
    assert np.array_equal(item["input"].numpy(), expected)


def test_fixed_patches_repeat_across_epochs_instances_and_workers(h5_root):
    pairs = read_list(h5_root / "lists" / "study1_nucleus_train.csv")

    def origins(dataset, workers=0):
        loader = DataLoader(dataset, batch_size=1, num_workers=workers)
        return [(int(b["index"]), tuple(b["origin"][0].tolist()), float(b["input"].sum()))
                for b in loader]

    kwargs = dict(channels=["raw_image"], patch_size=(8, 16, 16), samples_per_volume=4, fixed=True,
                  seed=3, flip_axes="YX")
    first = PatchDataset(pairs, **kwargs)
    reference = origins(first)
    assert origins(first) == reference  # second epoch
    assert origins(PatchDataset(pairs, **kwargs)) == reference  # another instance
    assert origins(PatchDataset(pairs, **kwargs), workers=2) == reference
    assert origins(first, workers=2) == reference  # workers forked after the parent opened files
    assert len({o for _, o, _ in reference}) > 1
    assert origins(PatchDataset(pairs, **{**kwargs, "seed": 4})) != reference


def test_training_draws_differ_by_epoch_and_reproduce_with_seed(ramp_pair):
    dataset = PatchDataset([ramp_pair], ["raw_image"], (8, 16, 16), samples_per_volume=8)

    def epoch():
        return [tuple(dataset[i]["origin"].tolist()) for i in range(len(dataset))]

    L.seed_everything(11, verbose=False)
    first, second = epoch(), epoch()
    assert first != second
    L.seed_everything(11, verbose=False)
    assert epoch() == first


def test_augmentation_keeps_alignment_and_allowed_axes(ramp_pair):
    dataset = PatchDataset([ramp_pair], ["raw_image", "light_map"], (8, 16, 16), samples_per_volume=40,
                           flip_axes="YX", rot90_planes=["YX"],
                           channel_scales_um={"light_map": 1e9})
    changed = 0
    for index in range(len(dataset)):
        item = dataset[index]
        image, target = item["input"][0].numpy(), item["target"][0].numpy()
        assert np.array_equal(image, target)
        # Z is never flipped nor rotated: each plane is one z of the source, in order.
        z = np.floor(image / 10000).astype(int)
        assert np.all(z == z[:, :1, :1]) and np.all(np.diff(z[:, 0, 0]) == 1)
        origin = item["origin"].numpy()
        window = tuple(slice(o, o + p) for o, p in zip(origin, (8, 16, 16), strict=True))
        changed += not np.array_equal(image, ramp()[window])
    assert changed > 20  # with 2 flips and 4 turns, 1/16 of draws are the identity


def test_apply_augmentation_on_channels():
    array = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)
    turned = apply_augmentation(array, Augmentation(flips=(0,), rotations=(((1, 2), 1),)))
    assert np.array_equal(turned, np.rot90(array[:, ::-1], 1, axes=(2, 3)))
    assert turned.flags.c_contiguous


def test_fixed_dataset_never_augments(ramp_pair):
    dataset = PatchDataset([ramp_pair], ["raw_image"], (8, 16, 16), samples_per_volume=10,
                           flip_axes="ZYX", rot90_planes=["YX"], fixed=True)
    for index in range(len(dataset)):
        item = dataset[index]
        window = tuple(slice(o, o + p) for o, p in zip(item["origin"].tolist(), (8, 16, 16), strict=True))
        assert np.array_equal(item["input"][0].numpy(), ramp()[window])


def test_rot90_needs_equal_sides(ramp_pair):
    with pytest.raises(FmcConfigError, match="equal patch sides"):
        PatchDataset([ramp_pair], ["raw_image"], (8, 16, 32), rot90_planes=["YX"])


def datamodule(root, **kwargs) -> FmcDataModule:
    settings = dict(root=root, train_list="study1_nucleus_train.csv", val_list="study1_nucleus_val",
                    channels=["raw_image", "surface_distance"], patch_size=(8, 16, 16))
    return FmcDataModule(**{**settings, **kwargs})


def test_datamodule_with_two_workers(h5_root):
    module = datamodule(h5_root, num_workers=2, batch_size=2, samples_per_volume=2)
    module.setup("fit")
    assert module.in_channels == 2
    batches = list(module.train_dataloader())
    assert len(batches) == 2 and batches[0]["input"].shape == (2, 2, 8, 16, 16)
    val_first = [b["origin"] for b in module.val_dataloader()]
    val_second = [b["origin"] for b in module.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(val_first, val_second, strict=True))
    info = module.dataset_info()
    assert info["study"] == 1 and info["content"] == "nucleus" and info["channels"] == \
        ["raw_image", "surface_distance"]
    assert info["spacing_zyx"] == [3.0, 0.585, 0.585] and info["flip_axes"] == "YX"
    assert info["rot90_planes"] == ["YX"] and info["patch_size"] == [8, 16, 16]
    module.teardown("fit")
    explicit = datamodule(h5_root, degradation_axes=["X"])
    explicit.setup("fit")
    assert explicit.augmentation_axes() == ((0, 1), ())  # patch Z != Y: no rotation
    assert datamodule(h5_root, augment=False).augmentation_axes() == ((), ())


class TinyModel(L.LightningModule):
    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = torch.nn.Conv3d(in_channels, 1, 1)

    def training_step(self, batch, _):
        return torch.nn.functional.l1_loss(self.conv(batch["input"]), batch["target"])

    def validation_step(self, batch, _):
        self.log("val_loss", torch.nn.functional.l1_loss(self.conv(batch["input"]), batch["target"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("with_val", [True, False])
def test_lightning_fit(h5_root, with_val):
    module = datamodule(h5_root, val_list="study1_nucleus_val" if with_val else None)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyModel(module.in_channels), datamodule=module)
    assert trainer.global_step == 2 * len(module.datasets["train"])


def test_missing_list_names_it(h5_root):
    with pytest.raises(FmcInputError, match="nope_train"):
        datamodule(h5_root, train_list="nope_train.csv").setup("fit")
    with pytest.raises(FmcConfigError, match="train_list"):
        datamodule(h5_root, train_list=None).setup("fit")


def test_empty_list_names_it(h5_root, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")
    with pytest.raises(FmcInputError, match=r"empty\.csv: split list is empty"):
        datamodule(h5_root, train_list=empty).setup("fit")


def test_missing_file_names_it(h5_root, tmp_path):
    listed = tmp_path / "bad.csv"
    listed.write_text("image_0_nucleus_angle.h5;ghost_fused.h5\n")
    with pytest.raises(FmcInputError, match=r"bad\.csv:1: .*ghost_fused\.h5 does not exist"):
        datamodule(h5_root, train_list=listed).setup("fit")


def test_missing_channel_names_file_and_dataset(ramp_pair, tmp_path):
    angle = write_h5(tmp_path / "x_angle.h5", {"data/raw_image": ramp()}, {"kind": "angle"})
    listed = tmp_path / "lists" / "train.csv"
    listed.parent.mkdir()
    listed.write_text(f"{angle};{ramp_pair[1]}\n")
    module = FmcDataModule(root=tmp_path, train_list="train.csv",
                           channels=["raw_image", "light_map"], patch_size=(8, 16, 16))
    with pytest.raises(FmcInputError) as error:
        module.validate()
    message = str(error.value)
    assert "x_angle.h5" in message and "data/light_map" in message and "holds data/raw_image" in message
    assert resolve_list("train", tmp_path) == listed


def test_bad_settings(h5_root):
    with pytest.raises(FmcConfigError, match="patch_size"):
        datamodule(h5_root, patch_size=(8, 16)).validate()
    with pytest.raises(FmcConfigError, match="patch_size"):
        datamodule(h5_root, patch_size=(8, 0, 16)).validate()
    with pytest.raises(FmcConfigError, match="choose one of raw_image, surface_distance, light_map"):
        datamodule(h5_root, channels=["raw_image", "nuclei"]).validate()
