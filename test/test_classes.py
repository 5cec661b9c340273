"""Class sets: validation, colour lookup tables and user class files."""

import numpy as np
import pytest

from bisenetv2_ros.classes import CAMVID, CITYSCAPES, IGNORE_INDEX, KNOWN_CLASS_SETS, ClassSet, default_palette


def test_dataset_class_sets():
    assert len(CITYSCAPES) == 19 and len(CITYSCAPES.palette) == 19
    assert len(CAMVID) == 11 and len(CAMVID.palette) == 11
    assert CITYSCAPES.names[0] == "road" and CITYSCAPES.palette[0] == (128, 64, 128)
    assert CITYSCAPES.names[-1] == "bicycle" and CITYSCAPES.palette[-1] == (119, 11, 32)
    assert CAMVID.names[0] == "sky" and CAMVID.names[-1] == "bicyclist"
    assert KNOWN_CLASS_SETS == {"cityscapes": CITYSCAPES, "camvid": CAMVID}
    assert IGNORE_INDEX == 255


@pytest.mark.parametrize("names,palette,message", [
    ((), (), "at least one class"),
    (("a", "b"), ((1, 2, 3),), "2 class names but 1 palette colours"),
    (("a",), ((1, 2, 256),), "not an RGB triple"),
    (("a",), ((1, -2, 3),), "not an RGB triple"),
    (("a",), ((1, 2),), "not an RGB triple"),
    (tuple(f"c{i}" for i in range(256)), default_palette(256), "at most 255 classes"),
    (("car", "car"), ((1, 2, 3), (4, 5, 6)), r"unique; repeated: \['car'\]"),
    (("car", " "), ((1, 2, 3), (4, 5, 6)), "non-empty"),
])
def test_invalid_class_sets_are_refused(names, palette, message):
    with pytest.raises(ValueError, match=message):
        ClassSet(names, palette)


def test_lookup_table_maps_ids_to_colours():
    classes = ClassSet(("a", "b", "c"), ((10, 20, 30), (40, 50, 60), (70, 80, 90)))
    table = classes.lookup_table()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert table[1].tolist() == [40, 50, 60]
    assert table[3].tolist() == [0, 0, 0] and table[255].tolist() == [0, 0, 0]
    assert classes.lookup_table(unlabelled=(255, 0, 255))[200].tolist() == [255, 0, 255]
    labels = np.array([[0, 2], [255, 1]], np.uint8)
    assert table[labels].tolist() == [[[10, 20, 30], [70, 80, 90]], [[0, 0, 0], [40, 50, 60]]]


def test_cityscapes_lookup_table_holds_its_palette():
    table = CITYSCAPES.lookup_table()
    assert [tuple(row) for row in table[:19].tolist()] == list(CITYSCAPES.palette)


def test_default_palette_is_distinct_and_deterministic():
    colours = default_palette(255)
    assert len(set(colours)) == 255
    assert colours[:4] == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))  # the PASCAL VOC colours
    assert default_palette(5) == colours[:5]


def test_class_file_with_names_only(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my robot's classes\nfloor\n\nwall\n  person  \n")
    classes = ClassSet.from_file(path)
    assert classes.names == ("floor", "wall", "person")
    assert classes.palette == default_palette(3)


def test_class_file_with_colours(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("road 128 64 128\ntraffic light,250,170,30\nsky\n")
    classes = ClassSet.from_file(path)
    assert classes.names == ("road", "traffic light", "sky")
    assert classes.palette[:2] == ((128, 64, 128), (250, 170, 30))
    assert classes.palette[2] == default_palette(3)[2]


@pytest.mark.parametrize("line", ["car 300 0 0", "car 0 -5 0", "car 1.5 2 3"])
def test_class_file_with_bad_colour(tmp_path, line):
    path = tmp_path / "classes.txt"
    path.write_text(f"road\n{line}\n")
    with pytest.raises(ValueError, match=r"classes\.txt:2: colour .* is not three integers in 0\.\.255"):
        ClassSet.from_file(path)


def test_empty_class_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match="lists no classes"):
        ClassSet.from_file(path)


def test_class_file_with_repeated_name(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("road\ncar\nroad\n")
    with pytest.raises(ValueError, match=r"classes\.txt: class names must be unique; repeated: \['road'\]"):
        ClassSet.from_file(path)


def test_missing_class_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read class file"):
        ClassSet.from_file(tmp_path / "nope.txt")


@pytest.mark.parametrize("content, message", [
    (b"road\n\xff\xfesky\n", "is not UTF-8 text (byte 5)"),
    (b"x" * ((1 << 20) + 1), "is 1048577 bytes: not a class list"),
])
def test_a_class_file_that_is_not_text_names_the_file(tmp_path, content, message):
    path = tmp_path / "classes.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as refused:
        ClassSet.from_file(path)
    assert str(refused.value) == f"class file {path} {message}"
