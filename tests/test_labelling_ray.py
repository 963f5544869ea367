"""Batch labelling on Ray Data (`sam-hf everything --engine ray`, `sam_hf.labelling.ray_engine.label_with_ray`): the
same Parquet rows as the single-process and accelerate engines, a `datasets` user loads them, resume, an actor killed
mid-run, datasets as sources, COCO export and the Hub upload wiring.

The module's Ray is an existing cluster from sam-hf's point of view: `ray start --head` with 3 CPUs in a process
group of its own, which the runs connect to with `--address` (and must leave running); one run starts a local Ray of
its own instead."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import PIL.Image
import pytest
import ray
import ray.cloudpickle
from huggingface_hub import HfApi

from sam_hf.cli import main
from sam_hf.data import generate_scene
from sam_hf.everything import EverythingSettings, SamAutomaticMaskGenerator
from sam_hf.labelling import DatasetSource, ParquetLabels
from sam_hf.labelling.ray_engine import label_with_ray
from sam_hf.loading import load_sam
from tests.helpers import assert_same_coco, assert_same_rows

SETTINGS = {"points_per_side": 4, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7}
FLAGS = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()]
FLAGS += ["--device", "cpu", "--no-progress"]
HEAD_CPUS = 3  # two actors and the reading / decoding tasks


def free_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` in a session of its own (its own temporary directory, so no other `ray.init` on the
    machine finds it; Ray's token authentication off, a matter between a cluster and its users that sam-hf leaves to
    Ray). Stopped at the end: SIGTERM to `ray start`, then SIGKILL to whatever of its process group is left."""
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths live in it
    address, log = f"127.0.0.1:{free_port()}", temp_dir / "head.log"
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus", str(HEAD_CPUS)]
    command += ["--port", address.split(":")[1], "--temp-dir", str(temp_dir), "--include-dashboard", "false"]
    command += ["--disable-usage-stats"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with open(log, "w") as output:
        head = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
        yield {"address": address, "process": head}
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    finally:
        ray.shutdown()
        head.terminate()  # `ray start --block` stops what it started ...
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(10)
        with contextlib.suppress(ProcessLookupError):  # ... and what is left of its group goes too
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """Five generated scenes (one in a subdirectory) and a file that is not an image."""
    directory = tmp_path_factory.mktemp("scenes")
    (directory / "more").mkdir()
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png", "more/e.png"]):
        PIL.Image.fromarray(generate_scene(200 + i, 96).image).save(directory / name)
    (directory / "broken.png").write_bytes(b"not a png")
    return directory


def ray_command(source: Path, out: Path, concurrency: int = 2) -> list[str]:
    return ["everything", str(source), "--engine", "ray", "--concurrency", str(concurrency), "--out", str(out), *FLAGS]


def run_main(args: list[str]) -> tuple[int | str, str]:
    """`sam-hf ARGS` in this process: (exit status or message, stdout)."""
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        try:
            main(args)
            status = 0
        except SystemExit as exit_:
            status = exit_.code
    return status, stdout.getvalue()


def engine_run(out: Path, args: list[str]) -> dict:
    """A finished run into `out` (with `--coco out.json`): its label directory, rows, COCO export, status and stdout."""
    coco = out.with_suffix(".json")
    status, stdout = run_main([*args, "--coco", str(coco)])
    rows = list(ParquetLabels(out).results())
    return {"out": out, "rows": rows, "coco": json.loads(coco.read_text()), "status": status, "stdout": stdout}


@pytest.fixture(scope="module")
def ray_run(scenes, ray_head, tmp_path_factory) -> dict:
    """The scenes labelled by `sam-hf everything --engine ray --concurrency 2 --address HEAD --coco`."""
    out = tmp_path_factory.mktemp("ray") / "labels"
    run = engine_run(out, [*ray_command(scenes, out), "--address", ray_head["address"]])
    run["masks"] = {row["file_name"]: row["masks"] for row in run["rows"]}
    return run


@pytest.fixture(scope="module")
def local_run(scenes, tmp_path_factory) -> dict:
    """The scenes labelled by `sam-hf everything` in this process."""
    out = tmp_path_factory.mktemp("local") / "labels"
    return engine_run(out, ["everything", str(scenes), "--out", str(out), *FLAGS])


def run_cli(args: list[str], capsys) -> tuple[int | str, str]:
    """`sam-hf ARGS` in this process: (exit status or message, stdout)."""
    try:
        main(args)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().out


class Generator:
    """Builds the everything-mode generator of these tests on an actor's device."""

    def __call__(self, device) -> SamAutomaticMaskGenerator:
        model, processor = load_sam(None, device)
        settings = EverythingSettings(**SETTINGS, output_mode="coco_rle")
        return SamAutomaticMaskGenerator(model, processor=processor, settings=settings)


class DyingGenerator(Generator):
    """The same generator, in an actor whose process is killed (SIGKILL) on its second image, once in the whole run:
    the first actor to get there claims `marker` and dies."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, device) -> SamAutomaticMaskGenerator:
        generator, marker = super().__call__(device), self.marker
        generate, calls = generator.generate, []

        def dying(image):
            calls.append(image)
            if len(calls) == 2:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:  # another actor died already
                    pass
                else:
                    marker.write_text(str(os.getpid()))
                    os.kill(os.getpid(), signal.SIGKILL)
            return generate(image)

        generator.generate = dying
        return generator


def test_three_engines_write_equal_rows(scenes, local_run, ray_run, tmp_path) -> None:
    """Single process, `accelerate launch` with two CPU processes (torchrun + gloo; accelerate's `--cpu` launcher
    starts one process unless given an MPI hostfile) and Ray with two actors: the same Parquet rows (same masks, same
    records), the same COCO export, the same failure."""
    status = local_run["status"]
    assert isinstance(status, str) and status.startswith("sam-hf everything: 1 of 6 files could not be read")
    assert "broken.png" in status and "6 images (6 labelled now)" in local_run["stdout"]
    names = ["a.png", "b.png", "broken.png", "c.png", "d.png", "more/e.png"]  # in source order
    assert [row["file_name"] for row in local_run["rows"]] == names
    assert sum(len(row["masks"] or []) for row in local_run["rows"]) == len(local_run["coco"]["annotations"]) > 5

    # The rendezvous binds a free port itself (torchrun --standalone, set through its environment variable): a port
    # probed free beforehand can be taken by another process before the launcher binds it.
    out = tmp_path / "labels"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = [*launch, "-m", "sam_hf", "everything", str(scenes), "--out", str(out), "--coco", f"{out}.json", *FLAGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PET_STANDALONE": "1"}
    # A hang guard only: a loaded machine makes this several times slower than its ~30 s.
    accelerate = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert accelerate.returncode == 1 and "1 of 6 files could not be read" in accelerate.stderr, accelerate.stderr
    assert accelerate.stdout.count("wrote") == 2  # the main process only: the labels and the COCO file
    assert sorted(shard.name.split("-")[0] for shard in (out / "data").glob("*.parquet")) == ["process0", "process1"]

    for run in (
        {"rows": list(ParquetLabels(out).results()), "coco": json.loads(Path(f"{out}.json").read_text())},
        ray_run,
    ):
        assert_same_rows(run["rows"], local_run["rows"])
        assert_same_coco(run["coco"], local_run["coco"])
    assert ray_run["status"] == status


def test_an_existing_cluster_is_used_and_left_running(scenes, ray_head, ray_run, tmp_path) -> None:
    assert "6 images (6 labelled now)" in ray_run["stdout"]
    assert not ray.is_initialized()  # disconnected ...
    assert ray_head["process"].poll() is None  # ... and the cluster still runs, with its resources
    ray.init(address=ray_head["address"], log_to_driver=False)
    try:
        assert ray.cluster_resources()["CPU"] == HEAD_CPUS
        with pytest.raises(ValueError, match="already connected to the Ray cluster"):
            label_with_ray(scenes, tmp_path / "labels", Generator(), SETTINGS, address="127.0.0.1:1")
    finally:
        ray.shutdown()


def test_labels_are_a_dataset_and_every_engine_resumes_them(scenes, ray_head, ray_run, tmp_path, capsys, monkeypatch):
    # A Hugging Face dataset: one row per image, the SA-1B record fields per mask.
    out = tmp_path / "labels"
    shutil.copytree(ray_run["out"], out)
    rows = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert sorted(rows["file_name"]) == ["a.png", "b.png", "broken.png", "c.png", "d.png", "more/e.png"]
    row = next(row for row in rows if row["file_name"] == "a.png")
    assert (row["height"], row["width"], row["error"]) == (96, 96, None) and len(row["sha256"]) == 64
    assert set(row["masks"][0]) == {"segmentation", "area", "bbox", "predicted_iou", "stability_score"} | {
        "point_coords",
        "crop_box",
    }
    assert sum(len(masks or []) for masks in rows["masks"]) == len(ray_run["coco"]["annotations"])  # null: unreadable

    # Resume (from a copy of the images), by the local engine and by Ray: nothing to do again (and the shards go to
    # the Hub as a dataset: the upload is recorded, no network); an image whose content changed is labelled again, on
    # a local Ray that the command starts and stops (no --address; in a process of its own, as Ray's state outlives
    # a local Ray in its process), and keeps one row.
    images = shutil.copytree(scenes, tmp_path / "images")
    assert "6 images (0 labelled now)" in run_cli(["everything", str(images), "--out", str(out), *FLAGS], capsys)[1]
    command = ray_command(images, out, concurrency=1)
    address = ["--address", ray_head["address"]]
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw["repo_id"], kw)))
    assert "6 images (0 labelled now)" in run_cli([*command, *address, "--push-to-hub", "user/labels"], capsys)[1]
    assert [call[:2] for call in calls] == [("create", "user/labels"), ("upload", "user/labels")]
    assert calls[0][2]["repo_type"] == calls[1][2]["repo_type"] == "dataset"
    assert calls[1][2]["folder_path"] == out and "data/*.parquet" in calls[1][2]["allow_patterns"]
    PIL.Image.fromarray(generate_scene(299, 96).image).save(images / "a.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    local_ray = subprocess.run([sys.executable, "-m", "sam_hf", *command], capture_output=True, text=True, env=env)
    assert "6 images (1 labelled now)" in local_ray.stdout, local_ray.stderr[-3000:]
    rows = {row["file_name"]: row for row in ParquetLabels(out).results()}
    assert len(rows) == 6 and sum(1 for _ in ParquetLabels(out).results()) == 6  # one row per image
    assert rows["a.png"]["masks"] != ray_run["masks"]["a.png"] and rows["b.png"]["masks"] == ray_run["masks"]["b.png"]

    # Other settings do not mix into these shards; flags of one engine are refused for the other.
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--box-nms-thresh", "0.5"])
    assert exit_.value.code == 2 and "holds labels made with other settings (box_nms_thresh)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["everything", str(images), "--out", str(out), "--concurrency", "2", *FLAGS])
    assert exit_.value.code == 2 and "--concurrency apply to --engine ray" in capsys.readouterr().err


def test_a_killed_actor_is_retried_and_every_image_labelled_once(scenes, ray_head, ray_run, tmp_path) -> None:
    marker = tmp_path / "killed"
    summary = label_with_ray(
        scenes, tmp_path / "labels", DyingGenerator(marker), SETTINGS, concurrency=2, address=ray_head["address"]
    )
    assert marker.read_text().isdigit()  # an actor process was killed mid-run
    assert summary["labelled"] == summary["images"] == 6
    assert [item["file_name"] for item in summary["failed"]] == ["broken.png"]
    results = list(ParquetLabels(tmp_path / "labels").results())
    assert sorted(row["file_name"] for row in results) == sorted(ray_run["masks"])  # each image exactly once
    assert all(row["masks"] == ray_run["masks"][row["file_name"]] for row in results)


def test_a_dataset_is_a_source(scenes, ray_head, ray_run, tmp_path) -> None:
    """A `save_to_disk` dataset is read as a stream (one read task, blocks of several images): rows named by their
    index, the same masks as the same images from a folder."""
    names = ("a.png", "b.png", "c.png", "d.png")
    images = [{"bytes": (scenes / name).read_bytes(), "path": None} for name in names]
    features = datasets.Features({"picture": datasets.Image()})
    datasets.Dataset.from_dict({"picture": images}, features=features).save_to_disk(tmp_path / "saved")
    source = DatasetSource(str(tmp_path / "saved"), image_column="picture")
    summary = label_with_ray(
        source, tmp_path / "labels", Generator(), SETTINGS, progress=False, address=ray_head["address"]
    )
    assert summary["images"] == 4 and summary["failed"] == []
    rows = {row["file_name"]: row for row in ParquetLabels(tmp_path / "labels").results()}
    assert sorted(rows) == ["0", "1", "2", "3"] and [rows[name]["image_id"] for name in "0123"] == [0, 1, 2, 3]
    assert all(rows[str(index)]["masks"] == ray_run["masks"][name] for index, name in enumerate(names))
