"""Predicting files and folders: folders, globs, skipping done images, surviving bad ones, interrupts,
the summary, and streamed outputs (through the API and the CLI)."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

import iterseg
from iterseg import batch, summary
from iterseg.cli import main
from iterseg.model.store import save_bundle

from synthetic import blob_image, class_pair, multiclass_bundle, write_image_folder, write_slide, write_tiled


@pytest.fixture
def folder(tmp_path):
    images = write_image_folder(tmp_path / "in", 3)
    (images / "notes.txt").write_text("not an image, not picked up")
    return images


def leftovers(out):
    """Temporary files and claims in ``out`` (the rows of each process in .summary/ stay)."""
    return [p for p in out.iterdir() if p.name.startswith(".") and p.name != summary.SHARDS]


def summary_rows(out):
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        return {row["image"].rsplit("/", 1)[-1]: row for row in csv.DictReader(handle)}


def test_a_folder_run_survives_a_bad_image_and_writes_a_summary(tmp_path, folder, bundle_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 failed" in err
    rows = summary_rows(out)
    assert {name: row["status"] for name, row in rows.items()} == {
        "broken.png": "failed", "img0.png": "done", "img1.png": "done", "img2.png": "done"}
    assert all((out / f"img{i}.report.json").is_file() for i in range(3))
    assert not leftovers(out)


def test_done_images_are_skipped_unless_overwrite(tmp_path, folder, bundle_path, monkeypatch, capsys):
    (folder / "broken.png").unlink()
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet"]) == 0
    stamp = (out / "img0.report.json").stat().st_mtime_ns
    first = summary_rows(out)
    writes = []
    write_summary = summary.write_summary
    monkeypatch.setattr(summary, "write_summary", lambda *args: writes.append(1) or write_summary(*args))
    assert main(["predict", str(folder), "--model", str(bundle_path), "--out", str(out)]) == 0
    assert "3 images: 0 done, 3 skipped (outputs exist), 0 failed" in capsys.readouterr().err
    assert summary_rows(out) == first  # the rows of the run that did the work
    assert len(writes) == 1  # a rerun of thousands of done images does not rewrite the summary per image
    assert (out / "img0.report.json").stat().st_mtime_ns == stamp
    assert main(["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet",
                 "--overwrite"]) == 0
    assert {row["status"] for row in summary_rows(out).values()} == {"done"}


def test_glob_patterns_and_stem_collisions(tmp_path, folder, bundle_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(folder / "img[01].png"), "--model", str(bundle_path), "--out", str(out),
                 "--quiet"]) == 0
    assert set(summary_rows(out)) == {"img0.png", "img1.png"}
    tifffile.imwrite(folder / "img0.tif", blob_image(32, 32))
    assert main(["predict", str(folder / "img0.png"), str(folder / "img0.tif"), "--out", str(out)]) == 2
    assert "would both write img0.*" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "*.jpg"), "--out", str(out)]) == 2


def test_an_interrupt_keeps_finished_images(tmp_path, folder, bundle_path, monkeypatch, capsys):
    (folder / "broken.png").unlink()
    real, calls = batch.predict_file, []

    def interrupted_on_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "predict_file", interrupted_on_second)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert (out / "img0.report.json").is_file() and not (out / "img1.report.json").exists()
    assert summary_rows(out)["img0.png"]["status"] == "done"
    assert not leftovers(out)
    monkeypatch.setattr(batch, "predict_file", real)
    assert main(["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet"]) == 0
    assert [row["status"] for row in summary_rows(out).values()] == ["done", "done", "done"]


def test_streamed_outputs_from_the_cli(tmp_path, bundle_path, capsys):
    path = write_tiled(tmp_path / "scan.tif", blob_image(600, 520, seed=3), tile=(64, 64), pyramid=True)
    out = tmp_path / "out"
    assert main(["predict", str(path), "--stream", "always", "--patches", "4", "--model", str(bundle_path),
                 "--out", str(out)]) == 0
    assert "pyramid level" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["scan.mask.tif", "scan.overlay.png", "scan.report.json"]
    report = json.loads((out / "scan.report.json").read_text())
    assert report["options"]["streamed"] and report["tiles_read"] > 0 and report["peak_rss_mb"] > 0
    assert report["image"] == {"path": str(path), "height": 600, "width": 520, "channels": 3}
    with tifffile.TiffFile(out / "scan.mask.tif") as tif:
        assert tif.is_bigtiff and tif.pages[0].is_tiled and len(tif.series[0].levels) == 2
    assert cv2.imread(str(out / "scan.overlay.png")).shape[:2] == (75, 65)  # stage-1 scale
    assert main(["predict", str(path), "--stream", "always", "--save-probs", "--overwrite", "--quiet",
                 "--model", str(bundle_path), "--out", str(out)]) == 0
    assert tifffile.imread(out / "scan.probs.tif").shape == (600, 520)


EVERY_OUTPUT = ("--save-probs", "--geojson", "--overlay-colour", "0,0,255", "--patches", "3", "--quiet")


def run_twice(tmp_path, model, path, stream):
    """Predict ``path`` into out-a and out-b with every output on: {file name: (bytes a, bytes b)},
    the folder's name in out-a's files written as out-b."""
    for run in ("a", "b"):
        assert main(["predict", str(path), "--model", str(model), "--stream", stream, "--out",
                     str(tmp_path / f"out-{run}"), *EVERY_OUTPUT]) == 0
    return {p.name: (p.read_bytes().replace(b"out-a", b"out-b"), (tmp_path / "out-b" / p.name).read_bytes())
            for p in (tmp_path / "out-a").iterdir() if not p.name.startswith(".")}


def without_timings(report):
    return {k: v for k, v in json.loads(report).items() if "seconds" not in k and k != "peak_rss_mb"}


@pytest.mark.parametrize("stream", ["never", "always"])
@pytest.mark.parametrize("classes", [2, 4])
def test_a_rerun_writes_the_same_bytes_with_every_output_on(tmp_path, bundle_path, stream, classes):
    model = bundle_path
    if classes > 2:
        model = tmp_path / "shapes.pt"
        save_bundle(multiclass_bundle(), model, half=False)
    path = write_tiled(tmp_path / "scan.tif", class_pair(96, 128, seed=5)[0], tile=(32, 32))
    written = run_twice(tmp_path, model, path, stream)
    assert {"scan.probs.tif", "scan.contours.geojson", "scan.mask.tif" if stream == "always" else "scan.mask.png",
            "scan.overlay.png", "scan.report.json"} == set(written)
    for name, (first, second) in written.items():
        if name.endswith(".json"):
            first, second = without_timings(first), without_timings(second)
        assert first == second, f"{name} differs between two runs"


def test_probabilities_have_the_same_axes_streamed_and_in_memory(tmp_path):
    model = tmp_path / "shapes.pt"
    save_bundle(multiclass_bundle(), model, half=False)
    path = write_tiled(tmp_path / "scan.tif", class_pair(96, 128, seed=5)[0], tile=(32, 32))
    probs = {}
    for stream in ("never", "always"):
        assert main(["predict", str(path), "--model", str(model), "--stream", stream, "--out",
                     str(tmp_path / stream), "--save-probs", "--patches", "3", "--quiet"]) == 0
        with tifffile.TiffFile(tmp_path / stream / "scan.probs.tif") as tif:
            probs[stream] = (tif.series[0].axes, tif.asarray())
    assert probs["never"][0] == probs["always"][0] == "YXS" and probs["never"][1].shape == (96, 128, 4)
    np.testing.assert_allclose(probs["never"][1], probs["always"][1], atol=1e-5)


def test_inputs_expand_to_sorted_image_files(tmp_path, folder):
    found = batch.expand_inputs([folder])
    assert [p.name for p in found] == ["broken.png", "img0.png", "img1.png", "img2.png"]
    assert batch.expand_inputs([folder / "img1.png", str(folder / "img*.png")]) == [
        folder / "img1.png", folder / "img0.png", folder / "img2.png"]  # repeats once, in the order given
    (tmp_path / "empty").mkdir()
    with pytest.raises(iterseg.InputError, match="holds no image files"):
        batch.expand_inputs([tmp_path / "empty"])
    with pytest.raises(iterseg.InputError, match="matches no image files"):
        batch.expand_inputs([str(tmp_path / "*.jpg")])
    with pytest.raises(iterseg.InputError, match="does not exist"):
        batch.expand_inputs([tmp_path / "missing.png"])


def test_predict_file_writes_the_outputs_and_the_report_last(tmp_path, image_path, bundle_path, monkeypatch):
    segmenter = iterseg.load(bundle_path)
    written = []
    real_json = batch.write_json
    monkeypatch.setattr(batch, "write_json", lambda path, report: written.append(path) or real_json(path, report))
    report = batch.predict_file(segmenter, image_path, tmp_path / "out", {"patches": 3})
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["blobs.mask.png", "blobs.overlay.png", "blobs.report.json"]  # probabilities: only on request
    # the claim (listing the outputs before they are written), then the report
    assert written == [tmp_path / "out" / "blobs.report.json"] * 2
    assert report["outputs"]["mask"].endswith("blobs.mask.png")
    assert len(report["windows"]) == 3 and report["peak_rss_mb"] > 0 and "tiles_read" not in report
    mask = cv2.imread(str(tmp_path / "out" / "blobs.mask.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, segmenter.predict(image_path, patches=3).mask * 255)
    assert report["foreground_fraction"] == pytest.approx((mask > 0).mean())


def test_a_run_killed_while_writing_outputs_is_redone_not_refused(tmp_path, image_path, bundle_path, monkeypatch):
    out = tmp_path / "out"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the mask is written, the overlay and the report are not

    with monkeypatch.context() as patched:
        patched.setattr(batch, "write_overlay", killed)
        with pytest.raises(KeyboardInterrupt):
            batch.predict_file(iterseg.load(bundle_path), image_path, out, {"patches": 3})
    assert (out / "blobs.mask.png").exists() and json.loads((out / "blobs.report.json").read_text())["status"] == \
        batch.WRITING
    assert batch.done_report(image_path, out) is None  # not done: a rerun redoes it
    assert main(["predict", str(image_path), "--model", str(bundle_path), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "blobs.report.json").read_text())
    assert "status" not in report and len(report["windows"]) > 0 and (out / "blobs.overlay.png").exists()


def test_predict_files_tells_of_each_image_and_writes_the_summary_after_each(tmp_path, folder, bundle_path):
    segmenter = iterseg.load(bundle_path)
    done, failed = [], []
    out = batch.output_folder(tmp_path / "out")
    rows = batch.predict_files(segmenter, batch.expand_inputs([folder]), out, {"patches": 2},
                               summary_path=out / "summary.csv", on_done=done.append,
                               on_error=lambda path, exc: failed.append(path.name))
    assert [r["status"] for r in rows] == ["failed", "done", "done", "done"] and failed == ["broken.png"]
    assert len(done) == 3 and set(summary_rows(out)) == {"broken.png", "img0.png", "img1.png", "img2.png"}
    assert rows[1]["windows"] == 2 and rows[1]["streamed"] is False and "cannot decode" in rows[0]["reason"]
    again = batch.predict_files(segmenter, batch.expand_inputs([folder / "img0.png"]), out, {})
    assert again[0]["status"] == "skipped" and "--overwrite" in again[0]["reason"]


# --- many processes on one folder into one output folder (job arrays) -----------------------------------


@pytest.fixture
def forty(tmp_path):
    folder = tmp_path / "forty"
    folder.mkdir()
    for i in range(40):
        cv2.imwrite(str(folder / f"img{i:02d}.png"), blob_image(24, 24, seed=i))
    return folder


def _together(runs):
    """Run the callables ``runs`` in threads started together; their results."""
    import threading
    start, results = threading.Barrier(len(runs)), [None] * len(runs)

    def go(index):
        start.wait()
        results[index] = runs[index]()

    threads = [threading.Thread(target=go, args=(index,)) for index in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("sharded, overwrite", [(False, False), (True, False), (False, True)])
def test_four_runs_at_once_compute_each_image_once_and_lose_no_row(tmp_path, forty, bundle_path, monkeypatch,
                                                                   sharded, overwrite):
    segmenter = iterseg.load(bundle_path)
    out = batch.output_folder(tmp_path / "out")
    paths = batch.expand_inputs([forty])[:16 if overwrite else 40]
    if overwrite:  # all done before: four runs with overwrite redo each image once between them
        batch.predict_files(segmenter, paths, out, {"patches": 1})
    computed, real = [], batch.predict_file
    monkeypatch.setattr(batch, "predict_file", lambda segmenter, path, *a, **k: computed.append(path.name) or real(
        segmenter, path, *a, **k))

    def run(index):
        mine = batch.shard_of(paths, (index + 1, 4)) if sharded else paths
        return lambda: batch.predict_files(segmenter, mine, out, {"patches": 1}, overwrite=overwrite,
                                           summary_path=out / "summary.csv")

    rows = _together([run(index) for index in range(4)])
    assert sorted(computed) == sorted(p.name for p in paths)  # every image once
    statuses = [row["status"] for r in rows for row in r]  # a run skips what another finished before it came
    assert statuses.count("done") == len(paths) and set(statuses) <= {"done", "skipped"}
    table = summary_rows(out)
    assert len(table) == len(paths) and {row["status"] for row in table.values()} == {"done"}
    assert not leftovers(out)
    with open(out / "summary.csv", encoding="utf-8") as handle:
        assert len(handle.read().splitlines()) == len(paths) + 1  # the header and one row per image, none twice


def test_shards_split_the_inputs_and_the_option_is_checked(tmp_path, folder, bundle_path, capsys):
    paths = list(range(10))
    parts = [batch.shard_of(paths, (index, 3)) for index in (1, 2, 3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet"]
    assert main([*argv, "--shard", "2/2"]) == 0  # img0 and img2 of broken, img0, img1, img2
    assert set(summary_rows(out)) == {"img0.png", "img2.png"}
    assert main([*argv, "--shard", "1/2"]) == 2  # broken.png fails
    assert set(summary_rows(out)) == {"broken.png", "img0.png", "img1.png", "img2.png"}
    for bad in ("0/4", "5/4", "2", "a/b"):
        assert main([*argv, "--shard", bad]) == 2
        err = capsys.readouterr().err
        assert "--shard" in err and "1 <= I <= N" in err, err


@pytest.mark.slow  # 4 processes importing torch on 2 cores: 35-40 s each way
@pytest.mark.parametrize("sharded", [False, True])
def test_four_processes_at_once_through_the_cli(tmp_path, forty, bundle_path, sharded):
    """The job array of issue 29: 4 `iterseg predict` processes started together on one folder of 40
    images into one --out (or on its 4 shards): every image computed once, 40 rows, every exit 0."""
    import subprocess
    import sys
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "iterseg", "predict", str(forty), "--model", str(bundle_path), "--out", str(out),
            "--patches", "1"]
    runs = [subprocess.Popen([*argv, *(["--shard", f"{index}/4"] if sharded else [])], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for index in range(1, 5)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, [err for _, err in outputs]
    done = [line.split(":")[0] for stdout, _ in outputs for line in stdout.splitlines() if ", model " in line]
    assert sorted(Path(name).name for name in done) == sorted(p.name for p in forty.iterdir())  # each once
    table = summary_rows(out)
    assert len(table) == 40 and {row["status"] for row in table.values()} == {"done"}
    assert not leftovers(out)


@pytest.mark.parametrize("kind, stream", [("png", "auto"), ("jpg", "auto"), ("tif", "never"), ("tif", "always"),
                                          ("ome", "never"), ("ome", "always"), ("svs", "never"), ("svs", "auto")])
def test_a_file_is_opened_once_and_its_header_parsed_once(tmp_path, bundle_path, monkeypatch, kind, stream):
    """engine/source.open_source is the one reader: deciding, the metadata, the pixels and the outputs
    all come from one open of the file (one TiffFile for a TIFF), whatever the output options."""
    import builtins

    picture = blob_image(96, 128, seed=4)
    path = tmp_path / f"scan.{'tif' if kind == 'ome' else kind}"
    if kind == "tif":
        write_tiled(path, picture, tile=(32, 32))
    elif kind == "svs":
        write_slide(path, picture, tile=(32, 32), mpp=0.5, levels=2)
    elif kind == "ome":
        tifffile.imwrite(path, picture, tile=(32, 32), ome=True,
                         metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    else:
        cv2.imwrite(str(path), picture[:, :, ::-1])
    segmenter = iterseg.load(bundle_path)
    opens, headers = [], []
    real_open, real_tiff = builtins.open, tifffile.TiffFile.__init__

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).resolve() == path.resolve():
            opens.append(file)
        return real_open(file, *args, **kwargs)

    def counting_tiff(self, file, *args, **kwargs):
        headers.append(file)
        real_tiff(self, file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(tifffile.TiffFile, "__init__", counting_tiff)
    report = batch.predict_file(segmenter, path, tmp_path / "out", {"patches": 2}, stream=stream, save_probs=True,
                                geojson=True)
    assert len(opens) == 1, opens
    assert len(headers) == (kind != "png" and kind != "jpg"), headers
    assert report["options"]["streamed"] == (stream == "always" or kind == "svs" and stream == "auto")
    assert report["image"].get("mpp") == ([0.5, 0.5] if kind in ("ome", "svs") else None)
