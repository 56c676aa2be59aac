"""Shared inputs of the speed suites: where the real datasets are, and one HRF image."""
import json
import os
from pathlib import Path

import pytest

from iterseg.training.data import load_spec, read_sample

DATA_ROOT = Path(os.environ.get("ITERSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).parent / "results"


@pytest.fixture(scope="session")
def hrf_sample():
    """(image uint8 (2336, 3504, 3), vessel mask bool, FOV bool, id) of the first HRF test image;
    the suites that need it skip when the datasets are not at $ITERSEG_DATA or ../shared/data."""
    if not (DATA_ROOT / "HRF").is_dir():
        pytest.skip(f"HRF not found under {DATA_ROOT}; set ITERSEG_DATA to the datasets folder")
    spec = load_spec("hrf", DATA_ROOT)
    sample = spec.split("test")[0]
    image, target, fov = read_sample(spec, sample)
    return image, target, fov, sample.id


def sweep_findings(dataset):
    """The findings of benchmarks/results/<dataset>.json, or None before the sweep has been run."""
    path = RESULTS / f"{dataset}.json"
    return json.loads(path.read_text())["findings"] if path.is_file() else None
