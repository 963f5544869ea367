"""The conversion script turns an official checkpoint into a sam_hf directory, and refuses anything else."""

from __future__ import annotations

import json

import pytest
import torch

from conversion.convert_official_to_sam_hf import convert_key, main
from sam_hf import SamModel, SamProcessor


@pytest.fixture(scope="module")
def official_checkpoint(vit_b_pair, tmp_path_factory):
    official, _ = vit_b_pair
    path = tmp_path_factory.mktemp("official") / "sam_vit_b_random.pth"
    torch.save(official.state_dict(), path)
    return path, official.state_dict()


def test_converts_official_checkpoint_end_to_end(official_checkpoint, vit_b_pair, tmp_path):
    path, _ = official_checkpoint
    main([str(path), str(tmp_path / "out")])
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors"} <= files
    assert isinstance(SamProcessor.from_pretrained(tmp_path / "out"), SamProcessor)
    assert not any(name.endswith((".bin", ".pth")) for name in files)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["vision_config"]["hidden_size"] == 768
    loaded = SamModel.from_pretrained(tmp_path / "out")
    expected = vit_b_pair[1].state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("mask_decoder.iou_token.weight"), "missing keys.*mask_decoder.iou_token.weight"),
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
        main([str(path), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_wrong_model_size_is_refused(official_checkpoint, tmp_path, capsys):
    path, _ = official_checkpoint
    with pytest.raises(SystemExit):
        main([str(path), str(tmp_path / "out"), "--model-size", "vit_h"])
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
        main([str(path), str(tmp_path / "out")])
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
    main([str(official_checkpoint[0]), str(tmp_path / "out"), "--push-to-hub", "user/sam-vit-base"])
    assert pushed == [("model", "user/sam-vit-base"), ("processor", "user/sam-vit-base")]
