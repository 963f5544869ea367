"""Files that are only read are never executed: a planted malicious pickle (whose unpickling would create a marker
file) is refused by every loader of the library, the CLI and the zero-shot CLIP; no code path unpickles arbitrary
objects. Pickled weights (`pytorch_model.bin`, official `.pth`) are read by torch's weights-only unpickler only, as
transformers reads them."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import PIL.Image
import pytest
import torch

from sam_hf import SamModel, load_sam
from sam_hf.cli import main
from sam_hf.clip_scoring import ClipScorer
from sam_hf.loading import BUNDLED_CLIP_PATH
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]


class Exploit:
    """Unpickling this calls `open(marker, "w")`: the marker file appears iff the pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant(path: Path, marker: Path) -> Path:
    """A `torch.save` checkpoint whose state dict holds one tensor and the exploit."""
    torch.save({"vision_encoder.patch_embed.projection.bias": torch.zeros(32), "payload": Exploit(marker)}, path)
    return path


def test_the_planted_pickle_is_live(tmp_path):
    """The control: loading it the unsafe way does run the payload, so the tests below can fail."""
    marker = tmp_path / "pwned"
    torch.load(plant(tmp_path / "evil.bin", marker), weights_only=False)
    assert marker.exists()


@pytest.fixture
def evil_model_dir(tmp_path) -> tuple[Path, Path]:
    """A model directory whose only weights are a malicious `pytorch_model.bin` (no safetensors): (dir, marker)."""
    directory, marker = tmp_path / "model", tmp_path / "pwned"
    tiny_config().save_pretrained(directory)
    plant(directory / "pytorch_model.bin", marker)
    return directory, marker


def test_pickled_weights_holding_more_than_tensors_are_refused_and_never_executed(evil_model_dir, tmp_path):
    directory, marker = evil_model_dir
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        SamModel.from_pretrained(directory)  # no safetensors: the .bin, through the weights-only unpickler
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_sam(directory, device="cpu")  # what the CLI and the Space call
    with pytest.raises(ValueError, match="weights_only must be True"):
        SamModel.from_pretrained(directory, weights_only=False)  # the one way transformers would unpickle anything
    evil_pth = plant(tmp_path / "sam_vit_b_evil.pth", marker)  # an "official" checkpoint
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_sam(evil_pth, device="cpu")
    assert not marker.exists()
    # A pickle that holds only tensors loads by default, as in transformers.
    clean = tmp_path / "clean"
    tiny_config().save_pretrained(clean)
    model = SamModel(tiny_config())
    torch.save(model.state_dict(), clean / "pytorch_model.bin")
    assert torch.equal(
        SamModel.from_pretrained(clean).mask_decoder.iou_token.weight, model.mask_decoder.iou_token.weight
    )


def test_safetensors_are_preferred_and_the_pickle_beside_them_is_never_opened(evil_model_dir):
    directory, marker = evil_model_dir
    model = SamModel(tiny_config())
    model.save_pretrained(directory)  # model.safetensors beside the malicious pytorch_model.bin
    loaded, _ = load_sam(directory, device="cpu")
    assert torch.equal(loaded.mask_decoder.iou_token.weight, model.mask_decoder.iou_token.weight)
    assert not marker.exists()


@pytest.mark.parametrize("official", [False, True], ids=["pytorch_model.bin", "official .pth"])
def test_cli_refuses_a_malicious_model_with_a_one_line_error(evil_model_dir, tmp_path, capsys, official):
    directory, marker = evil_model_dir
    model = plant(tmp_path / "sam_vit_b_evil.pth", marker) if official else directory
    image = tmp_path / "image.png"
    PIL.Image.new("RGB", (8, 8)).save(image)
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(image), "--point", "1,1", "--out", str(tmp_path / "m.png"), "--model", str(model)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "cannot load model" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_zero_shot_clip_directory_refuses_a_malicious_pickle(tmp_path):
    """A CLIP directory (open_clip's local layout) whose weights are a pickle instead of safetensors."""
    directory, marker = tmp_path / "clip", tmp_path / "pwned"
    directory.mkdir()
    shutil.copy(Path(BUNDLED_CLIP_PATH) / "open_clip_config.json", directory)
    plant(directory / "open_clip_pytorch_model.bin", marker)
    with pytest.raises(pickle.UnpicklingError):
        ClipScorer.from_pretrained(directory)
    assert not marker.exists()


def test_saved_files_are_safetensors_and_json_only(tmp_path):
    model = SamModel(tiny_config())
    model.save_pretrained(tmp_path / "model")
    names = {path.name for path in (tmp_path / "model").iterdir()}
    assert names == {"config.json", "model.safetensors"}
    json.loads((tmp_path / "model" / "config.json").read_text())


def test_no_code_path_unpickles_arbitrary_objects():
    """Every `torch.load` in the library (its `conversion` package included), the Space and the benchmarks passes
    `weights_only=True`, and nothing calls `pickle.load(s)` or `torch.jit.load` (a source scan: a new call site fails
    here until it is safe)."""
    sources = [p for folder in ("src", "space", "benchmarks") for p in (ROOT / folder).rglob("*.py")]
    assert ROOT / "src" / "sam_hf" / "conversion" / "official.py" in sources
    assert len(sources) > 20
    loads = []
    for path in sources:
        text = path.read_text()
        assert not re.search(r"\bpickle\.loads?\(|\bjit\.load\(|\bnumpy\.load\(.*allow_pickle=True", text), path
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start() : text.find(")", match.start()) + 1]
            assert "weights_only=True" in call, f"{path}: {call}"
            loads.append(path.name)
    assert set(loads) == {"official.py"}  # the one reader of pickled (official .pth) checkpoints
