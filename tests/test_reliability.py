"""Determinism, sharing a Segmenter between threads, signals during folder runs, and fuzzing."""
import os
import signal
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iterseg
from iterseg import files
from iterseg.cli import main
from iterseg.disk.images import read_image
from iterseg.kernels import lowest_k, lowest_k_reference, window_means, window_means_reference

from synthetic import blob_image


def test_masks_are_byte_identical_across_runs_and_batch_sizes(tmp_path, image_path, bundle_path):
    masks = set()
    for run, batch in enumerate((1, 3, 16, 16)):
        out = tmp_path / f"run{run}"
        assert main(["predict", str(image_path), "--patches", "9", "--batch-size", str(batch), "--model",
                     str(bundle_path), "--out", str(out), "--quiet"]) == 0
        masks.add((out / "blobs.mask.png").read_bytes())
    assert len(masks) == 1


def test_a_segmenter_shared_by_four_threads_gives_the_sequential_results(bundle):
    seg = iterseg.Segmenter(bundle)
    images = [blob_image(60 + 8 * i, 90, seed=i) for i in range(12)]
    for precision in ("fp32", "bf16"):
        sequential = [seg.predict(im, patches=5, precision=precision) for im in images]
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(lambda im: seg.predict(im, patches=5, precision=precision), images))
        for one, other in zip(sequential, threaded):
            np.testing.assert_array_equal(one.probs, other.probs)
            np.testing.assert_array_equal(one.windows, other.windows)


def test_sigterm_during_a_folder_run_keeps_finished_outputs(tmp_path, bundle_path, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), blob_image(48, 48, seed=i))
    real, seen = files.predict_file, []

    def terminated_on_second(*args, **kwargs):
        seen.append(args[1])
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as a job scheduler stops the run
        return real(*args, **kwargs)

    monkeypatch.setattr(files, "predict_file", terminated_on_second)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert (out / "img0.report.json").is_file() and not list(out.glob("img1.*"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial file left behind
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    monkeypatch.setattr(files, "predict_file", real)
    assert main(["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet"]) == 0
    assert len(list(out.glob("*.report.json"))) == 3


# ITERSEG_FUZZ_EXAMPLES=600 explores longer (600 examples of each found nothing, 2026-11-22)
FUZZ = settings(max_examples=int(os.environ.get("ITERSEG_FUZZ_EXAMPLES", 60)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(height=st.integers(1, 40), width=st.integers(1, 40), size=st.integers(1, 50), stride=st.integers(1, 50),
       dtype=st.sampled_from([np.float32, np.float64, np.uint8, np.int32]), seed=st.integers(0, 2 ** 16))
def test_fuzz_window_means(height, width, size, stride, dtype, seed):
    rng = np.random.default_rng(seed)
    prob = (rng.random((height, width)) * (255 if dtype in (np.uint8, np.int32) else 1)).astype(dtype)
    got = window_means(prob, size, stride)  # integer maps are converted to float32
    np.testing.assert_allclose(got, window_means_reference(prob.astype(np.float64), size, stride), rtol=1e-5)


@FUZZ
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=300),
       k=st.integers(-3, 320))
def test_fuzz_lowest_k(values, k):
    array = np.array(values, dtype=np.float64)
    try:
        got = lowest_k(array, k)
    except ValueError as exc:
        assert k < 0 and "k" in str(exc)
        return
    np.testing.assert_array_equal(got, lowest_k_reference(array, k))


SUFFIXES = [".png", ".jpg", ".tif", ".bmp", ".gif", ".pgm", ".webp"]
HEADERS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00", b"BM", b"GIF89a"]


@FUZZ
@given(header=st.sampled_from(HEADERS), body=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
def test_fuzz_the_image_reader(header, body, suffix):
    """Random bytes behind real magic numbers: an image or an InputError, never another exception."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(header + body)
        try:
            image = read_image(path)
        except iterseg.InputError:
            return
        assert image.ndim in (2, 3) and image.size > 0
