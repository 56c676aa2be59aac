"""The README's picture of the embedded models: ``iterseg predict`` with each model's defaults on one
image it was not trained on (PH2's sample in iterseg/samples, DRIVE test 01, HRF test 01_h), the
overlays side by side at one height.

    python -m benchmarks.model_pictures [--data-root DIR]   # writes benchmarks/results/overlays/models.jpg
"""
import argparse
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from iterseg.cli import main as iterseg

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ITERSEG_DATA", ROOT.parent / "shared" / "data"))
HEIGHT = 360


def images(data_root):
    return {"ph2": ROOT / "iterseg" / "samples" / "IMD002.jpg",
            "drive": data_root / "DRIVE" / "test" / "images" / "01_test.tif",
            "hrf": data_root / "HRF" / "images" / "01_h.jpg"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "overlays" / "models.jpg")
    args = parser.parse_args(argv)
    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, image in images(args.data_root).items():
            out = Path(tmp) / model
            if iterseg(["predict", str(image), "--model", model, "--out", str(out), "--quiet"]) != 0:
                return 1
            overlay = cv2.imread(str(out / f"{image.stem}.overlay.png"))
            width = round(overlay.shape[1] * HEIGHT / overlay.shape[0])
            panels.append(cv2.resize(overlay, (width, HEIGHT), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(args.out), np.hstack(panels), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
