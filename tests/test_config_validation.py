"""Config values are checked when a config is built or loaded (README "Limits"): broken or absurd checkpoints are
refused with a `ValueError` naming the field, before any module is built, and the CLI reports them, a
deeply nested config.json and a truncated model.safetensors in one line with exit status 2."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

from sam_hf import SamConfig, SamModel, SamProcessor, load_sam
from sam_hf.cli import main
from sam_hf.configuration_sam import (
    HQ_PRESETS,
    MAX_IMAGE_SIZE,
    PRESETS,
    SamMaskDecoderConfig,
    SamPromptEncoderConfig,
    SamVisionConfig,
)
from sam_hf.processing import SamImageProcessor
from tests.helpers import tiny_config

# (sub-config, field, value, words the message must contain); the cases first.
BAD_VALUES = [
    ("vision_config", "num_attention_heads", 0, "vision_config.num_attention_heads must be an integer in [1, "),
    ("vision_config", "patch_size", 0, "vision_config.patch_size must be an integer in [1, "),
    ("vision_config", "hidden_size", 0, "vision_config.hidden_size must be an integer in [1, "),
    ("vision_config", "num_hidden_layers", 10**6, "vision_config.num_hidden_layers must be an integer in [1, 128]"),
    ("vision_config", "layer_norm_eps", math.nan, "vision_config.layer_norm_eps must be a finite number"),
    ("mask_decoder_config", "num_hidden_layers", -1, "mask_decoder_config.num_hidden_layers must be an integer"),
    ("vision_config", "image_size", 10**6, "vision_config.image_size must be an integer in [1, 8192]"),
    ("vision_config", "window_size", 17, "vision_config.window_size must be an integer in [0, 16]"),
    ("vision_config", "global_attn_indexes", [2, -1], "vision_config.global_attn_indexes must be block indexes"),
    ("vision_config", "hidden_size", 33, "hidden_size (33) must be divisible by num_attention_heads"),
    ("vision_config", "mlp_ratio", math.inf, "vision_config.mlp_ratio must be a finite number"),
    ("vision_config", "hidden_act", "no_such_act", "vision_config.hidden_act must be an activation name"),
    ("vision_config", "use_rel_pos", "yes", "vision_config.use_rel_pos must be True or False"),
    ("prompt_encoder_config", "layer_norm_eps", -1.0, "prompt_encoder_config.layer_norm_eps must be a finite number"),
    ("prompt_encoder_config", "num_point_embeddings", 5, "prompt_encoder_config.num_point_embeddings must be"),
    ("prompt_encoder_config", "mask_input_channels", 2, "prompt_encoder_config.mask_input_channels must be"),
    ("mask_decoder_config", "num_attention_heads", 0, "mask_decoder_config.num_attention_heads must be an integer"),
    ("mask_decoder_config", "num_attention_heads", 3, "mask_decoder_config.num_attention_heads (3) must divide"),
    ("mask_decoder_config", "attention_downsample_rate", 0, "mask_decoder_config.attention_downsample_rate must"),
    ("mask_decoder_config", "iou_head_depth", 1, "mask_decoder_config.iou_head_depth must be an integer in [2, "),
    ("mask_decoder_config", "num_multimask_outputs", 0, "mask_decoder_config.num_multimask_outputs must be"),
    ("mask_decoder_config", "layer_norm_eps", math.inf, "mask_decoder_config.layer_norm_eps must be a finite"),
    ("mask_decoder_config", "mlp_dim", 2.5, "mask_decoder_config.mlp_dim must be an integer"),
    ("mask_decoder_config", "hidden_size", "256", "mask_decoder_config.hidden_size must be an integer"),
]


@pytest.mark.parametrize(("sub_config", "field", "value", "message"), BAD_VALUES)
def test_bad_values_are_refused_naming_the_field(sub_config, field, value, message):
    configs = tiny_config().to_dict()
    configs[sub_config][field] = value
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        SamConfig(**{key: configs[key] for key in ("vision_config", "prompt_encoder_config", "mask_decoder_config")})
    assert message in str(error.value)
    assert time.perf_counter() - start < 5  # refused before any module is built (10**6 layers would take minutes)


def test_sub_configs_check_on_their_own():
    with pytest.raises(ValueError, match=r"vision_config.patch_size must be an integer in \[1, 8192\], got 0"):
        SamVisionConfig(patch_size=0)
    with pytest.raises(ValueError, match=r"prompt_encoder_config\.image_size .* must be a multiple of patch_size"):
        SamPromptEncoderConfig(image_size=1000)
    with pytest.raises(ValueError, match=r"mask_decoder_config\.num_hidden_layers must be an integer"):
        SamMaskDecoderConfig(num_hidden_layers=None)
    with pytest.raises(ValueError, match="initializer_range must be a finite number"):
        SamConfig(initializer_range=math.nan)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("depths", [2, 2, 10**6, 2], r"vision_config\.depths must each be at most 128"),
        ("embed_dims", [64, 128, 10**6, 320], r"vision_config\.embed_dims must each be at most 8192"),
        ("mbconv_expand_ratio", 1e9, r"vision_config\.mbconv_expand_ratio must be a finite number in"),
        ("local_conv_size", 10**6 + 1, r"vision_config\.local_conv_size must be an integer in \[1, 256\]"),
    ],
)
def test_tiny_vit_stages_are_bounded(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamVisionConfig(backbone="tiny_vit", hidden_size=320, **{field: value})


@pytest.mark.parametrize("preset", [*PRESETS, *HQ_PRESETS])
def test_every_released_size_is_within_the_bounds(preset):
    config = SamConfig.from_preset(preset)
    assert config.vision_config.image_size == 1024
    assert SamConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()  # and it loads back


def saved_tiny_model(directory: Path, **changes: dict) -> Path:
    """A saved tiny model whose config.json sub-configs get `changes` (`{"vision_config": {"patch_size": 0}}`)."""
    SamModel(tiny_config()).save_pretrained(directory)
    SamProcessor.for_config(tiny_config()).save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    for sub_config, values in changes.items():
        config[sub_config].update(values)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def run_segment(model: Path, tmp_path: Path, capsys) -> str:
    """`sam-hf segment` with `--model model`: asserts a one-line error with exit status 2 and returns it."""
    image = tmp_path / "image.png"
    PIL.Image.new("RGB", (8, 8)).save(image)
    capsys.readouterr()  # what saving the model printed
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(image), "--point", "1,1", "--out", str(tmp_path / "m.png"), "--model", str(model)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("Loading weights")]  # progress bar
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vision_config": {"num_attention_heads": 0}}, "vision_config.num_attention_heads must be an integer"),
        ({"vision_config": {"num_hidden_layers": 10**6}}, "vision_config.num_hidden_layers must be an integer"),
        ({"vision_config": {"layer_norm_eps": "NaN"}}, "vision_config.layer_norm_eps must be a number"),
        ({"mask_decoder_config": {"num_hidden_layers": -1}}, "mask_decoder_config.num_hidden_layers must be"),
    ],
)
def test_absurd_checkpoint_configs_are_one_line_cli_errors(tmp_path, capsys, changes, message):
    model = saved_tiny_model(tmp_path / "model", **changes)
    with pytest.raises(ValueError, match=message):
        load_sam(model, device="cpu")
    assert message in run_segment(model, tmp_path, capsys)


def test_nan_written_by_json_is_refused(tmp_path):
    """Python's json writes and reads NaN: `"layer_norm_eps": NaN` loaded and gave NaN scores and empty masks."""
    model = saved_tiny_model(tmp_path / "model", mask_decoder_config={"layer_norm_eps": math.nan})
    assert "NaN" in (model / "config.json").read_text()
    with pytest.raises(ValueError, match=r"mask_decoder_config\.layer_norm_eps must be a finite number"):
        load_sam(model, device="cpu")


def test_deeply_nested_config_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    model = saved_tiny_model(tmp_path / "model")
    depth = 100_000  # far beyond Python's recursion limit
    text = (model / "config.json").read_text()
    (model / "config.json").write_text(text[: text.rindex("}")] + ', "nested": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(ValueError, match=r"config.json: its JSON nests too deeply"):
        load_sam(model, device="cpu")
    assert f"{model}/config.json" in run_segment(model, tmp_path, capsys)


def test_truncated_safetensors_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    model = saved_tiny_model(tmp_path / "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model.safetensors: truncated or corrupt"):
        load_sam(model, device="cpu")
    assert f"{weights}: truncated or corrupt" in run_segment(model, tmp_path, capsys)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_official_checkpoint_is_a_one_line_error_naming_the_file(tmp_path, capsys, small_pair, suffix):
    """An official checkpoint cut short (an interrupted download): torch's zip reader or safetensors fails inside;
    load_sam and the CLI name the file instead."""
    checkpoint = tmp_path / f"sam_vit_small{suffix}"
    state_dict = {key: value.contiguous() for key, value in small_pair[0].state_dict().items()}
    torch.save(state_dict, checkpoint) if suffix == ".pth" else save_file(state_dict, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"cannot read .*sam_vit_small\{suffix}: truncated or corrupt"):
        load_sam(checkpoint, device="cpu")
    assert f"cannot read {checkpoint}: truncated or corrupt" in run_segment(checkpoint, tmp_path, capsys)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": {"longest_edge": 10**6}}, "size['longest_edge'] must be a positive integer of at most 8192"),
        ({"pad_size": {"height": 10**6, "width": 10**6}}, "pad_size['height'] must be a positive integer of at most"),
        ({"mask_size": {"longest_edge": 0}}, "mask_size['longest_edge'] must be a positive integer"),
        ({"mask_pad_size": 10**6}, "mask_pad_size['height'] must be a positive integer of at most 8192"),
    ],
)
def test_processor_sizes_are_bounded(tmp_path, capsys, options, message):
    model = saved_tiny_model(tmp_path / "model")
    path = model / "processor_config.json"
    saved = json.loads(path.read_text())
    saved["image_processor"].update(options)
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_sam(model, device="cpu")
    assert message in run_segment(model, tmp_path, capsys)


def test_processor_sizes_at_the_bound_are_accepted():
    pad_size = {"height": MAX_IMAGE_SIZE, "width": MAX_IMAGE_SIZE}
    processor = SamImageProcessor(size={"longest_edge": MAX_IMAGE_SIZE}, pad_size=pad_size)
    assert (processor.size.longest_edge, processor.pad_size.height) == (MAX_IMAGE_SIZE, MAX_IMAGE_SIZE)
