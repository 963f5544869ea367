"""Batch labelling (`sam-hf everything DIR`, `sam_hf.labelling`) with files a real data set has: unreadable images,
names that are not UTF-8, files replaced in place, and a umask to respect."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import datasets
import PIL.Image
import pytest

from sam_hf.cli import main
from sam_hf.data import generate_scene
from sam_hf.labelling import ParquetLabels, write_json_atomic
from sam_hf.labelling import local as labelling_local

FLAGS = ["--points-per-side", "4", "--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.7"]
FLAGS += ["--device", "cpu", "--no-progress"]


def save_scene(path: Path, seed: int) -> None:
    PIL.Image.fromarray(generate_scene(seed, 96).image).save(path)


def run_everything(directory: Path, out: Path, capsys, *flags: str) -> tuple[int | str, str]:
    """Runs `sam-hf everything DIRECTORY --out OUT.labels --coco OUT [FLAGS]` in this process: (exit status or message,
    stderr)."""
    try:
        main(["everything", str(directory), "--out", f"{out}.labels", "--coco", str(out), *FLAGS, *flags])
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def test_unreadable_files_are_recorded_and_the_rest_labelled(tmp_path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    save_scene(images / "good.png", 1)
    save_scene(images / os.fsdecode(b"caf\xe9.png"), 2)  # Latin-1 bytes: not valid UTF-8
    (images / "zero.png").write_bytes(b"")
    save_scene(images / "truncated.png", 3)
    data = (images / "truncated.png").read_bytes()
    (images / "truncated.png").write_bytes(data[: len(data) // 2])

    out = tmp_path / "coco.json"
    umask = os.umask(0o022)
    try:
        status, _ = run_everything(images, out, capsys)
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644  # not a temporary file's 0600
    written = [*Path(f"{out}.labels").iterdir(), *Path(f"{out}.labels/data").iterdir()]
    assert all(path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644) for path in written)
    assert isinstance(status, str) and status.startswith("sam-hf everything: 2 of 4 files could not be read")
    assert "truncated.png" in status and "zero.png" in status
    coco = json.loads(out.read_text())
    # Parquet strings are UTF-8: the byte that is not is kept as a `\xNN` escape (the file itself is read by its name).
    assert [image["file_name"] for image in coco["images"]] == ["caf\\xe9.png", "good.png"]
    assert [image["id"] for image in coco["images"]] == [1, 2]
    assert {annotation["image_id"] for annotation in coco["annotations"]} <= {1, 2} and coco["annotations"]
    failed = {item["file_name"]: item["error"] for item in coco["info"]["failed"]}
    assert sorted(failed) == ["truncated.png", "zero.png"]
    assert all(name in error and "cannot read" in error for name, error in failed.items())

    # The failures are results too: a second run labels nothing again, and reports the same failures.
    status_again, _ = run_everything(images, out, capsys)
    assert status_again == status


def test_a_file_replaced_in_place_is_labelled_again(tmp_path, capsys, monkeypatch) -> None:
    """`cp -p` / `rsync -t` keep size and mtime: an uncompressed BMP of another scene has the same size, and the
    modification time is copied. Only the content tells."""
    images = tmp_path / "images"
    images.mkdir()
    for name, seed in (("a.bmp", 1), ("b.bmp", 2)):
        save_scene(images / name, seed)
    out = tmp_path / "coco.json"
    assert run_everything(images, out, capsys)[0] == 0

    labelled = []
    original = labelling_local.label_image
    monkeypatch.setattr(labelling_local, "label_image", lambda *args: labelled.append(args) or original(*args))
    stat = (images / "b.bmp").stat()
    replacement = tmp_path / "other.bmp"
    save_scene(replacement, 3)
    shutil.copyfile(replacement, images / "b.bmp")
    os.utime(images / "b.bmp", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (images / "b.bmp").stat().st_size == stat.st_size
    assert (images / "b.bmp").stat().st_mtime_ns == stat.st_mtime_ns

    assert run_everything(images, out, capsys)[0] == 0
    assert len(labelled) == 1
    rows = {row["file_name"]: row["sha256"] for row in ParquetLabels(f"{out}.labels").results()}
    assert rows["b.bmp"] == hashlib.sha256((images / "b.bmp").read_bytes()).hexdigest() and len(rows) == 2


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask) -> None:
    previous = os.umask(umask)
    try:
        path = tmp_path / "result.json"
        write_json_atomic(path, {"a": 1})
        write_json_atomic(path, {"a": 2})  # replacing keeps the mode of a new file too
    finally:
        os.umask(previous)
    assert json.loads(path.read_text()) == {"a": 2}
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left


def test_a_failed_write_leaves_no_temporary_file(tmp_path) -> None:
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "result.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []


def test_a_dataset_is_a_source(tmp_path, capsys) -> None:
    """A directory of Parquet files (a Hugging Face dataset) is labelled as a stream: images named by their row, an
    unreadable one recorded, the same masks as the same files in a folder; `--split` / `--image-column` are checked."""
    images = tmp_path / "images"
    images.mkdir()
    for name, seed in (("a.png", 1), ("b.png", 2)):
        save_scene(images / name, seed)
    cells = [
        {"bytes": (images / "a.png").read_bytes()},
        {"bytes": b"not a png"},
        {"bytes": (images / "b.png").read_bytes()},
    ]
    table = datasets.Dataset.from_dict({"img": cells}, features=datasets.Features({"img": datasets.Image()}))
    (tmp_path / "parquet").mkdir()
    table.to_parquet(tmp_path / "parquet" / "train-00000.parquet")

    status, _ = run_everything(tmp_path / "parquet", tmp_path / "data.json", capsys, "--image-column", "img")
    assert isinstance(status, str) and status.startswith("sam-hf everything: 1 of 3 files could not be read")
    coco = json.loads((tmp_path / "data.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == ["0", "2"]
    assert [item["file_name"] for item in coco["info"]["failed"]] == ["1"]
    assert "cannot read '1' as an image" in coco["info"]["failed"][0]["error"]
    assert run_everything(images, tmp_path / "folder.json", capsys)[0] == 0
    folder = json.loads((tmp_path / "folder.json").read_text())
    assert coco["annotations"] == folder["annotations"] and coco["annotations"]

    for flags, message in (
        (["--image-column", "picture"], "image_column must be a column of"),
        (["--split", "test"], "cannot read dataset"),
    ):
        status, err = run_everything(tmp_path / "parquet", tmp_path / "x.json", capsys, *flags)
        assert status == 2 and message in err, err
    status, err = run_everything(images, tmp_path / "x.json", capsys, "--split", "train")
    assert status == 2 and "split / image_column apply to datasets" in err
