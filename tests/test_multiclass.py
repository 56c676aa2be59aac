"""Multi-class end to end on a synthetic 4-class dataset: spec (colour map and gray values), training,
prediction from the CLI (palette PNG, report) and the API (margin score), evaluation (IoU per class)."""
import json

import numpy as np
import pytest
from PIL import Image

import iterseg
from iterseg.cli import main
from iterseg.model.bundle import default_palette
from iterseg.model.store import read_bundle, save_bundle, untrained_bundle
from iterseg.model.unet import UNetConfig
from iterseg.training.data import load_spec, read_sample
from iterseg.training.evaluate import evaluate
from iterseg.training.metrics import class_ious, mean_iou

from synthetic import CLASS_COLOURS, CLASS_NAMES, class_pair, write_multiclass_dataset

TRAIN = ["--epochs", "2", "--steps", "3", "--batch-size", "2", "--width", "4", "--depth", "2", "--crop", "32",
         "--no-bf16", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data root, spec path, bundle path) of a tiny 4-class model trained through the CLI."""
    root = tmp_path_factory.mktemp("shapes")
    spec_path = write_multiclass_dataset(root)
    out = root / "run"
    assert main(["train", "--spec", str(spec_path), "--data-root", str(root), "--stage", "both",
                 "--out", str(out)] + TRAIN) == 0
    return root, spec_path, out / "shapes.pt"


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
    with pytest.raises(iterseg.InputError, match="one 'value' or 'colour'"):
        load_spec(spec_path, tmp_path)


def test_class_iou_and_mean_by_hand():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    target = np.array([[0, 1, 2], [2, 2, 2]])
    ious = class_ious(pred, target, 4)
    # class 0: I=1, U=2; class 1: I=1, U=2; class 2: I=2, U=4; class 3 absent
    np.testing.assert_allclose(ious[:3], [0.5, 0.5, 0.5])
    assert np.isnan(ious[3]) and mean_iou(ious) == pytest.approx(0.5)
    valid = np.array([[True, True, False], [True, True, True]])
    np.testing.assert_allclose(class_ious(pred, target, 4, valid)[:3], [0.5, 1.0, 2 / 3])


def test_bundle_keeps_class_names_and_palette(tmp_path):
    bundle = untrained_bundle(UNetConfig(out_channels=4, depth=2, width=4))
    assert bundle.palette == default_palette(4) and len(set(bundle.palette)) == 4
    save_bundle(bundle, tmp_path / "b.pt")
    again = read_bundle(tmp_path / "b.pt")
    assert again.class_names == bundle.class_names and again.palette == bundle.palette
    with pytest.raises(iterseg.ModelError, match="palette"):
        type(bundle)(s1=bundle.s1, s2=bundle.s2, mean=bundle.mean, std=bundle.std,
                     class_names=bundle.class_names, palette=((0, 0, 0),))


def test_trained_bundle_has_the_spec_classes_and_predicts_with_margin(trained):
    root, spec_path, bundle_path = trained
    seg = iterseg.load(bundle_path)
    assert seg.bundle.class_names == CLASS_NAMES and seg.bundle.palette == CLASS_COLOURS
    image, _ = class_pair(64, 96, seed=100)
    result = seg.predict(image, patches=4)
    assert result.probs.shape == (4, 64, 96) and result.options["score"] == "margin"
    np.testing.assert_allclose(result.probs.sum(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(result.mask, result.probs.argmax(axis=0))


def test_cli_predict_writes_a_palette_png_and_class_fractions(trained, tmp_path):
    root, spec_path, bundle_path = trained
    image, _ = class_pair(64, 96, seed=101)
    Image.fromarray(image).save(tmp_path / "in.png")
    assert main(["predict", str(tmp_path / "in.png"), "--model", str(bundle_path), "--out", str(tmp_path / "out"),
                 "--patches", "4", "--quiet"]) == 0
    mask = Image.open(tmp_path / "out" / "in.mask.png")
    assert mask.mode == "P"
    assert np.asarray(mask.getpalette()[:12]).reshape(4, 3).tolist() == [list(c) for c in CLASS_COLOURS]
    report = json.loads((tmp_path / "out" / "in.report.json").read_text())
    ids = np.asarray(mask)
    assert set(np.unique(ids)) <= {0, 1, 2, 3}
    assert report["class_fractions"] == {n: pytest.approx((ids == i).mean(), abs=1e-6)
                                         for i, n in enumerate(CLASS_NAMES)}
    assert report["options"]["score"] == "margin"


def test_cli_evaluate_reports_iou_per_class(trained, tmp_path):
    root, spec_path, bundle_path = trained
    out = tmp_path / "eval"
    assert main(["evaluate", "--spec", str(spec_path), "--data-root", str(root), "--model", str(bundle_path),
                 "--patches", "0,2", "--out", str(out), "--quiet"]) == 0
    report = json.loads(next(out.glob("*.json")).read_text())
    assert report["classes"] == list(CLASS_NAMES) and list(report["summary"]) == ["s1", "np=2", "baseline"]
    for values in report["summary"].values():
        present = [v for v in values["class_iou"].values() if v is not None]
        assert values["miou"] == pytest.approx(np.mean(present))
    # the split's summed counts, recomputed by hand from the masks the model predicts
    seg = iterseg.load(bundle_path)
    spec = load_spec(spec_path, root)
    both = np.zeros(4)
    union = np.zeros(4)
    for sample in spec.split("test"):
        image, target, fov = read_sample(spec, sample)
        pred = seg.predict_baseline(image).mask
        for c in range(4):
            both[c] += ((pred == c) & (target == c) & fov).sum()
            union[c] += (((pred == c) | (target == c)) & fov).sum()
    expected = [b / u if u else None for b, u in zip(both, union)]
    got = list(report["summary"]["baseline"]["class_iou"].values())
    assert got == [pytest.approx(e) if e is not None else None for e in expected]
    assert "IoU square" in next(out.glob("*.md")).read_text()


def test_evaluate_refuses_a_model_with_other_classes(trained):
    root, spec_path, _ = trained
    with pytest.raises(iterseg.InputError, match="4"):
        evaluate(iterseg.load("untrained"), load_spec(spec_path, root))


def test_shipped_kitti_semantic_spec_maps_label_ids_and_ignores_void(tmp_path):
    import cv2
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


def test_streamed_multiclass_writes_class_ids_equal_to_in_memory(trained, tmp_path):
    import tifffile
    from synthetic import write_tiled
    _, _, bundle_path = trained
    image, _ = class_pair(128, 192, seed=102)
    write_tiled(tmp_path / "big.tif", image, tile=(32, 32))
    assert main(["predict", str(tmp_path / "big.tif"), "--model", str(bundle_path), "--stream", "always",
                 "--patches", "4", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    streamed = tifffile.imread(tmp_path / "out" / "big.mask.tif")
    in_memory = iterseg.load(bundle_path).predict(image, patches=4).mask
    assert streamed.dtype == np.uint8
    np.testing.assert_array_equal(streamed, in_memory)
    report = json.loads((tmp_path / "out" / "big.report.json").read_text())
    assert report["options"]["score"] == "margin"
