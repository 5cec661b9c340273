"""Rare and thin classes (issue 23): class-aware crops (TrainTransform.crop_origin), copy-paste of
rare-class pixels between frames (training/copy_paste.py) and their config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training import _tiny_config, stripes  # noqa: F401  (the stripes fixture)

from bisenetv2_ros.classes import CAMVID, IGNORE_INDEX
from training.augmentation import TrainTransform
from training.config import TrainConfig
from training.copy_paste import RareClassPaste
from training.datasets import DatasetError, rare_class_ids
from training.train import Trainer

CROP = (32, 48)


def _transform(fraction: float, ids=(3,)) -> TrainTransform:
    return TrainTransform(CROP, [1.0], [0.5] * 3, [0.25] * 3, hflip=False, rare_class_ids=ids,
                          rare_crop_fraction=fraction)


def _label_with_pixel(y: int, x: int, shape=(100, 120), value: int = 3) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[y, x] = value
    return label


@pytest.mark.parametrize("y, x", [(50, 60), (17, 90), (80, 30)])
def test_every_crop_is_centred_on_the_rare_pixel_when_the_fraction_is_one(y, x):
    transform, rng = _transform(1.0), np.random.default_rng(0)
    for _ in range(20):
        top, left = transform.crop_origin(_label_with_pixel(y, x), rng)
        assert (top, left) == (y - CROP[0] // 2, x - CROP[1] // 2)


@pytest.mark.parametrize("y, x, expected", [(0, 0, (0, 0)), (99, 119, (100 - 32, 120 - 48)),
                                            (2, 118, (0, 120 - 48)), (95, 5, (100 - 32, 0))])
def test_crops_at_the_borders_are_clamped_inside_the_frame_and_keep_the_pixel(y, x, expected):
    top, left = _transform(1.0).crop_origin(_label_with_pixel(y, x), np.random.default_rng(1))
    assert (top, left) == expected
    assert top <= y < top + CROP[0] and left <= x < left + CROP[1]


def test_the_crop_lands_on_one_of_several_rare_pixels_of_any_listed_class():
    label = np.zeros((100, 120), dtype=np.uint8)
    label[10, 100], label[90, 10] = 3, 7  # two rare classes; class 1 everywhere else is not rare
    label[label == 0] = 1
    transform, rng = _transform(1.0, ids=(7, 3)), np.random.default_rng(2)
    origins = {transform.crop_origin(label, rng) for _ in range(40)}
    assert origins == {(0, 120 - 48), (100 - 32, 0)}  # both clamped: (10, 100) and (90, 10)


def test_fraction_zero_draws_exactly_the_uniform_crops_of_a_transform_without_rare_classes():
    label = _label_with_pixel(50, 60)
    rare, plain = _transform(0.0), TrainTransform(CROP, [1.0], [0.5] * 3, [0.25] * 3, hflip=False)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    origins = [rare.crop_origin(label, a) for _ in range(200)]
    assert origins == [plain.crop_origin(label, b) for _ in range(200)]  # same draws: the data stream is kept
    tops, lefts = zip(*origins)
    assert min(tops) >= 0 and max(tops) <= 100 - 32 and min(lefts) >= 0 and max(lefts) <= 120 - 48
    assert len(set(origins)) > 150  # spread over the frame, not centred on the pixel
    assert origins.count((50 - 16, 60 - 24)) < 3


def test_a_partial_fraction_centres_about_that_share_and_a_frame_without_rare_pixels_falls_back():
    transform, rng = _transform(0.5), np.random.default_rng(4)
    centred = sum(transform.crop_origin(_label_with_pixel(50, 60), rng) == (34, 36) for _ in range(400))
    assert 160 <= centred <= 240
    no_rare = np.zeros((100, 120), dtype=np.uint8)
    origins = {_transform(1.0).crop_origin(no_rare, rng) for _ in range(50)}
    assert len(origins) > 40 and all(0 <= t <= 68 and 0 <= l <= 72 for t, l in origins)


def test_rare_class_names_map_to_ids_and_an_unknown_name_lists_the_classes():
    assert rare_class_ids(CAMVID.names, ["pole", "Sign Symbol", "bicyclist"]) == [2, 6, 10]
    expected = (r"^data.rare_classes \['lamp post'\] are not classes of this dataset: \['sky', 'building', "
                r"'pole', .*'bicyclist'\]$")
    with pytest.raises(DatasetError, match=expected):
        rare_class_ids(CAMVID.names, ["pole", "lamp post"])
    with pytest.raises(DatasetError, match=r"^data.copy_paste_classes \['x'\] are not"):
        rare_class_ids(CAMVID.names, ["x"], "data.copy_paste_classes")


@pytest.mark.parametrize("data, message", [
    ({"rare_classes": ["pole"], "rare_crop_fraction": 1.5}, r"data.rare_crop_fraction must be in \[0, 1\], got 1.5"),
    ({"rare_classes": ["pole"], "rare_crop_fraction": -0.1}, r"data.rare_crop_fraction must be in \[0, 1\]"),
    ({"rare_crop_fraction": 0.5}, r"data.rare_crop_fraction > 0 needs data.rare_classes"),
    ({"copy_paste_probability": 2.0, "rare_classes": ["pole"]}, r"data.copy_paste_probability must be in \[0, 1\]"),
    ({"copy_paste_probability": 0.5}, r"needs data.copy_paste_classes or data.rare_classes"),
])
def test_config_rejects_bad_rare_class_settings(data, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({"data": data})
    TrainConfig.from_dict({"data": {"rare_classes": ["pole"], "rare_crop_fraction": 0.5,
                                    "copy_paste_probability": 0.5}})  # the valid combination loads


def test_trainer_wires_the_options_and_names_an_unknown_class(stripes, tmp_path):  # noqa: F811
    config = _tiny_config(stripes, tmp_path / "run", 1)
    config.data.rare_classes, config.data.rare_crop_fraction = ["bright"], 0.5
    config.data.copy_paste_probability, config.data.copy_paste_classes = 0.25, ["mid", "dark"]
    transform = Trainer(config, progress=False).train_set.transform
    assert transform.rare_class_ids.tolist() == [1] and transform.rare_crop_fraction == 0.5
    assert isinstance(transform.paste, RareClassPaste) and transform.paste.class_ids.tolist() == [0, 2]
    assert transform.paste.probability == 0.25 and transform.paste.frame_count == 6
    config.data.copy_paste_classes = ["pole"]
    with pytest.raises(DatasetError, match=r"data.copy_paste_classes \['pole'\] are not classes of this dataset: "
                                           r"\['dark', 'bright', 'mid'\]"):
        Trainer(config, progress=False)


# ----------------------------------------------------------------------------------------------
# Copy-paste


def _donors():
    """Frame 0: a class-5 block (rare) on class-1 background; frame 1: no rare pixel."""
    rng = np.random.default_rng(9)
    image0 = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    label0 = np.ones((20, 30), dtype=np.uint8)
    label0[4:12, 3:9] = 5
    frames = [(image0, label0), (np.full((20, 30, 3), 7, np.uint8), np.ones((20, 30), np.uint8))]
    return frames, lambda index: frames[index]


def test_paste_copies_only_the_rare_pixels_of_the_donor_with_their_labels():
    frames, load = _donors()
    paste = RareClassPaste(load, 1, [5], probability=1.0)
    image, label = np.zeros((20, 30, 3), np.uint8), np.full((20, 30), 2, np.uint8)
    seen_flips = set()
    for seed in range(12):
        out_image, out_label = paste(image, label, np.random.default_rng(seed))
        donor_image, donor_label = frames[0]
        mask = donor_label == 5
        flipped = not (out_label == 5)[mask].all()
        if flipped:  # the donor is mirrored half of the time
            donor_image, donor_label, mask = donor_image[:, ::-1], donor_label[:, ::-1], mask[:, ::-1]
        seen_flips.add(flipped)
        assert (out_label[mask] == 5).all() and (out_label[~mask] == 2).all()  # the donor's class 1 is not pasted
        assert np.array_equal(out_image[mask], donor_image[mask]) and (out_image[~mask] == 0).all()
    assert seen_flips == {True, False}
    assert (label == 2).all() and (image == 0).all()  # the inputs are not modified in place


def test_paste_resizes_a_donor_of_another_size():
    _, load = _donors()
    paste = RareClassPaste(load, 1, [5], probability=1.0)
    _, out_label = paste(np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60), np.uint8), np.random.default_rng(0))
    assert out_label.shape == (40, 60) and (out_label == 5).sum() == 4 * 8 * 6  # the 8x6 block, doubled


def test_paste_switched_off_or_from_a_donor_without_rare_pixels_changes_nothing_and_off_draws_nothing():
    frames, load = _donors()
    image, label = np.zeros((20, 30, 3), np.uint8), np.full((20, 30), 2, np.uint8)
    rng, reference = np.random.default_rng(5), np.random.default_rng(5)
    out_image, out_label = RareClassPaste(load, 2, [5], probability=0.0)(image, label, rng)
    assert out_image is image and out_label is label and rng.random() == reference.random()
    loads = []
    only_plain = RareClassPaste(lambda i: loads.append(i) or frames[1], 2, [5], probability=1.0)
    out_image, out_label = only_plain(image, label, np.random.default_rng(6))
    assert loads and (out_label == 2).all() and (out_image == 0).all()


def test_paste_probability_is_the_share_of_samples_that_receive_pixels():
    _, load = _donors()
    paste = RareClassPaste(load, 1, [5], probability=0.3)
    rng = np.random.default_rng(7)
    pasted = sum((paste(np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30), np.uint8), rng)[1] == 5).any()
                 for _ in range(300))
    assert 60 <= pasted <= 120


@pytest.mark.parametrize("kwargs, message", [({"probability": 1.2}, r"must be in \[0, 1\], got 1.2"),
                                             ({"frame_count": 0}, "at least one donor frame"),
                                             ({"class_ids": []}, "at least one class")])
def test_paste_arguments_are_checked(kwargs, message):
    arguments = {"load": lambda i: None, "frame_count": 3, "class_ids": [1], "probability": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        RareClassPaste(**arguments)


def test_the_training_transform_pastes_before_cropping_so_the_crop_can_centre_on_pasted_pixels():
    _, load = _donors()
    transform = TrainTransform((8, 10), [1.0], [0.5] * 3, [0.25] * 3, hflip=False, rare_class_ids=[5],
                               rare_crop_fraction=1.0)
    transform.paste = RareClassPaste(load, 1, [5], probability=1.0)
    for seed in range(5):
        x, y = transform(np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30), np.uint8), np.random.default_rng(seed))
        assert x.shape == (3, 8, 10) and x.dtype == torch.float32
        assert (y == 5).any()  # the frame had no class-5 pixel: it came from the donor, and the crop found it
        assert not (y == IGNORE_INDEX).any()
