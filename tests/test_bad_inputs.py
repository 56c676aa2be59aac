"""Hostile and careless inputs of unattended batches (issue 18): every class of bad file, file name,
model file, spec and option is refused with one line and exit 2 (InputError / ModelError in the API),
never a crash, a hang, exhausted memory or clobbered data. One section per class; the fuzzers of the
bundle reader and the spec loader are at the end (the image reader's is in tests/disk/test_images.py)."""
import csv
import dataclasses
import errno
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import iterseg
from iterseg import batch
from iterseg import summary as summary_module
from iterseg.cli import main
from iterseg.disk.images import read_image, read_image_noted
from iterseg.errors import InputError, ModelError
from iterseg.model.store import read_bundle, save_bundle
from iterseg.training.data import SpecError, load_spec

from synthetic import SPEC_TEMPLATE, blob_image, small_bundle, write_dataset, write_tiled

REPO = Path(__file__).resolve().parents[1]
NON_UTF8 = os.fsdecode(b"scan\xff\xfe")  # a file name byte sequence that is not valid UTF-8


def _chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bomb(path, side=24000, real=False):
    """A gray PNG declaring side x side pixels; ``real``: its IDAT decodes to all of them (2.5 MB of
    deflated zeros for 24000 x 24000, 576 MB decoded), else a few bytes only."""
    if real:
        squeeze, row = zlib.compressobj(1), b"\0" * (side + 1)
        block = row * 1000
        data = b"".join([squeeze.compress(block) for _ in range(side // 1000)] + [squeeze.compress(
            row * (side % 1000)), squeeze.flush()])
    else:
        data = zlib.compress(b"\0" * (side + 1))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def write_png(path, image):
    """cv2.imencode + Python's open: works for any file name."""
    path.write_bytes(cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))[1].tobytes())
    return path


def corrupt_tiled(path, how):
    """A tiled TIFF whose tile 1 holds garbage ('data') or points past the end of the file ('offset')."""
    write_tiled(path, blob_image(128, 128, seed=4), tile=(64, 64))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[1], page.databytecounts[1]
        tag = page.tags["TileOffsets"]
        offsets = list(page.dataoffsets)
    if how == "data":
        with open(path, "r+b") as handle:
            handle.seek(offset)
            handle.write(b"\x13\x37" * (count // 2))
    else:
        offsets[1] = path.stat().st_size + 10_000
        with tifffile.TiffFile(path, mode="r+b") as tif:
            tif.pages[0].tags["TileOffsets"].overwrite(offsets)
    assert tag.count == len(offsets)
    return path


def run_cli(argv, capsys):
    """(exit code, stderr lines other than the random-weights warning)."""
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.strip() and "random weights" not in line]
    return code, err


def summary(out):
    with open(out / "summary.csv", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return {Path(row["image"]).name: row for row in csv.DictReader(handle)}


@pytest.fixture
def model(bundle_path):
    return ["--model", str(bundle_path)]


# --- reading images: file names, decompression bombs, orientation, pages --------------------------------


def test_a_file_name_that_is_not_utf8_is_read_and_its_outputs_keep_the_name(tmp_path, model, capsys):
    path = write_png(tmp_path / f"{NON_UTF8}.png", blob_image(40, 48))
    assert read_image(path).shape == (40, 48, 3)
    code, err = run_cli(["predict", str(path), *model, "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 0, err
    names = {os.fsencode(p.name) for p in (tmp_path / "out").iterdir()}
    assert b"scan\xff\xfe.mask.png" in names and b"scan\xff\xfe.report.json" in names


def test_a_png_bomb_is_refused_from_its_header(tmp_path, model, capsys):
    bomb = png_bomb(tmp_path / "bomb.png")
    code, err = run_cli(["predict", str(bomb), *model, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err) == 1, err
    assert "24000 x 24000 pixels (576 Mpx)" in err[0] and "tiled TIFF" in err[0] and "--max-pixels" in err[0]
    with pytest.raises(InputError, match="above the limit of 100 Mpx"):
        iterseg.load("untrained").predict(bomb)


def test_max_pixels_is_configurable_on_the_cli_and_the_api(tmp_path, image_path, model, capsys):
    code, err = run_cli(["predict", str(image_path), *model, "--max-pixels", "5e3", "--out", str(tmp_path / "o")],
                        capsys)
    assert code == 2 and "128 x 96 pixels" in err[0] and "0.005 Mpx" in err[0], err
    segmenter = iterseg.Segmenter(small_bundle())
    with pytest.raises(InputError, match="above the limit"):
        segmenter.predict(image_path, max_pixels=5000)
    assert segmenter.predict(image_path, max_pixels=20_000, patches=1).mask.shape == (96, 128)
    for bad in ("0", "inf", "many"):
        code, err = run_cli(["predict", str(image_path), "--max-pixels", bad, "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and "--max-pixels" in err[0], err
    tiled = write_tiled(tmp_path / "t.tif", blob_image(128, 128), tile=(64, 64))
    with pytest.raises(InputError, match="streamed"):
        segmenter.predict_tiled(tiled, max_pixels=1000)


def test_refusing_a_bomb_stays_under_200_mb_above_idle(tmp_path):
    """Measured in a fresh process: peak RSS (ru_maxrss) after refusing a real 24000 x 24000 PNG bomb
    (576 MB decoded) through read_image and the engine's open_source (what predict calls), minus the
    peak after importing iterseg and reading a small image."""
    bomb = png_bomb(tmp_path / "bomb.png", real=True)
    small = write_png(tmp_path / "small.png", blob_image(64, 64))
    script = textwrap.dedent(f"""
        import resource
        from iterseg.disk.images import read_image
        from iterseg.engine.source import open_source
        from iterseg.errors import InputError
        open_source({str(small)!r}, 3)
        idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for attempt in (lambda: read_image({str(bomb)!r}), lambda: open_source({str(bomb)!r}, 3)):
            try:
                attempt()
                raise SystemExit("bomb not refused")
            except InputError:
                pass
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - idle)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    grown_mb = int(done.stdout.split()[-1]) / 1024
    print(f"peak memory while refusing the bomb: +{grown_mb:.1f} MB above idle")
    assert grown_mb < 200


@pytest.mark.parametrize("name", ["photo.jpg", "photo.png"])
def test_exif_orientation_is_applied(tmp_path, name):
    picture = np.zeros((20, 40, 3), np.uint8)
    picture[:5, :10] = (250, 0, 0)  # a red block top-left, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(picture).save(tmp_path / name, exif=exif, quality=95)
    image, notes = read_image_noted(tmp_path / name)
    with Image.open(tmp_path / name) as shown:
        from PIL import ImageOps
        expected = np.asarray(ImageOps.exif_transpose(shown))
    assert image.shape == (40, 20, 3) and np.abs(image.astype(int) - expected).max() <= 8
    assert image[:10, -5:, 0].mean() > 200  # the block is top-right, as viewers show it
    assert any("EXIF orientation 6" in note for note in notes)
    result = iterseg.load("untrained").predict(tmp_path / name, patches=1)
    assert result.mask.shape == (40, 20) and any("EXIF" in note for note in result.notes)


def test_a_tiff_of_gray_pages_is_not_read_as_rgb_and_says_so(tmp_path, model, capsys):
    pages = np.stack([np.full((32, 40), v, np.uint8) for v in (10, 120, 240)])
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="minisblack")  # three gray pages
    image, notes = read_image_noted(tmp_path / "pages.tif")
    assert image.shape == (32, 40) and (image == 10).all() and "first of its 3 pages" in notes[0]
    code, err = run_cli(["predict", str(tmp_path / "pages.tif"), *model, "--out", str(tmp_path / "o"), "--quiet"],
                        capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "pages.report.json").read_text())
    assert any("first of its 3 pages" in note for note in report["notes"])


def two_rgb_pages(path):
    """A TIFF of two RGB images written one after the other (two series of one page each)."""
    tifffile.imwrite(path, blob_image(32, 40, seed=1))
    tifffile.imwrite(path, blob_image(32, 40, seed=2), append=True)


def zcyx(path, channels):
    """An OME-TIFF of 5 z-planes of ``channels`` uint16 channels (ZCYX): plane z, channel c holds 1000 z + c."""
    stack = np.zeros((5, channels, 32, 40), np.uint16) + (1000 * np.arange(5)[:, None] + np.arange(channels))[
        :, :, None, None].astype(np.uint16)
    tifffile.imwrite(path, stack, ome=True, metadata={"axes": "ZCYX"})


@pytest.mark.parametrize("write, shape, first, words", [
    (two_rgb_pages, (32, 40, 3), blob_image(32, 40, seed=1), "the TIFF holds 2 images; the first (40 x 32 pixels)"),
    (lambda path: tifffile.imwrite(path, np.stack([blob_image(32, 40, seed=1), blob_image(32, 40, seed=2)]),
                                   photometric="rgb"), (32, 40, 3), blob_image(32, 40, seed=1), "first of its 2 pages"),
    (lambda path: zcyx(path, 3), (32, 40, 3), np.array([0, 1, 2], np.uint16), "plane Z=0 of 5 was read, its 3 "
                                                                             "channels (C) as the image's channels"),
])
def test_multi_page_and_multi_plane_tiffs_say_what_was_read(tmp_path, model, capsys, write, shape, first, words):
    write(tmp_path / "stack.tif")
    image, notes = read_image_noted(tmp_path / "stack.tif")
    assert image.shape == shape and (image == first).all() and any(words in note for note in notes), notes
    assert any("to segment another" in note for note in notes)
    code, err = run_cli(["predict", str(tmp_path / "stack.tif"), *model, "--out", str(tmp_path / "o"), "--quiet"],
                        capsys)
    assert code == 0, err
    assert any(words in note for note in json.loads((tmp_path / "o" / "stack.report.json").read_text())["notes"])


def test_a_plane_of_more_channels_than_an_image_is_refused_with_how_to_pick(tmp_path, model, capsys):
    zcyx(tmp_path / "six.ome.tif", 6)
    code, err = run_cli(["predict", str(tmp_path / "six.ome.tif"), *model, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err) == 1 and "holds 6 channels in each plane (axes ZCYX" in err[0], err
    assert "tifffile.imread(IN)[..., :3, :, :]" in err[0]
    with pytest.raises(InputError, match="holds 6 channels"):
        iterseg.load(model[1]).predict(tmp_path / "six.ome.tif")


def test_an_animated_gif_uses_its_first_frame_with_a_note(tmp_path):
    frames = [Image.fromarray(np.full((16, 24, 3), v, np.uint8)) for v in (30, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    image, notes = read_image_noted(tmp_path / "anim.gif")
    assert image.shape[:2] == (16, 24) and abs(int(image[0, 0, 0]) - 30) < 5
    assert notes == ["animated GIF: its first frame was read"]
    result = iterseg.load("untrained").predict(tmp_path / "anim.gif", patches=1)
    assert "animated GIF: its first frame was read" in result.notes


# --- the streamed tiled TIFF path -----------------------------------------------------------------------


@pytest.mark.parametrize("how, words", [("data", "cannot be read"), ("offset", "past the end of the file")])
def test_a_damaged_tiled_tiff_is_refused_streamed_as_in_memory(tmp_path, model, capsys, how, words):
    path = corrupt_tiled(tmp_path / f"{how}.tif", how)
    code, err = run_cli(["predict", str(path), *model, "--stream", "always", "--out", str(tmp_path / "o"), "--quiet"],
                        capsys)
    assert code == 2 and len(err) == 1 and words in err[0] and "export it again" in err[0], err
    code, err = run_cli(["predict", str(path), *model, "--stream", "never", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "cannot read TIFF" in err[0], err
    with pytest.raises(InputError, match=words):
        iterseg.load("untrained").predict_tiled(path)
    assert not [p for p in (tmp_path / "o").iterdir()]


# --- model files ----------------------------------------------------------------------------------------


def _payload(bundle_path):
    return torch.load(bundle_path, weights_only=True)


def _with(bundle_path, path, meta=None, tensors=None):
    """A copy of the bundle at ``bundle_path`` with metadata keys / S2 tensors replaced."""
    payload = _payload(bundle_path)
    stored = json.loads(payload["meta"])
    for key, value in (meta or {}).items():
        target = stored
        *parents, last = key.split(".")
        for parent in parents:
            target = target[parent]
        target[last] = value
    payload["meta"] = json.dumps(stored)
    for key, change in (tensors or {}).items():
        payload["s2"][key] = change(payload["s2"][key])
    torch.save(payload, path)
    return path


BAD_BUNDLES = [  # metadata, S2 tensor changes, words of the message
    ({}, {"inc.0.weight": lambda t: t.fill_(float("nan"))}, "NaN or infinite"),
    ({}, {"inc.1.running_var": lambda t: -t}, "negative values"),
    ({"std": [0.0, 0.25, 0.25]}, {}, "positive finite numbers"),
    ({"mean": [float("nan"), 0.5, 0.5]}, {}, "finite numbers"),
    ({"s2.width": 4_000_000}, {}, "width 4000000 but the weights hold 4"),
    ({"s2.depth": 10 ** 9}, {}, "depth 1000000000 but the weights hold 2"),
    ({"s2.width": "4"}, {}, "expected integers"),
    ({"s1_scale": "0.125"}, {}, "s1_scale"),
    ({"class_names": "background"}, {}, "class_names"),
    ({"provenance": 5}, {}, "provenance"),
    ({"s2": [1, 2]}, {}, "architecture in the bundle is invalid"),
]


@pytest.mark.parametrize("meta, tensors, words", BAD_BUNDLES)
def test_bad_model_files_are_refused_before_anything_is_built(tmp_path, bundle_path, image_path, capsys, meta, tensors,
                                                             words):
    path = _with(bundle_path, tmp_path / "bad.pt", meta, tensors)
    started = time.perf_counter()
    with pytest.raises(ModelError, match=words):
        read_bundle(path)
    assert time.perf_counter() - started < 5
    code, err = run_cli(["predict", str(image_path), "--model", str(path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err) == 1 and words in err[0] and "re-" in err[0], err


def test_deeply_nested_metadata_is_refused(tmp_path, bundle_path):
    payload = _payload(bundle_path)
    payload["meta"] = payload["meta"][:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    torch.save(payload, tmp_path / "deep.pt")
    with pytest.raises(ModelError, match="damaged bundle metadata"):
        read_bundle(tmp_path / "deep.pt")


def test_an_int8_bundle_run_in_fp32_says_so(tmp_path, bundle, image, caplog):
    int8 = dataclasses.replace(bundle, int8_ranges={"s1": [], "s2": []}, name="q")
    save_bundle(int8, tmp_path / "q.pt")
    with caplog.at_level("WARNING", logger="iterseg"):
        segmenter = iterseg.load(tmp_path / "q.pt")
    assert "pass --precision int8" in caplog.text
    result = segmenter.predict(image, patches=1)
    ran = result.options["precision"]  # what auto picked on this CPU: fp32 or bf16
    assert any(f"int8 bundle 'q' run in {ran}" in note for note in result.notes)
    assert not any("int8" in note for note in iterseg.Segmenter(bundle).predict(image, patches=1).notes)


# --- folder mode: the output folder is the user's data ---------------------------------------------------


@pytest.fixture
def scans(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(3):
        write_png(folder / f"img{i}.png", blob_image(40, 48, seed=i))
    return folder


def test_out_equal_to_the_input_folder_never_reads_its_own_outputs(scans, model, capsys):
    argv = ["predict", str(scans), *model, "--out", str(scans), "--quiet", "--patches", "2"]
    assert run_cli(argv, capsys)[0] == 0
    first = sorted(p.name for p in scans.iterdir())
    # image, mask, overlay, report each (probabilities only on request), the summary and its rows (.summary/)
    assert len(first) == 3 * 4 + 2
    assert run_cli(argv, capsys)[0] == 0
    assert run_cli([*argv, "--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in scans.iterdir()) == first
    assert set(summary(scans)) == {"img0.png", "img1.png", "img2.png"}


def test_a_file_that_is_not_ours_is_never_overwritten(scans, model, capsys):
    theirs = write_png(scans / "img1.mask.png", np.full((40, 48, 3), 7, np.uint8))
    before = theirs.read_bytes()
    code, err = run_cli(["predict", str(scans), *model, "--out", str(scans), "--quiet"], capsys)
    assert code == 2 and theirs.read_bytes() == before
    rows = summary(scans)
    assert "img1.mask.png" not in rows  # named like an output, in the output folder: not an input
    assert rows["img1.png"]["status"] == "failed" and "not written by iterseg" in rows["img1.png"]["reason"]
    assert rows["img0.png"]["status"] == rows["img2.png"]["status"] == "done"
    code, err = run_cli(["predict", str(scans / "img1.png"), *model, "--out", str(scans), "--overwrite"], capsys)
    assert code == 2 and "img1.mask.png exists and was not written by iterseg" in err[0]
    assert theirs.read_bytes() == before


def test_a_summary_that_cannot_be_written_does_not_stop_the_run(scans, tmp_path, model, capsys):
    out = tmp_path / "out"
    (out / "summary.csv").mkdir(parents=True)  # a folder in the summary's place
    code, err = run_cli(["predict", str(scans), *model, "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "cannot write the summary" in err[-1] and "rerun" in err[-1], err
    assert all((out / f"img{i}.report.json").is_file() for i in range(3))


def test_a_full_disk_ends_with_a_line_that_counts_what_was_written(scans, tmp_path, model, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch, "write_mask", full)
    monkeypatch.setattr(summary_module.Shard, "append", full)
    out = tmp_path / "out"
    code, err = run_cli(["predict", str(scans), *model, "--out", str(out), "--quiet"], capsys)
    assert code == 2 and all("No space left on device" in line for line in err), err
    assert "of 3 images 0 were written, 3 failed" in err[-1] and "every image" not in err[-1], err
    with pytest.raises(InputError, match="of 3 images 0 were written, 3 failed"):
        batch.predict_files(iterseg.load(model[1]), sorted(scans.iterdir()), out, {}, summary_path=out / "summary.csv")


def test_stale_temporary_files_of_killed_runs_are_removed(scans, tmp_path, model, capsys):
    out = tmp_path / "out"
    out.mkdir()
    stale, live = out / ".img0.0123abcd.partial.png", out / ".img9.89abcdef.partial.tif"
    for path in (stale, live):
        path.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert run_cli(["predict", str(scans), *model, "--out", str(out), "--quiet"], capsys)[0] == 0
    assert not stale.exists() and live.exists()  # a recent one may belong to a run still going


def test_a_rerun_keeps_the_numbers_of_the_images_it_skips(scans, tmp_path, model, capsys):
    out = tmp_path / "out"
    argv = ["predict", str(scans), *model, "--out", str(out), "--quiet", "--patches", "3"]
    assert run_cli(argv, capsys)[0] == 0
    first = summary(out)
    (scans / "img2.png").unlink()
    assert run_cli(argv, capsys)[0] == 0
    # each image's row is the one of the run that did the work, img2 kept though not named now
    assert summary(out) == first and first["img2.png"]["status"] == "done"
    shutil.rmtree(out / ".summary")  # the rows behind the summary, lost with the summary itself
    (out / "summary.csv").unlink()
    assert run_cli(argv, capsys)[0] == 0
    again = summary(out)
    for name in ("img0.png", "img1.png"):
        assert again[name]["status"] == "skipped"  # the numbers from the reports
        for field in ("windows", "macs_ratio", "foreground_fraction", "seconds"):
            assert again[name][field] == first[name][field] != ""


def test_rerunning_a_single_file_skips_it_unless_overwrite(tmp_path, image_path, model, capsys):
    out = tmp_path / "out"
    argv = ["predict", str(image_path), *model, "--out", str(out), "--quiet"]
    assert run_cli(argv, capsys)[0] == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert run_cli(argv, capsys)[0] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert run_cli([*argv, "--overwrite"], capsys)[0] == 0
    assert (out / "blobs.report.json").stat().st_mtime_ns != stamps["blobs.report.json"]


def test_a_folder_of_good_and_bad_files_always_finishes(tmp_path, model, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_png(folder / "good.png", blob_image(48, 56, seed=1))
    write_png(folder / f"{NON_UTF8}.png", blob_image(40, 40, seed=2))
    png_bomb(folder / "bomb.png")
    corrupt_tiled(folder / "damaged.tif", "data")
    out = tmp_path / "out"
    code, err = run_cli(["predict", str(folder), *model, "--out", str(out), "--quiet", "--stream", "always"], capsys)
    assert code == 2 and "2 failed" in err[-1], err
    rows = summary(out)
    assert {name: row["status"] for name, row in rows.items()} == {
        "good.png": "done", f"{NON_UTF8}.png": "done", "bomb.png": "failed", "damaged.tif": "failed"}
    assert "576 Mpx" in rows["bomb.png"]["reason"] and "tiled TIFF" in rows["bomb.png"]["reason"]
    assert "cannot be read" in rows["damaged.tif"]["reason"]
    assert (out / "good.report.json").is_file()


def test_batch_api_leaves_out_outputs_only_in_the_output_folder(scans, tmp_path):
    (scans / "img0.mask.png").write_bytes((scans / "img0.png").read_bytes())
    assert [p.name for p in batch.expand_inputs([scans], scans)] == ["img0.png", "img1.png", "img2.png"]
    assert len(batch.expand_inputs([scans], tmp_path / "elsewhere")) == 4
    assert len(batch.expand_inputs([scans / "img0.mask.png"], scans)) == 1  # named: taken as given


@pytest.mark.parametrize("damage, words", [
    (lambda data: data[:len(data) // 2], "is truncated (it ends inside its IDAT chunk)"),
    (lambda data: data[:-12], "is truncated (it ends before its IEND chunk)"),
    (lambda data: data[:60] + bytes([data[60] ^ 0xFF]) + data[61:], "is corrupt (its IDAT chunk fails its CRC check)"),
])
def test_a_damaged_png_says_so_in_one_line_and_libpng_says_nothing(tmp_path, model, capfd, damage, words):
    data = write_png(tmp_path / "scan.png", blob_image(40, 48)).read_bytes()
    (tmp_path / "scan.png").write_bytes(damage(data))
    assert main(["predict", str(tmp_path / "scan.png"), *model, "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if "random weights" not in line]
    assert len(err) == 1 and words in err[0] and "export it again" in err[0], err  # no "libpng error: ..."
    with pytest.raises(InputError, match=re.escape(words)):
        read_image(tmp_path / "scan.png")


def test_a_tiff_whose_tiles_exhaust_memory_says_so(tmp_path, model, capsys, monkeypatch):
    def too_large(*args, **kwargs):
        raise MemoryError  # what decoding a damaged header's 60000 x 60000 tiles raises under a memory limit

    tifffile.imwrite(tmp_path / "tiles.tif", blob_image(64, 64), tile=(16, 16))
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", too_large)
    code, err = run_cli(["predict", str(tmp_path / "tiles.tif"), *model, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "(out of memory)" in err[0] and "()" not in err[0], err
    with pytest.raises(InputError, match=r"\(out of memory\)"):
        read_image(tmp_path / "tiles.tif")


# --- folders and files that cannot be reached ------------------------------------------------------------


def test_a_folder_that_cannot_be_listed_is_bad_input(scans, tmp_path, model, capsys, monkeypatch):
    listing = Path.iterdir

    def denied(self):
        if self == scans:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    code, err = run_cli(["predict", str(scans), *model, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err) == 1 and f"cannot list folder {scans} (Permission denied)" in err[0], err
    with pytest.raises(InputError, match="read and execute permission"):
        batch.expand_inputs([scans])


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any folder")
def test_a_folder_without_permissions_is_bad_input(scans, tmp_path, model, capsys):
    scans.chmod(0)
    try:
        code, err = run_cli(["predict", str(scans), *model, "--out", str(tmp_path / "o")], capsys)
    finally:
        scans.chmod(0o755)
    assert code == 2 and "cannot list folder" in err[0], err


@pytest.mark.parametrize("name, target, words", [
    ("loop.png", "loop.png", "is a symbolic link loop"),
    ("dangling.png", "nowhere.png", "is a symbolic link to nowhere.png, which does not exist"),
])
def test_broken_symbolic_links_are_named_as_such(tmp_path, model, capsys, name, target, words):
    link = tmp_path / name
    os.symlink(target, link)
    code, err = run_cli(["predict", str(link), *model, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err) == 1 and words in err[0] and "does not exist; check the path" not in err[0], err
    with pytest.raises(InputError, match=words):
        iterseg.load(model[1]).predict(link)


# --- numbers that are not finite: never a mask ------------------------------------------------------------


def nan_bundle(network):
    """small_bundle whose S1 or S2 ('s1', 's2') gives NaN logits everywhere (its head's bias NaN)."""
    bundle = small_bundle()
    with torch.no_grad():
        getattr(bundle, network).head.bias.fill_(float("nan"))
    return bundle


@pytest.mark.parametrize("network, run, words", [
    ("s1", lambda seg, image, tiled: seg.predict(image, patches=2), "stage 1 of model"),
    ("s2", lambda seg, image, tiled: seg.predict(image, patches=2), "stage 2 of model"),
    ("s2", lambda seg, image, tiled: seg.predict_baseline(image), "the full-resolution network of model"),
    ("s1", lambda seg, image, tiled: seg.predict_tiled(tiled, patches=2), "stage 1 of model"),
    ("s2", lambda seg, image, tiled: seg.predict_tiled(tiled, patches=2), "stage 2 of model"),
])
def test_networks_giving_nan_are_an_error_in_memory_and_streamed(tmp_path, image, network, run, words):
    tiled = write_tiled(tmp_path / "t.tif", image, tile=(32, 32))
    with pytest.raises(InputError, match="NaN or infinite probabilities") as info:
        run(iterseg.Segmenter(nan_bundle(network)), image, tiled)
    assert words in str(info.value)


def test_nan_probabilities_fail_the_image_through_the_cli(scans, tmp_path, model, capsys, monkeypatch):
    from iterseg.engine import infer
    monkeypatch.setattr(infer, "logits_to_probs", lambda logits: torch.full_like(logits, float("nan")))
    out = tmp_path / "out"
    code, err = run_cli(["predict", str(scans), *model, "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "img0.png: stage 1 of model" in err[0] and "NaN or infinite probabilities" in err[0], err
    assert {row["status"] for row in summary(out).values()} == {"failed"} and not list(out.glob("*.mask.png"))


def test_float64_values_near_1e300_are_scaled_without_overflow(tmp_path, model, capsys):
    huge = blob_image(40, 48).astype(np.float64) * 1e298
    tifffile.imwrite(tmp_path / "huge.tif", huge, photometric="rgb")
    code, err = run_cli(["predict", str(tmp_path / "huge.tif"), *model, "--out", str(tmp_path / "o"), "--quiet",
                         "--save-probs", "--intensity", "minmax"], capsys)
    assert code == 0, err
    assert np.isfinite(tifffile.imread(tmp_path / "o" / "huge.probs.tif")).all()
    segmenter = iterseg.load(model[1])
    unit = ((huge - huge.min()) / (huge.max() - huge.min())).astype(np.float32)  # the one rule, by hand
    expected = segmenter.predict(unit, patches=1)
    result = segmenter.predict(huge, patches=1, intensity="minmax")
    np.testing.assert_allclose(result.probs, expected.probs, atol=1e-5)
    huge[0, 0], huge[0, 1] = -1.5e308, 1.5e308  # a range of 3e308: beyond float64
    tifffile.imwrite(tmp_path / "wide.tif", huge, photometric="rgb")
    code, err = run_cli(["predict", str(tmp_path / "wide.tif"), *model, "--out", str(tmp_path / "o"), "--intensity",
                         "minmax"], capsys)
    assert code == 2 and "wide.tif" in err[0] and "overflows float64" in err[0], err
    with pytest.raises(InputError, match="overflows float64"):
        segmenter.predict(huge, intensity="minmax")


def test_the_folder_mode_error_for_nan_pixels_names_the_file(scans, tmp_path, model, capsys):
    bad = blob_image(40, 48).astype(np.float32) / 255
    bad[3, 4, 0] = np.nan
    tifffile.imwrite(scans / "nan.tif", bad, photometric="rgb")
    out = tmp_path / "out"
    code, err = run_cli(["predict", str(scans), *model, "--out", str(out), "--quiet"], capsys)
    assert code == 2 and f"{scans / 'nan.tif'}: image contains NaN or infinite values" in err[0], err
    assert summary(out)["nan.tif"]["reason"].startswith(str(scans / "nan.tif"))
    with pytest.raises(InputError, match="nan.tif: image contains NaN"):
        iterseg.load(model[1]).predict(scans / "nan.tif")


# --- options and specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-inf"])
def test_non_finite_numbers_are_refused(tmp_path, image_path, capsys, value):
    code, err = run_cli(["predict", str(image_path), f"--budget={value}", "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1 and "--budget must be a finite number > 0" in err[0], err


@pytest.fixture(scope="module")
def dataset():
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_dataset(root, count=4, height=32, width=40)
        yield root


def _spec(root, name, text):
    path = root / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BAD_SPECS = [  # spec text, words of the message
    ("name: a\nx: &a [1, 2]\ny: *a\n", "anchors and aliases"),
    ("- just\n- a list\n", "not a YAML mapping"),
    ("plain text\n", "not a YAML mapping"),
    (SPEC_TEMPLATE.replace("match: 'SYN/images/(?P<id>img\\d+)'", "match: '(unclosed'"), "not a valid regular"),
    (SPEC_TEMPLATE.replace("images: SYN/images/*.png", "images: /etc/*.conf"), "must stay inside the data root"),
    (SPEC_TEMPLATE.replace("images: SYN/images/*.png", "images: ''"), "non-empty path"),
    (SPEC_TEMPLATE.replace("images: SYN/images/*.png", "images: SYN/../../*.png"), "must stay inside"),
    (SPEC_TEMPLATE.replace("mask: SYN/masks/{id}.png", "mask: ../{id}.png"), "must stay inside"),
    (SPEC_TEMPLATE.replace("mask: SYN/masks/{id}.png", "mask: 'SYN/{id'"), "not a valid template"),
    (SPEC_TEMPLATE.replace("  seed: 0\n  test_fraction: 0.25\n", "  test: img0\n"), "must list sample ids"),
    (SPEC_TEMPLATE.replace("test_fraction: 0.25", "test_fraction: 7"), "between 0 and 1"),
    (SPEC_TEMPLATE.replace("foreground: 255", "foreground: white"), "'foreground' must be"),
]


@pytest.mark.parametrize("text, words", BAD_SPECS)
def test_bad_specs_are_refused_in_one_line(dataset, tmp_path, capsys, text, words):
    path = _spec(tmp_path, "bad", text)
    with pytest.raises(SpecError, match=words):
        load_spec(path, dataset)
    code, err = run_cli(["evaluate", "--spec", str(path), "--data-root", str(dataset), "--out", str(tmp_path)],
                        capsys)
    assert code == 2 and len(err) == 1 and words.strip("'") in err[0], err


def test_a_billion_laughs_spec_is_refused_at_once(dataset, tmp_path):
    laughs = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))
    started = time.perf_counter()
    with pytest.raises(SpecError, match="anchors and aliases"):
        load_spec(_spec(tmp_path, "laughs", laughs), dataset)
    assert time.perf_counter() - started < 1


def test_test_ids_given_as_bare_numbers_are_found(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_dataset(root, count=4, height=32, width=40)
    for i in range(4):
        for kind in ("images", "masks"):
            (root / "SYN" / kind / f"img{i}.png").rename(root / "SYN" / kind / f"{20 + i}.png")
    text = SPEC_TEMPLATE.replace("(?P<id>img\\d+)", "(?P<id>\\d+)").replace(
        "  seed: 0\n  test_fraction: 0.25\n", "  test: [20, 21]\n")
    spec = load_spec(_spec(tmp_path, "numbers", text), root)
    assert [s.id for s in spec.split("test")] == ["20", "21"] and len(spec.split("train")) == 2


def test_evaluate_takes_max_pixels(dataset, tmp_path, capsys):
    code, err = run_cli(["evaluate", "--spec", str(dataset / "syn.yaml"), "--data-root", str(dataset), "--model",
                         "untrained", "--max-pixels", "100", "--patches", "0", "--out", str(tmp_path), "--quiet"],
                        capsys)
    assert code == 2 and "above the limit of 0.0001 Mpx" in err[0], err


# --- the API: arrays and tensors of every kind ------------------------------------------------------------


def test_array_kinds_through_the_api(bundle):
    image = blob_image(32, 40, seed=3)
    reference = iterseg.two_stage(image, bundle, patches=2)
    as_float64 = iterseg.two_stage(image.astype(np.float64) / 255, bundle, patches=2)
    np.testing.assert_allclose(as_float64.probs, reference.probs, atol=1e-5)
    negative = image.astype(np.int16) - 128
    result = iterseg.two_stage(negative, bundle, patches=2, intensity="minmax")
    shifted = iterseg.two_stage((negative - negative.min()).astype(np.float32) / np.ptp(negative), bundle, patches=2)
    np.testing.assert_allclose(result.probs, shifted.probs, atol=1e-4)  # negatives mapped onto [0, 1]
    assert any("rescaled to [0, 1]" in note for note in result.notes)
    tensor = torch.from_numpy(image.astype(np.float32) / 255)
    np.testing.assert_allclose(iterseg.two_stage(tensor.requires_grad_(), bundle, patches=2).probs,
                               reference.probs, atol=1e-5)
    assert iterseg.two_stage(tensor.detach().bfloat16(), bundle, patches=2).mask.shape == (32, 40)
    with pytest.raises(InputError, match="pass a CPU tensor or a NumPy array"):
        iterseg.two_stage(torch.empty(32, 40, 3, device="meta"), bundle)
    with pytest.raises(InputError, match="NaN or infinite"):
        iterseg.two_stage(np.full((8, 8), np.inf, np.float32), bundle)


# --- fuzzing: the bundle reader and the spec loader ------------------------------------------------------


@pytest.fixture(scope="module")
def stored_bundle():
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "small.pt"
        save_bundle(small_bundle(), path, half=False)
        yield _payload(path)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                  max_size=4), max_leaves=12)
META_KEYS = ["name", "mean", "std", "s1_scale", "class_names", "palette", "int8", "window", "patches",
             "provenance", "reference", "s1", "s2", "s2.width", "s2.depth", "s2.in_channels", "s1.out_channels",
             "s2.norm", "s1.extra"]


def mutated(mapping, changes):
    """``mapping`` with each "key" or "section.field" of ``changes`` set (a field only where its section
    is a mapping; otherwise the whole section is replaced)."""
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field and isinstance(mapping.get(section), dict):
            mapping[section][field] = value
        else:
            mapping[section] = value
    return mapping


@given(changes=st.dictionaries(st.sampled_from(META_KEYS), JSON, min_size=1, max_size=3),
       tensor=st.sampled_from([None, "nan", "shape", "drop", "text"]))
def test_fuzz_the_bundle_metadata(stored_bundle, changes, tensor):
    payload = {**stored_bundle, "s2": dict(stored_bundle["s2"])}
    payload["meta"] = json.dumps(mutated(json.loads(payload["meta"]), changes))
    if tensor == "nan":
        payload["s2"]["head.bias"] = torch.full_like(payload["s2"]["head.bias"], float("inf"))
    elif tensor == "shape":
        payload["s2"]["head.weight"] = torch.zeros(3, 4, 1, 1)
    elif tensor == "drop":
        payload["s2"].pop("inc.0.weight")
    elif tensor == "text":
        payload["s2"] = "weights"
    with tempfile.TemporaryDirectory() as folder:
        torch.save(payload, Path(folder) / "fuzz.pt")
        try:
            bundle = read_bundle(Path(folder) / "fuzz.pt")
        except ModelError:
            return
    assert bundle.s2.config.width == 4 and all(np.isfinite(bundle.std))


@given(data=st.binary(max_size=600), zip_header=st.booleans())
def test_fuzz_the_bundle_reader_with_random_bytes(data, zip_header):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.pt"
        path.write_bytes((b"PK\x03\x04" if zip_header else b"") + data)
        with pytest.raises(ModelError):
            read_bundle(path)


@given(text=st.text(max_size=300))
def test_fuzz_the_spec_loader_with_random_text(dataset, text):
    with tempfile.TemporaryDirectory() as folder:
        path = _spec(Path(folder), "fuzz", text)
        try:
            load_spec(path, dataset)
        except InputError:
            return
    raise AssertionError("random text made a valid spec")


SPEC_KEYS = ["name", "images", "match", "mask", "fov", "foreground", "augment", "split", "classes", "unpaired",
             "split.test", "split.seed", "split.test_fraction", "split.by", "split.train"]


@given(changes=st.dictionaries(st.sampled_from(SPEC_KEYS), JSON | st.sampled_from(
    ["SYN/images/*.png", "../x", "/abs/*.png", "(?P<id>", "{id}", "{0}", "img1", "**"]), min_size=1, max_size=3))
def test_fuzz_the_spec_loader_with_mutated_fields(dataset, changes):
    raw = mutated(yaml.safe_load(SPEC_TEMPLATE), changes)
    with tempfile.TemporaryDirectory() as folder:
        path = _spec(Path(folder), "fuzz", yaml.safe_dump(raw))
        try:
            spec = load_spec(path, dataset)
        except InputError:
            return
    assert spec.split("train") and spec.split("test")
