"""Data specs: loading, validation messages, binary and multi-class masks (colours or values), and the
shipped specs (on the real data when present)."""
import cv2
import numpy as np
import pytest

import iterseg
from iterseg.training.data import SpecError, builtin_specs, check_spec, load_spec, read_sample, seeded_split

from synthetic import (
    CLASS_COLOURS,
    CLASS_NAMES,
    SHARED_DATA,
    class_pair,
    needs_data,
    write_dataset,
    write_multiclass_dataset,
)


def test_synthetic_spec_loads_and_splits(tmp_path):
    spec = load_spec(write_dataset(tmp_path), tmp_path)
    assert len(spec.split("train")) == 6 and len(spec.split("test")) == 2
    assert [s.id for s in spec.split("test")] == seeded_split([f"img{i}" for i in range(8)], 0, 0.25)
    image, target, fov = read_sample(spec, spec.split("train")[0])
    assert image.shape == (96, 128, 3) and target.dtype == bool and target.any() and fov is None


def test_data_root_from_environment(tmp_path, monkeypatch):
    path = write_dataset(tmp_path)
    monkeypatch.setenv("ITERSEG_DATA", str(tmp_path))
    assert load_spec(path).root == tmp_path
    monkeypatch.delenv("ITERSEG_DATA")
    with pytest.raises(SpecError, match="--data-root"):
        load_spec(path)


def test_unpaired_images_are_reported(tmp_path):
    path = write_dataset(tmp_path)
    (tmp_path / "SYN" / "masks" / "img3.png").unlink()
    with pytest.raises(SpecError, match="images without a mask: img3"):
        load_spec(path, tmp_path)
    path.write_text(path.read_text() + "unpaired: skip\n")
    spec = load_spec(path, tmp_path)
    assert "img3" not in [s.id for s in spec.split("all")] and spec.split_rule["unpaired_skipped"] == ["img3"]


def test_size_mismatch_names_the_sample(tmp_path):
    spec = load_spec(write_dataset(tmp_path), tmp_path)
    sample = spec.split("train")[0]
    cv2.imwrite(str(sample.mask), np.zeros((10, 10), np.uint8))
    with pytest.raises(SpecError, match=f"{sample.id}: mask is 10 x 10 but the image is 128 x 96"):
        read_sample(spec, sample)
    with pytest.raises(SpecError, match=f"spec syn: 1 bad samples: {sample.id}: mask is 10 x 10"):
        check_spec(spec)
    check_spec(spec, "test")  # the bad sample is in the train split


@pytest.mark.parametrize("change, message", [
    (lambda s: s.replace("mask: SYN/masks/{id}.png", "mask: SYN/masks/{name}.png"), "does not capture"),
    (lambda s: s.replace("images: SYN/images/*.png", "images: NOPE/*.png"), "no image matches"),
    (lambda s: s.replace("match: ", "matches: "), "lacks match"),
    (lambda s: s + "  test: [img99]\n", "not found in the data: img99"),
    (lambda s: s + "  : [\n", "not valid YAML"),
])
def test_bad_specs_say_what_is_wrong(tmp_path, change, message):
    path = write_dataset(tmp_path)
    path.write_text(change(path.read_text()))
    with pytest.raises(SpecError, match=message):
        load_spec(path, tmp_path)


def test_a_spec_may_say_the_pixel_size_of_its_images(tmp_path):
    path = write_dataset(tmp_path)
    assert load_spec(path, tmp_path).mpp is None
    path.write_text(path.read_text() + "mpp: 0.25\n")
    assert load_spec(path, tmp_path).mpp == 0.25
    path.write_text(path.read_text().replace("mpp: 0.25", "mpp: fine"))
    with pytest.raises(SpecError, match="'mpp' must be the images' micrometres per pixel"):
        load_spec(path, tmp_path)


def test_colour_foreground(tmp_path):
    path = write_dataset(tmp_path, count=4)
    for mask_path in (tmp_path / "SYN" / "masks").iterdir():
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        colour = np.zeros(mask.shape + (3,), np.uint8)
        colour[mask > 0] = (255, 0, 255)   # magenta, symmetric in BGR and RGB
        cv2.imwrite(str(mask_path), colour)
    path.write_text(path.read_text().replace("foreground: 255", "foreground: [255, 0, 255]"))
    spec = load_spec(path, tmp_path)
    _, target, _ = read_sample(spec, spec.split("train")[0])
    assert target.any() and not target.all()


def test_shipped_specs_are_listed():
    assert {"ph2", "drive", "hrf", "kitti", "kitti_semantic", "retina"} <= set(builtin_specs())
    with pytest.raises(SpecError, match="neither a file nor a shipped spec"):
        load_spec("nope", ".")
    assert issubclass(SpecError, iterseg.InputError)


@needs_data
@pytest.mark.parametrize("name, train, test", [("ph2", 140, 60), ("drive", 20, 20), ("hrf", 29, 13)])
def test_shipped_specs_on_the_real_data(name, train, test):
    spec = load_spec(name, SHARED_DATA)
    assert (len(spec.split("train")), len(spec.split("test"))) == (train, test)
    image, target, fov = read_sample(spec, spec.split("test")[0])
    assert target.shape == image.shape[:2] and 0.01 < target.mean() < 0.99
    assert (fov is None) == (name == "ph2")


@pytest.mark.parametrize("colours", [True, False])
def test_spec_reads_class_ids_from_colours_or_values(tmp_path, colours):
    spec = load_spec(write_multiclass_dataset(tmp_path, colours=colours), tmp_path)
    assert spec.class_names == CLASS_NAMES and spec.num_classes == 4
    assert spec.palette == (CLASS_COLOURS if colours else None)
    image, target, fov = read_sample(spec, spec.split("train")[0])
    expected_image, ids = class_pair(64, 96, seed=int(spec.split("train")[0].id[3:]))
    np.testing.assert_array_equal(fov, ids != 255)  # the unlabelled frame leaves the field of view
    np.testing.assert_array_equal(target[fov], ids[fov])


def test_spec_with_a_malformed_class_list_says_how_to_fix_it(tmp_path):
    spec_path = write_multiclass_dataset(tmp_path)
    spec_path.write_text(spec_path.read_text().replace("colour: [0, 0, 0]", "shade: 3"))
    with pytest.raises(SpecError, match="one 'value' or 'colour'"):
        load_spec(spec_path, tmp_path)


def test_shipped_kitti_semantic_spec_maps_label_ids_and_ignores_void(tmp_path):
    images = tmp_path / "KITTI" / "data_semantics" / "training" / "image_2"
    masks = tmp_path / "KITTI" / "data_semantics" / "training" / "semantic"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    labels = np.array([[7, 8, 0], [26, 33, 9]], np.uint8).repeat(4, 0).repeat(4, 1)  # 0 and 9 are void
    for i in range(4):
        cv2.imwrite(str(images / f"{i:06d}_10.png"), np.zeros((8, 12, 3), np.uint8))
        cv2.imwrite(str(masks / f"{i:06d}_10.png"), labels)
    spec = load_spec("kitti_semantic", tmp_path)
    assert spec.num_classes == 19 and spec.class_names[13] == "car" and spec.palette is None
    _, target, fov = read_sample(spec, spec.split("all")[0])
    assert fov.tolist() == ((labels != 0) & (labels != 9)).tolist()
    assert target[fov].tolist() == [{7: 0, 8: 1, 26: 13, 33: 18}[v] for v in labels[fov]]
