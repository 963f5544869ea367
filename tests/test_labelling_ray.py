"""Batch labelling on Ray Data (`sam-hf everything --engine ray`, `sam_hf.labelling.ray_engine.label_with_ray`): the
same labels as the local engine, Parquet shards a `datasets` user loads, resume, an actor killed mid-run, datasets as
sources, COCO export and the Hub upload wiring. One local Ray with 3 logical CPUs serves the whole module."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sys
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
from sam_hf.labelling import DatasetSource
from sam_hf.labelling.parquet import ParquetLabels
from sam_hf.labelling.ray_engine import label_with_ray
from sam_hf.loading import load_sam
from tests.helpers import assert_same_coco

SETTINGS = {"points_per_side": 4, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7}
FLAGS = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()]
FLAGS += ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """A local Ray with a fixed number of logical CPUs (two actors and the decoding tasks), stopped at the end."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


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


@pytest.fixture(scope="module")
def ray_run(scenes, tmp_path_factory) -> dict:
    """The scenes labelled once by `sam-hf everything --engine ray --concurrency 2 --coco`: the label directory, the
    COCO export, the exit status, stdout and `file_name -> masks`."""
    work = tmp_path_factory.mktemp("ray")
    with contextlib.redirect_stdout(io.StringIO()) as stdout, pytest.raises(SystemExit) as exit_:
        main([*ray_command(scenes, work / "labels"), "--coco", str(work / "coco.json")])
    masks = {row["file_name"]: row["masks"] for row in ParquetLabels(work / "labels").results()}
    coco = json.loads((work / "coco.json").read_text())
    return {
        "out": work / "labels",
        "coco": coco,
        "status": exit_.value.code,
        "stdout": stdout.getvalue(),
        "masks": masks,
    }


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


def test_ray_labels_as_the_local_engine_and_resumes(scenes, ray_run, tmp_path, capsys, monkeypatch) -> None:
    status, coco = ray_run["status"], ray_run["coco"]
    assert isinstance(status, str) and status.startswith("sam-hf everything: 1 of 6 files could not be read")
    assert "6 images (6 labelled now)" in ray_run["stdout"] and "broken.png" in status

    # The same masks and records as the single-process engine (its own run, the same failure).
    local = tmp_path / "local.json"
    local_status, _ = run_cli(["everything", str(scenes), "--out", str(local), *FLAGS], capsys)
    assert local_status == status.replace("error column", "info.failed")
    expected = json.loads(local.read_text())
    assert_same_coco(coco, expected)
    assert coco["info"]["failed"] == expected["info"]["failed"]
    assert [image["file_name"] for image in coco["images"]] == ["a.png", "b.png", "c.png", "d.png", "more/e.png"]

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
    assert sum(len(masks or []) for masks in rows["masks"]) == len(coco["annotations"])  # null: not readable

    # Resume (from a copy of the images): nothing to do again (and the shards go to the Hub as a dataset: the upload is
    # recorded, no network); an image whose content changed is labelled again and keeps one row.
    images = shutil.copytree(scenes, tmp_path / "images")
    command = ray_command(images, out, concurrency=1)
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw["repo_id"], kw)))
    assert "6 images (0 labelled now)" in run_cli([*command, "--push-to-hub", "user/labels"], capsys)[1]
    assert [call[:2] for call in calls] == [("create", "user/labels"), ("upload", "user/labels")]
    assert calls[0][2]["repo_type"] == calls[1][2]["repo_type"] == "dataset"
    assert calls[1][2]["folder_path"] == out and "data/*.parquet" in calls[1][2]["allow_patterns"]
    PIL.Image.fromarray(generate_scene(299, 96).image).save(images / "a.png")
    assert "6 images (1 labelled now)" in run_cli(command, capsys)[1]
    rows = {row["file_name"]: row for row in ParquetLabels(out).results()}
    assert len(rows) == 6 and sum(1 for _ in ParquetLabels(out).results()) == 6  # one row per image
    assert rows["a.png"]["masks"] != ray_run["masks"]["a.png"] and rows["b.png"]["masks"] == ray_run["masks"]["b.png"]

    # Other settings do not mix into these shards.
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--box-nms-thresh", "0.5"])
    assert exit_.value.code == 2 and "holds labels made with other settings (box_nms_thresh)" in capsys.readouterr().err


def test_a_killed_actor_is_retried_and_every_image_labelled_once(scenes, ray_run, tmp_path) -> None:
    marker = tmp_path / "killed"
    summary = label_with_ray(scenes, tmp_path / "labels", DyingGenerator(marker), SETTINGS, concurrency=2)
    assert marker.read_text().isdigit()  # an actor process was killed mid-run
    assert summary["labelled"] == summary["images"] == 6
    assert [item["file_name"] for item in summary["failed"]] == ["broken.png"]
    results = list(ParquetLabels(tmp_path / "labels").results())
    assert sorted(row["file_name"] for row in results) == sorted(ray_run["masks"])  # each image exactly once
    assert all(row["masks"] == ray_run["masks"][row["file_name"]] for row in results)


def test_a_dataset_is_a_source(scenes, ray_run, tmp_path) -> None:
    """A `save_to_disk` dataset is read as a stream (one read task, blocks of several images): rows named by their
    index, the same masks as the same images from a folder."""
    names = ("a.png", "b.png", "c.png", "d.png")
    images = [{"bytes": (scenes / name).read_bytes(), "path": None} for name in names]
    features = datasets.Features({"picture": datasets.Image()})
    datasets.Dataset.from_dict({"picture": images}, features=features).save_to_disk(tmp_path / "saved")
    source = DatasetSource(str(tmp_path / "saved"), image_column="picture")
    summary = label_with_ray(source, tmp_path / "labels", Generator(), SETTINGS, progress=False)
    assert summary["images"] == 4 and summary["failed"] == []
    rows = {row["file_name"]: row for row in ParquetLabels(tmp_path / "labels").results()}
    assert sorted(rows) == ["0", "1", "2", "3"] and [rows[name]["image_id"] for name in "0123"] == [0, 1, 2, 3]
    assert all(rows[str(index)]["masks"] == ray_run["masks"][name] for index, name in enumerate(names))
