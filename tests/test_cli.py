"""The `sam-hf` command line: segment, everything (Parquet labels and their COCO export, resume) and its error
messages. Several processes and Ray: tests/test_labelling_ray.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sam_hf import SamPredictor, load_sam
from sam_hf.cli import main
from sam_hf.data import generate_scene
from sam_hf.labelling import ParquetLabels
from sam_hf.labelling import local as labelling_local

# Low thresholds: the bundled model is small, and at the official ones it keeps few masks on 128x128 scenes.
EVERYTHING_FLAGS = ["--points-per-side", "8", "--pred-iou-thresh", "0.6", "--stability-score-thresh", "0.8"]
EVERYTHING_FLAGS += ["--device", "cpu", "--no-progress"]
# Text: a held-out scene whose three objects the bundled model + CLIP segment by name (see tests/test_space.py).
TEXT_SEED, TEXT_FLOOR = 128, 0.6


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """Four generated scenes as PNGs, one in a subdirectory."""
    directory = tmp_path_factory.mktemp("scenes")
    (directory / "more").mkdir()
    for i, name in enumerate(["a.png", "b.png", "c.png", "more/d.png"]):
        PIL.Image.fromarray(generate_scene(100 + i, 128).image).save(directory / name)
    return directory


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """Runs `sam-hf ARGS` in this process: (exit status, stderr)."""
    try:
        main(args)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def test_segment_writes_the_predictors_mask(scenes, tmp_path, capsys) -> None:
    out, scores = tmp_path / "mask.png", tmp_path / "scores.json"
    status, err = run_cli(
        [
            "segment",
            str(scenes / "a.png"),
            *["--point", "64,40", "--point", "20,20,0", "--box", "30,10,120,90"],
            *["--out", str(out), "--multimask", "--json", str(scores), "--device", "cpu"],
        ],
        capsys,
    )
    assert status == 0, err
    model, processor = load_sam(device="cpu")
    predictor = SamPredictor(model, processor)
    predictor.set_image(PIL.Image.open(scenes / "a.png"))
    expected = predictor.predict(
        point_coords=np.array([[64, 40], [20, 20]]), point_labels=np.array([1, 0]), box=np.array([30, 10, 120, 90])
    )
    written = json.loads(scores.read_text())
    best = int(np.argmax(expected.scores))
    assert written["mask_index"] == best
    np.testing.assert_allclose(written["scores"], expected.scores, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(out)) == 255, expected.masks[best])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--point", "1,2,x"], "expected X,Y or X,Y,LABEL"),
        (["--point", "1,2,5"], "point label must be"),
        (["--point", "1"], "expected X,Y or X,Y,LABEL"),
        (["--box", "1,2,3"], "expected X1,Y1,X2,Y2"),
        (["--box", "5,5,1,1"], "X2 >= X1"),
        ([], "no prompt"),
        (["--point", "1,2", "--mask-index", "3"], "--mask-index must be in [0, 0]"),
    ],
)
def test_segment_errors(scenes, tmp_path, capsys, args, message) -> None:
    status, err = run_cli(["segment", str(scenes / "a.png"), "--out", str(tmp_path / "m.png"), *args], capsys)
    assert status == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "m.png").exists()


def test_segment_text_writes_the_named_object(tmp_path, capsys) -> None:
    scene = generate_scene(TEXT_SEED, 128)
    image, out = tmp_path / "scene.png", tmp_path / "mask.png"
    PIL.Image.fromarray(scene.image).save(image)
    target = scene.objects[1]
    command = ["segment", str(image), "--text", target.name, "--text-method", "zero-shot", "--out", str(out)]
    status, err = run_cli([*command, "--device", "cpu"], capsys)  # zero-shot: the bundled pair's better method
    assert status == 0, err
    written = np.asarray(PIL.Image.open(out)) == 255
    assert (written & target.mask).sum() / (written | target.mask).sum() > TEXT_FLOOR


def test_segment_whitespace_text_is_a_one_line_error(scenes, tmp_path, capsys) -> None:
    out = tmp_path / "m.png"
    status, err = run_cli(["segment", str(scenes / "a.png"), "--text", " \t ", "--out", str(out)], capsys)
    assert status == 2 and not out.exists()
    assert err == "sam-hf segment: error: --text must not be empty or whitespace only, got ' \\t '.\n"


def test_missing_and_unreadable_files(scenes, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    empty = tmp_path / "empty"
    empty.mkdir()
    prompt = ["--point", "1,2", "--out", str(tmp_path / "m.png")]
    for args, message in (
        (["segment", str(tmp_path / "missing.png"), *prompt], "image file not found"),
        (["segment", str(broken), *prompt], "cannot read"),
        (["segment", str(scenes / "a.png"), *prompt, "--model", str(empty)], "cannot load model"),
        (["everything", str(tmp_path / "missing"), "--out", str(tmp_path / "labels")], "not found"),
        (["everything", str(empty), "--out", str(tmp_path / "labels")], "no image files"),
        (["everything", str(scenes), "--out", str(tmp_path / "a.json")], "for one COCO file add --coco"),
    ):
        status, err = run_cli(args, capsys)
        assert status == 2, args
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "labels").exists()
    # An unreadable image in a batch is recorded in the output and fails the run at the end (tests/test_batch_labelling)
    output = ["--out", str(tmp_path / "labels"), "--coco", str(tmp_path / "a.json")]
    status, err = run_cli(["everything", str(broken), *output, *EVERYTHING_FLAGS], capsys)
    assert status.startswith("sam-hf everything: 1 of 1 files could not be read") and "cannot read" in status
    assert "Traceback" not in err
    assert json.loads((tmp_path / "a.json").read_text())["images"] == []


def test_everything_writes_coco(scenes, tmp_path, capsys) -> None:
    out = tmp_path / "annotations.json"
    command = ["everything", str(scenes), "--out", str(tmp_path / "labels"), "--coco", str(out), *EVERYTHING_FLAGS]
    status, err = run_cli(command, capsys)
    assert status == 0, err
    coco = json.loads(out.read_text())
    assert [image["file_name"] for image in coco["images"]] == ["a.png", "b.png", "c.png", "more/d.png"]
    assert [image["id"] for image in coco["images"]] == [1, 2, 3, 4]
    assert coco["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    annotations = coco["annotations"]
    assert len(annotations) >= 4
    assert [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))
    for annotation in annotations:
        rle = {"size": annotation["segmentation"]["size"], "counts": annotation["segmentation"]["counts"].encode()}
        assert rle["size"] == [128, 128]
        assert annotation["area"] == int(mask_utils.area(rle)) > 0
        np.testing.assert_allclose(annotation["bbox"], mask_utils.toBbox(rle), atol=1)
        assert annotation["score"] == annotation["predicted_iou"] > 0.6
        assert annotation["image_id"] in {1, 2, 3, 4} and annotation["category_id"] == 1
    api = COCO(str(out))  # pycocotools reads it, and decodes the masks
    assert api.annToMask(api.loadAnns(1)[0]).sum() == annotations[0]["area"]


def test_everything_resumes(scenes, tmp_path, capsys, monkeypatch) -> None:
    """An interruption keeps the finished images' rows (and leaves no temporary file); the next run labels only the
    rest; labels of other settings are refused rather than mixed in."""
    out = tmp_path / "labels"
    labelled = []
    original = labelling_local.label_image

    def interrupted(generator, image):
        if len(labelled) == 2:
            raise KeyboardInterrupt
        labelled.append(image.shape)
        return original(generator, image)

    monkeypatch.setattr(labelling_local, "label_image", interrupted)
    command = ["everything", str(scenes), "--out", str(out), *EVERYTHING_FLAGS]
    status, err = run_cli(command, capsys)
    assert status == 130 and err.endswith("sam-hf everything: interrupted\n")
    assert [row["file_name"] for row in ParquetLabels(out).results()] == ["a.png", "b.png"]
    assert not [path for path in (out / "data").iterdir() if path.suffix != ".parquet"]

    labelled.clear()
    monkeypatch.setattr(labelling_local, "label_image", lambda *args: labelled.append(args) or original(*args))
    assert run_cli(command, capsys)[0] == 0
    assert len(labelled) == 2
    assert [row["file_name"] for row in ParquetLabels(out).results()] == ["a.png", "b.png", "c.png", "more/d.png"]

    labelled.clear()  # unchanged settings: nothing to do
    assert run_cli(command, capsys)[0] == 0
    assert labelled == []
    status, err = run_cli([*command, "--box-nms-thresh", "0.5"], capsys)  # other settings: refused
    assert status == 2 and "holds labels made with other settings (box_nms_thresh)" in err
    assert labelled == []
