"""`sam-hf convert` (sam_hf.conversion) turns an official checkpoint into a sam_hf directory, reads the model's
configuration off the tensor shapes, and refuses anything else."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry

from sam_hf import SamConfig, SamModel, SamProcessor
from sam_hf.cli import main
from sam_hf.conversion import build_model, config_from_official, convert_key, detect_model_size
from tests.helpers import small_sam_config


def convert(*args: str) -> None:
    main(["convert", *args])


SAVE_METADATA = {"dtype", "_name_or_path", "architectures", "transformers_version"}  # recorded by save_pretrained


def architecture(config: SamConfig) -> dict:
    """The config's fields without what `save_pretrained` records about the saving."""

    def strip(fields: dict) -> dict:
        return {
            key: strip(value) if isinstance(value, dict) else value
            for key, value in fields.items()
            if key not in SAVE_METADATA
        }

    return strip(config.to_dict())


@pytest.fixture(scope="module")
def official_checkpoint(vit_b_pair, tmp_path_factory):
    official, _ = vit_b_pair
    path = tmp_path_factory.mktemp("official") / "sam_vit_b_random.pth"
    torch.save(official.state_dict(), path)
    return path, official.state_dict()


def test_converts_official_checkpoint_end_to_end(official_checkpoint, vit_b_pair, tmp_path):
    path, _ = official_checkpoint
    convert(str(path), str(tmp_path / "out"))
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors"} <= files
    assert isinstance(SamProcessor.from_pretrained(tmp_path / "out"), SamProcessor)
    assert not any(name.endswith((".bin", ".pth")) for name in files)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["vision_config"]["hidden_size"] == 768
    loaded = SamModel.from_pretrained(tmp_path / "out")
    assert architecture(loaded.config) == architecture(SamConfig.from_preset("vit_b"))
    expected = vit_b_pair[1].state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("mask_decoder.transformer.norm_final_attn.bias"), "missing keys.*norm_final_attn.bias"),
        (lambda sd: sd.__setitem__("mask_decoder.extra.weight", torch.zeros(1)), "unexpected keys.*mask_decoder.extra"),
    ],
)
def test_missing_or_unknown_keys_stop_with_their_names(official_checkpoint, tmp_path, capsys, edit, message):
    _, state_dict = official_checkpoint
    state_dict = dict(state_dict)
    edit(state_dict)
    path = tmp_path / "edited.pth"
    torch.save(state_dict, path)
    with pytest.raises(SystemExit) as exit_info:
        convert(str(path), str(tmp_path / "out"))
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_wrong_model_size_is_refused(official_checkpoint, tmp_path, capsys):
    path, _ = official_checkpoint
    with pytest.raises(SystemExit):
        convert(str(path), str(tmp_path / "out"), "--model-size", "vit_h")
    assert "vit_h does not match the checkpoint, which is vit_b" in capsys.readouterr().err


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_not_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": _Exploit(marker)}, path)
    with pytest.raises(SystemExit):
        convert(str(path), str(tmp_path / "out"))
    assert not marker.exists()
    assert "refusing to unpickle" in capsys.readouterr().err


def test_key_rules_follow_transformers_layout():
    assert convert_key("image_encoder.blocks.3.norm1.weight") == "vision_encoder.layers.3.layer_norm1.weight"
    assert convert_key("mask_decoder.transformer.norm_final_attn.bias") == (
        "mask_decoder.transformer.layer_norm_final_attn.bias"
    )
    assert convert_key("mask_decoder.output_hypernetworks_mlps.2.layers.1.weight") == (
        "mask_decoder.output_hypernetworks_mlps.2.layers.0.weight"
    )


def test_push_to_hub_uploads_model_and_processor(official_checkpoint, tmp_path, monkeypatch):
    """The Hub upload goes through the standard `push_to_hub` of the model and the processor (no network here)."""
    pushed = []
    monkeypatch.setattr(SamModel, "push_to_hub", lambda self, repo_id, **kw: pushed.append(("model", repo_id)))
    monkeypatch.setattr(SamProcessor, "push_to_hub", lambda self, repo_id, **kw: pushed.append(("processor", repo_id)))
    convert(str(official_checkpoint[0]), str(tmp_path / "out"), "--push-to-hub", "user/sam-vit-base")
    assert pushed == [("model", "user/sam-vit-base"), ("processor", "user/sam-vit-base")]


@pytest.mark.parametrize("size", ["vit_b", "vit_l", "vit_h"])
def test_official_sizes_are_detected_from_the_shapes(size):
    with torch.device("meta"):
        state_dict = sam_model_registry[size](checkpoint=None).state_dict()
    assert detect_model_size(state_dict) == size
    assert config_from_official(state_dict).to_dict() == SamConfig.from_preset(size).to_dict()


def test_smaller_official_architectures_convert_with_their_numbers(small_pair, tmp_path, capsys):
    """A model of the official architecture but no official size (256 input, 2 blocks of width 64): its whole
    configuration is read off the shapes, and the converted model gives the official outputs."""
    official, _ = small_pair
    state_dict = official.state_dict()
    assert detect_model_size(state_dict) is None
    assert config_from_official(state_dict).to_dict() == small_sam_config().to_dict()
    model = build_model(state_dict)
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 256, 256, generator=generator) * 255
    points, labels = torch.tensor([[[40.0, 200.0], [120.0, 30.0]]]), torch.tensor([[1, 0]])
    with torch.no_grad():
        embeddings = official.image_encoder(official.preprocess(image))
        sparse, dense = official.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        expected, expected_iou = official.mask_decoder(
            embeddings, official.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True
        )
        pixel_values = (image - official.pixel_mean) / official.pixel_std
        got = model(pixel_values=pixel_values, input_points=points[:, None], input_labels=labels[:, None])
    np.testing.assert_allclose(got.pred_masks[0], expected, atol=1e-5)
    np.testing.assert_allclose(got.iou_scores[0], expected_iou, atol=1e-6)
    torch.save(state_dict, tmp_path / "small.pth")
    with pytest.raises(SystemExit):
        convert(str(tmp_path / "small.pth"), str(tmp_path / "out"), "--model-size", "vit_b")
    assert "which is not an official size (hidden_size 64)" in capsys.readouterr().err
    convert(str(tmp_path / "small.pth"), str(tmp_path / "out"))
    assert architecture(SamModel.from_pretrained(tmp_path / "out").config) == architecture(small_sam_config())
    pixel_values = SamProcessor.from_pretrained(tmp_path / "out")(images=np.zeros((30, 40, 3), np.uint8))[
        "pixel_values"
    ]
    assert pixel_values.shape == (1, 3, 256, 256)  # the processor saved with it matches the model's input size


def test_not_an_official_checkpoint_is_named(tmp_path, capsys):
    torch.save({"vision_encoder.patch_embed.projection.weight": torch.zeros(1)}, tmp_path / "hf.pth")
    with pytest.raises(SystemExit):
        convert(str(tmp_path / "hf.pth"), str(tmp_path / "out"))
    assert "Not an official SAM checkpoint: no image_encoder.patch_embed.proj.weight" in capsys.readouterr().err
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(SystemExit):
        convert(str(tmp_path / "list.pth"), str(tmp_path / "out"))
    assert "holds a list, not a state dict" in capsys.readouterr().err
