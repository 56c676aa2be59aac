"""Data specs: loading, validation messages, and the shipped specs on the real data when present."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from iterseg.training.data import SpecError, builtin_specs, load_spec, read_sample, seeded_split

from synthetic import write_dataset

SHARED = Path(os.environ.get("ITERSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_shared = pytest.mark.skipif(not (SHARED / "PH2").is_dir(), reason=f"real datasets not found at {SHARED}")


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
    assert {"ph2", "drive", "hrf", "kitti", "retina"} <= set(builtin_specs())


@needs_shared
@pytest.mark.parametrize("name, train, test", [("ph2", 140, 60), ("drive", 20, 20), ("hrf", 29, 13)])
def test_shipped_specs_on_the_real_data(name, train, test):
    spec = load_spec(name, SHARED)
    assert (len(spec.split("train")), len(spec.split("test"))) == (train, test)
    image, target, fov = read_sample(spec, spec.split("test")[0])
    assert target.shape == image.shape[:2] and 0.01 < target.mean() < 0.99
    assert (fov is None) == (name == "ph2")
