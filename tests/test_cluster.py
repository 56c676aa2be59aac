"""Many images on a Dask cluster (iterseg/cluster.py): on a LocalCluster of 2 single-threaded worker
processes, the same outputs as local folder mode, a worker killed mid-image, a bad image, reruns."""
import collections
import csv
import json
import os
import sys
from pathlib import Path

import pytest

from iterseg import batch, cluster
from iterseg import summary as summary_module
from iterseg.cli import main

from synthetic import blob_image, conditioned_bundle, write_image_folder, write_slide, write_tiled

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the plugin below, on the workers


@pytest.fixture(scope="module")
def client():
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 2}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     silence_logs=50) as local, distributed.Client(local) as connected:
        yield connected


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "in", 4)


def summary(out):
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        return {Path(row["image"]).name: row for row in csv.DictReader(handle)}


def comparable(report):
    """A report without what differs between runs: times, memory, where the outputs went."""
    drop = {"seconds", "seconds_writing", "peak_rss_mb", "outputs"}
    return {key: value for key, value in report.items() if key not in drop}


def run(segmenter, folder, out, client=None, **options):
    out = batch.output_folder(out)
    return batch.predict_files(segmenter, batch.expand_inputs([folder]), out, {"patches": 3},
                               summary_path=out / "summary.csv", client=client, **options)


@pytest.mark.slow  # a LocalCluster of 2 worker processes: seconds to start
def test_cluster_outputs_equal_local_outputs_and_a_bad_image_fails_alone(tmp_path, folder, bundle_path, client):
    import iterseg
    segmenter = iterseg.load(bundle_path)
    local, remote = run(segmenter, folder, tmp_path / "local"), run(segmenter, folder, tmp_path / "cluster", client)
    assert [r["status"] for r in remote] == [r["status"] for r in local] == ["failed"] + ["done"] * 4
    assert remote[0]["reason"] == local[0]["reason"] and "cannot decode" in remote[0]["reason"]
    written = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "cluster").iterdir()) and "img0.mask.png" in written
    for name in written:
        if not name.endswith((".json", ".csv")) and name != summary_module.SHARDS:
            assert (tmp_path / "cluster" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    for i in range(4):
        reports = [json.loads((tmp_path / side / f"img{i}.report.json").read_text()) for side in ("local", "cluster")]
        assert comparable(reports[0]) == comparable(reports[1])
    columns = ("image", "status", "windows", "macs_ratio", "foreground_fraction", "streamed")
    assert [{k: row[k] for k in columns} for row in summary(tmp_path / "local").values()] == [
        {k: row[k] for k in columns} for row in summary(tmp_path / "cluster").values()]
    # a rerun on the cluster skips every done image and keeps the numbers; the bad one fails again
    again = run(segmenter, folder, tmp_path / "cluster", client)
    assert [r["status"] for r in again] == ["failed"] + ["skipped"] * 4 and again[1]["windows"] == 3
    stamp = (tmp_path / "cluster" / "img0.report.json").stat().st_mtime_ns
    overwritten = run(segmenter, folder, tmp_path / "cluster", client, overwrite=True)
    assert [r["status"] for r in overwritten] == ["failed"] + ["done"] * 4
    assert (tmp_path / "cluster" / "img0.report.json").stat().st_mtime_ns != stamp


class DieOnceWhileWriting(distributed.WorkerPlugin):
    """Worker plugin: the first worker to start writing an image's outputs dies there (os._exit),
    after the claim report; every completed write_outputs is logged, to count how often an image ran."""
    name = "die-once-while-writing"

    def __init__(self, marker, log):
        self.marker, self.log = str(marker), str(log)

    def setup(self, worker):
        from iterseg import batch as worker_batch

        real, marker, log = worker_batch.write_outputs, self.marker, self.log

        def write_outputs(result, image, outputs, *args, **kwargs):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                value = real(result, image, outputs, *args, **kwargs)
                with open(log, "a") as handle:
                    handle.write(outputs["report"].name + "\n")
                return value
            os.write(fd, outputs["report"].name.encode())
            os.close(fd)
            os._exit(1)

        self.real = real
        worker_batch.write_outputs = write_outputs

    def teardown(self, worker):
        from iterseg import batch as worker_batch

        worker_batch.write_outputs = self.real


@pytest.mark.slow  # a LocalCluster of 2 worker processes: seconds to start
def test_a_worker_killed_mid_image_and_every_image_is_done_once(tmp_path, folder, bundle_path, client):
    (folder / "broken.png").unlink()
    marker, log = tmp_path / "killed", tmp_path / "written"
    client.register_plugin(DieOnceWhileWriting(marker, log))
    try:
        rows = run(bundle_path, folder, tmp_path / "out", client)
    finally:
        client.unregister_worker_plugin(DieOnceWhileWriting.name)  # teardown: the real write_outputs again
    killed = marker.read_text()
    assert [r["status"] for r in rows] == ["done"] * 4
    assert collections.Counter(log.read_text().split()) == {f"img{i}.report.json": 1 for i in range(4)}
    out = tmp_path / "out"
    assert {name: row["status"] for name, row in summary(out).items()} == {f"img{i}.png": "done" for i in range(4)}
    report = json.loads((out / killed).read_text())
    assert "status" not in report and len(report["windows"]) == 3  # redone whole, not left as the claim
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != summary_module.SHARDS]


@pytest.mark.slow  # a LocalCluster of 2 worker processes: seconds to start
def test_an_interrupted_client_reruns_to_finish_the_job(tmp_path, folder, bundle_path, client):
    (folder / "broken.png").unlink()
    out = batch.output_folder(tmp_path / "out")

    told = []

    def interrupt(report):  # Ctrl-C while the second image is being recorded
        told.append(report)
        if len(told) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(bundle_path, folder, out, client, on_done=interrupt)
    assert [row["status"] for row in summary(out).values()] == ["done", "done"]  # recorded, then told
    rows = run(bundle_path, folder, out, client)
    statuses = [r["status"] for r in rows]  # tasks cancelled late may have finished their image: skipped
    assert len(statuses) == 4 and set(statuses) <= {"done", "skipped"} and "skipped" in statuses
    assert {row["status"] for row in summary(out).values()} <= {"done", "skipped"} and len(summary(out)) == 4
    assert all(batch.done_report(path, out) for path in batch.expand_inputs([folder]))


@pytest.mark.slow  # a LocalCluster of 2 worker processes: seconds to start
@pytest.mark.parametrize("conditioned", [False, True])
def test_one_streamed_image_fans_its_windows_out_to_the_workers(tmp_path, bundle, client, conditioned):
    import iterseg
    from iterseg.model.store import save_bundle

    path = tmp_path / "bundle.pt"
    save_bundle(conditioned_bundle()[0] if conditioned else bundle, path, half=False)
    segmenter = iterseg.load(path)
    scan = write_tiled(tmp_path / "scan.tif", blob_image(600, 520, seed=3), tile=(64, 64), pyramid=True)
    options = {"patches": 12, "patch_size": 48, "batch_size": 2, "cutoff": 0.3}  # mask options apply as locally
    local = segmenter.predict(scan, stream=True, **options)
    fanned = cluster.predict_tiled(client, segmenter, scan, chunk=4, **options)
    assert fanned.windows.tolist() == local.windows.tolist() and len(local.windows) == 12
    assert (fanned.mask == local.mask).all() and fanned.macs == local.macs and fanned.options == local.options
    assert abs(fanned.probs - local.probs).max() < 1e-5 and fanned.tiles_read >= local.tiles_read > 0
    # through predict_files: the one streamed image of a run is fanned out, its outputs written here
    out = batch.output_folder(tmp_path / "out")
    rows = batch.predict_files(segmenter, [scan], out, options, summary_path=out / "summary.csv", client=client,
                               stream="always")
    assert [r["status"] for r in rows] == ["done"] and (out / "scan.mask.tif").is_file()
    report = json.loads((out / "scan.report.json").read_text())
    assert report["options"]["streamed"] and report["options"]["cutoff"] == 0.3 and len(report["windows"]) == 12


@pytest.mark.slow  # a LocalCluster of 2 worker processes: seconds to start
def test_the_workers_read_a_slide_at_the_model_pixel_size_as_the_client_does(tmp_path, bundle, client):
    import dataclasses

    import iterseg
    from iterseg.model.store import save_bundle

    save_bundle(dataclasses.replace(bundle, mpp=0.5), tmp_path / "at05.pt", half=False)
    segmenter = iterseg.load(tmp_path / "at05.pt")
    write_slide(tmp_path / "scan.svs", blob_image(400, 480, seed=6), tile=(64, 64), mpp=0.25)
    options = {"patches": 6, "patch_size": 32, "intensity": "minmax"}
    local = segmenter.predict(tmp_path / "scan.svs", stream=True, **options)
    fanned = cluster.predict_tiled(client, segmenter, tmp_path / "scan.svs", chunk=2, **options)
    assert local.shape == fanned.shape == (200, 240) and fanned.windows.tolist() == local.windows.tolist()
    assert abs(fanned.probs - local.probs).max() < 1e-5


@pytest.mark.slow
def test_cli_local_cluster_runs_a_folder(tmp_path, folder, bundle_path, capsys):
    out = tmp_path / "out"
    args = ["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet", "--cluster", "local:2"]
    assert main(args) == 2 and "1 failed" in capsys.readouterr().err
    assert {name: row["status"] for name, row in summary(out).items()} == {
        "broken.png": "failed", **{f"img{i}.png": "done" for i in range(4)}}
