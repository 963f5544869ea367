"""MobileSAM: the TinyViT image encoder selected by `SamVisionConfig.backbone`, the official `mobile_sam.pt` layout
(conversion, `load_sam`, the CLI), parity with `segment_anything_hq.sam_model_registry_baseline["vit_tiny"]` on
perturbed random weights (BatchNorm statistics included), and the library's features on a MobileSAM model.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import onnxruntime as ort
import PIL.Image
import pytest
import torch

from sam_hf import SamConfig, SamModel, SamPredictor, SamProcessor, load_sam, segment_text
from sam_hf.acceleration import INT8_MIN_MASK_IOU, quantize_int8
from sam_hf.cli import main
from sam_hf.conversion import build_model, detect_model_size
from sam_hf.conversion.onnx_export import export_image_encoder
from sam_hf.data import generate_scene
from sam_hf.everything import SamAutomaticMaskGenerator
from sam_hf.geometry import mask_iou
from sam_hf.modeling.backbones.tiny_vit import (
    TinyViTAttention,
    TinyViTConvBatchNorm,
    TinyViTVisionEncoder,
    attention_bias_index,
)
from sam_hf.training.interactive import InteractiveTrainer, interactive_batch
from tests.helpers import (
    make_prompts,
    perturb_,
    run_official_hq,
    run_sam_hf,
    scene_image,
    tiny_clip_scorer,
    tiny_config,
)

with warnings.catch_warnings():  # segment_anything_hq imports timm's deprecated paths and re-registers its models
    warnings.simplefilter("ignore")
    from segment_anything_hq import sam_model_registry, sam_model_registry_baseline
    from segment_anything_hq.modeling.tiny_vit_sam import Attention as OfficialTinyViTAttention

EMBEDDING_ATOL = 5e-5
LOGITS_ATOL = 1e-4
# TinyViT's ImageNet classifier (`norm_head`, `head`: 320 -> 1000) is in the official model and `mobile_sam.pt` but
# never runs in MobileSAM; the conversion drops it.
CLASSIFIER_PARAMETERS = 320 * 2 + 320 * 1000 + 1000


def tiny_mobile_config() -> SamConfig:
    """A fast TinyViT SAM: 128 input, stages 32 -> 16 -> 8 -> 8 tokens wide with windows that pad (7 on 16 and 8) and
    one that tiles (4 on 8), and `tiny_config()`'s small prompt encoder and decoder."""
    small = tiny_config()
    vision = {
        "backbone": "tiny_vit",
        "image_size": 128,
        "hidden_size": 48,
        "embed_dims": [16, 24, 32, 48],
        "depths": [1, 1, 2, 1],
        "num_heads": [1, 2, 2, 3],
        "window_sizes": [7, 7, 7, 4],
        "output_channels": 64,
        "num_pos_feats": 32,
        "window_size": 8,  # a ViT field, unused by TinyViT, that must still fit the 8x8 token grid
    }
    return SamConfig(
        vision_config=vision,
        prompt_encoder_config=small.prompt_encoder_config,
        mask_decoder_config=small.mask_decoder_config,
    )


@pytest.fixture(scope="module")
def mobile_pair():
    """The official MobileSAM with every parameter and floating-point buffer perturbed, and the same weights converted
    into sam_hf from its state dict (as `mobile_sam.pt` holds it)."""
    torch.manual_seed(0)
    official = perturb_(sam_model_registry_baseline["vit_tiny"](), seed=4, buffers=True)
    return official, build_model(official.state_dict())


@pytest.fixture(scope="module")
def embeddings(mobile_pair):
    """The official and sam_hf image embeddings of one seeded random 1024x1024 input."""
    official, model = mobile_pair
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return official.image_encoder(pixels)[0], model.get_image_embeddings(pixels)


@pytest.fixture(scope="module")
def tiny_mobile_model() -> SamModel:
    """`tiny_mobile_config()` with random weights and BatchNorm statistics, perturbed."""
    torch.manual_seed(0)
    return perturb_(SamModel(tiny_mobile_config()), seed=5, buffers=True)


# --- configuration -----------------------------------------------------------------------------------------------


def test_preset_has_the_official_parameter_count(mobile_pair):
    official, model = mobile_pair
    with torch.device("meta"):
        preset = SamModel(SamConfig.from_preset("mobile-sam"))
    count = sum(p.numel() for p in preset.parameters())
    assert count == sum(p.numel() for p in model.parameters()) == 9_808_708
    # sam_hf's random Fourier matrix is a parameter (as in transformers); the official model keeps it as a buffer.
    gaussian = official.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.numel()
    assert count == sum(p.numel() for p in official.parameters()) + gaussian - CLASSIFIER_PARAMETERS
    encoder = sum(p.numel() for p in preset.vision_encoder.parameters())
    assert encoder == sum(p.numel() for p in official.image_encoder.parameters()) - CLASSIFIER_PARAMETERS
    assert isinstance(preset.vision_encoder, TinyViTVisionEncoder)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"backbone": "resnet"}, "backbone must be one of"),
        ({"embed_dims": [64, 128]}, r"\['embed_dims'\] are TinyViT fields"),
        ({"backbone": "tiny_vit"}, r"hidden_size \(768\) must equal embed_dims\[-1\] \(320\)"),
        ({"backbone": "tiny_vit", "hidden_size": 320, "depths": [2, 2, 6]}, "depths must be a list of 4"),
        ({"backbone": "tiny_vit", "hidden_size": 320, "embed_dims": [320]}, "embed_dims must be a list of at least"),
        ({"backbone": "tiny_vit", "hidden_size": 320, "merge_strides": [2, 2, 3]}, "merge_strides must each be 1 or 2"),
        ({"backbone": "tiny_vit", "hidden_size": 320, "merge_strides": [2, 2, 2]}, r"patch_size \(16\) must equal"),
        ({"backbone": "tiny_vit", "hidden_size": 320, "num_heads": [2, 4, 6, 10]}, r"embed_dims\[2\] \(160\)"),
        ({"backbone": "tiny_vit", "hidden_size": 320, "local_conv_size": 4}, "local_conv_size must be a positive odd"),
        ({"backbone": "tiny_vit", "hidden_size": 320, "window_sizes": [7, 0, 14, 7]}, "window_sizes must be a list"),
    ],
)
def test_config_errors_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        SamConfig(vision_config=fields)


def test_attention_bias_index_is_the_official_table():
    for window in (4, 7, 14):
        official = OfficialTinyViTAttention(16, 8, num_heads=2, attn_ratio=1, resolution=(window, window))
        assert torch.equal(attention_bias_index(window, torch.device("cpu")), official.attention_bias_idxs)


def test_eval_shortcuts_follow_the_weights():
    """Eval-mode shortcuts (BatchNorm folded into its convolution; the attention bias gathered through an index built
    once per device) equal the plain computation after the weights change in place (load_state_dict), and in float64
    after `.double()`; the index is not in the state dict."""
    torch.manual_seed(0)
    conv = perturb_(TinyViTConvBatchNorm(4, 6, kernel_size=3, stride=2, groups=2), seed=1, buffers=True)
    attention = perturb_(TinyViTAttention(8, num_heads=2, window_size=3), seed=2)
    keys = set(attention.state_dict())
    for step in range(3):
        if step == 1:
            attention.load_state_dict({k: torch.randn_like(v) for k, v in attention.state_dict().items()})
            conv.load_state_dict({k: v.abs() + 0.5 for k, v in conv.state_dict().items()})  # variances stay > 0
        if step == 2:
            attention.double()
            conv.double()
        x = torch.randn(2, 4, 9, 9, dtype=conv.conv.weight.dtype)
        torch.testing.assert_close(conv(x), conv.batch_norm(conv.conv(x)))
        with torch.inference_mode():  # the index is first built here
            attention(torch.randn(5, 9, 8, dtype=x.dtype))
        plain = attention.attention_biases[:, attention_bias_index(3, torch.device("cpu"))]
        assert torch.equal(attention.relative_bias(torch.device("cpu")), plain)
    assert set(attention.state_dict()) == keys
    # Outside inference mode and eval, the biases still get gradients through the cached index.
    attention.train()(torch.randn(5, 9, 8, dtype=torch.float64))[0].sum().backward()
    assert attention.attention_biases.grad is not None


# --- parity with the official MobileSAM (1024 x 1024) ---------------------------------------------------------------


def test_image_embeddings_match(embeddings):
    expected, ours = embeddings
    torch.testing.assert_close(ours, expected, atol=EMBEDDING_ATOL, rtol=0)


@pytest.mark.parametrize("multimask_output", [True, False])
@pytest.mark.parametrize("case", ["point", "points", "box", "points_box", "points_mask", "mask_only"])
def test_masks_and_iou_match(mobile_pair, embeddings, case, multimask_output):
    official, model = mobile_pair
    embedding = embeddings[0]
    prompts = make_prompts(case, 1024, 256)
    expected_masks, expected_iou = run_official_hq(official, (embedding, None), prompts, multimask_output, False)
    masks, iou = run_sam_hf(model, embedding, prompts, multimask_output)
    assert masks.shape == expected_masks.shape
    torch.testing.assert_close(masks, expected_masks, atol=LOGITS_ATOL, rtol=0)
    torch.testing.assert_close(iou, expected_iou, atol=LOGITS_ATOL, rtol=0)


def test_int8_quantises_every_tiny_vit_linear(mobile_pair, embeddings):
    """`quantize_int8` picks the encoder's linears by type: TinyViT's attention (qkv, proj) and MLP (fc1, fc2) layers,
    4 per block; the masks of 16 two-point prompts stay within the int8 accuracy floor of fp32's."""
    model = copy.deepcopy(mobile_pair[1])
    blocks = sum(depth for depth in model.config.vision_config.depths[1:])
    quantize_int8(model)
    quantised = {
        name.rsplit(".", 1)[-1]
        for name, module in model.vision_encoder.named_modules()
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear)
    }
    count = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.vision_encoder.modules())
    assert quantised == {"qkv", "proj", "fc1", "fc2"} and count == 4 * blocks
    assert not any(type(m) is torch.nn.Linear for m in model.vision_encoder.modules())
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))  # the `embeddings` input
    with torch.inference_mode():
        embedding = model.get_image_embeddings(pixels)
    prompts = make_prompts("batch16_points", 1024, 256)
    fp32_masks = run_sam_hf(mobile_pair[1], embeddings[1], prompts, True)[0] > 0
    int8_masks = run_sam_hf(model, embedding, prompts, True)[0] > 0
    assert mask_iou(int8_masks, fp32_masks, empty=1.0).mean() >= INT8_MIN_MASK_IOU


# --- the official checkpoint: conversion, load_sam, the CLI ---------------------------------------------------------


def test_mobile_sam_pt_converts_and_loads(mobile_pair, tmp_path, capsys):
    official, model = mobile_pair
    checkpoint = tmp_path / "mobile_sam.pt"
    torch.save(official.state_dict(), checkpoint)  # as the official file: a plain state dict
    assert detect_model_size(official.state_dict()) == "mobile-sam"
    main(["convert", str(checkpoint), str(tmp_path / "converted"), "--model-size", "mobile-sam"])
    expected = model.state_dict()
    for loaded in (SamModel.from_pretrained(tmp_path / "converted"), load_sam(checkpoint, device="cpu")[0]):
        assert loaded.config.vision_config.backbone == "tiny_vit"
        state = loaded.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[key], expected[key]) for key in expected)
    with pytest.raises(SystemExit):
        main(["convert", str(checkpoint), str(tmp_path / "other"), "--model-size", "vit_b"])
    assert "does not match the checkpoint, which is mobile-sam" in capsys.readouterr().err


def test_missing_and_unexpected_keys_are_listed(mobile_pair):
    state = dict(mobile_pair[0].state_dict())
    del state["image_encoder.layers.2.blocks.5.local_conv.bn.running_var"]
    state["image_encoder.layers.2.blocks.0.attn.scale"] = torch.zeros(1)
    with pytest.raises(ValueError, match="missing keys") as error:
        build_model(state)
    assert "vision_encoder.stages.2.layers.5.local_conv.batch_norm.running_var" in str(error.value)
    assert "unexpected keys ['vision_encoder.stages.2.layers.0.attn.scale']" in str(error.value)


# --- everything else works on a (small) MobileSAM -----------------------------------------------------------------


def test_save_pretrained_round_trip_and_cli_model(tiny_mobile_model, tmp_path, capsys):
    model = tiny_mobile_model
    model.save_pretrained(tmp_path / "model")
    SamProcessor.for_config(model.config).save_pretrained(tmp_path / "model")
    loaded, processor = load_sam(tmp_path / "model", device="cpu")
    assert loaded.config.vision_config.to_dict() == {**model.config.vision_config.to_dict(), "dtype": "float32"}
    expected = model.state_dict()
    assert all(torch.equal(tensor, expected[key]) for key, tensor in loaded.state_dict().items())
    image = tmp_path / "scene.png"
    PIL.Image.fromarray(scene_image(0, 96, 128)).save(image)
    out, scores = tmp_path / "mask.png", tmp_path / "scores.json"
    flags = ["--model", str(tmp_path / "model"), "--out", str(out), "--json", str(scores), "--device", "cpu"]
    main(["segment", str(image), "--point", "60,40", "--multimask", *flags])
    predictor = SamPredictor(loaded, processor)
    predictor.set_image(PIL.Image.open(image))
    expected = predictor.predict(point_coords=np.array([[60, 40]]), point_labels=np.array([1]))
    np.testing.assert_allclose(json.loads(scores.read_text())["scores"], expected.scores, atol=1e-6)
    best = int(np.argmax(expected.scores))
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(out)) == 255, expected.masks[best])


def test_predictor_embeds_with_tiny_vit(tiny_mobile_model):
    processor = SamProcessor.for_config(tiny_mobile_model.config)
    predictor = SamPredictor(tiny_mobile_model, processor)
    image = scene_image(1, 80, 128)
    predictor.set_image(image)
    with torch.no_grad():
        expected = tiny_mobile_model.get_image_embeddings(processor(images=image, return_tensors="pt").pixel_values)
    torch.testing.assert_close(predictor.get_image_embedding(), expected)
    masks, scores, logits = predictor.predict(point_coords=np.array([[30, 50]]), point_labels=np.array([1]))
    assert masks.shape == (3, 80, 128) and scores.shape == (3,) and logits.shape == (3, 32, 32)


def test_everything_and_zero_shot_text(tiny_mobile_model):
    image = scene_image(2, 128, 96)
    generator = SamAutomaticMaskGenerator(
        tiny_mobile_model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    records = generator.generate(image)
    assert records and all(r["segmentation"].shape == (128, 96) for r in records)
    predictor = SamPredictor(tiny_mobile_model, SamProcessor.for_config(tiny_mobile_model.config))
    result = segment_text(predictor, image, "a red circle", method="zero-shot", clip=tiny_clip_scorer(), top_k=2)
    assert result.method == "zero-shot"
    assert result.masks.shape[1:] == (128, 96) and len(result.masks) == len(result.scores) <= 2


def test_onnx_encoder_matches_pytorch(tiny_mobile_model, tmp_path):
    path = export_image_encoder(tiny_mobile_model, tmp_path / "image_encoder.onnx")
    pixels = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(6))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_embeddings,) = session.run(None, {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        expected = tiny_mobile_model.get_image_embeddings(pixels)
    np.testing.assert_allclose(onnx_embeddings, expected.numpy(), atol=1e-4, rtol=0)


def test_attentions_and_hidden_states(tiny_mobile_model):
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        output = tiny_mobile_model.vision_encoder(pixels, output_attentions=True, output_hidden_states=True)
        default = tiny_mobile_model.get_image_embeddings(pixels)
    torch.testing.assert_close(output.last_hidden_state, default, atol=1e-5, rtol=0)
    # stem 32x32x16, then each stage after its patch merging: 16x16x24, 8x8x32, 8x8x48, 8x8x48
    assert [tuple(h.shape[1:]) for h in output.hidden_states] == [(32, 32, 16), (16, 16, 24), (8, 8, 32)] + [
        (8, 8, 48)
    ] * 2
    # stage 1: 16 padded to 21 -> 9 windows of 49, 2 heads; stage 2: 8 -> 14, 4 windows, 2 heads (x2); stage 3: 4
    # windows of 16, 3 heads
    assert [tuple(a.shape) for a in output.attentions] == [(18, 49, 49), (8, 49, 49), (8, 49, 49), (12, 16, 16)]
    torch.testing.assert_close(output.attentions[0].sum(-1), torch.ones(18, 49))
    with torch.no_grad():  # one hidden state alone (the light SAM-HQ's early feature), the others not kept
        (early,) = tiny_mobile_model.vision_encoder(pixels, return_hidden_state=2).hidden_states
    torch.testing.assert_close(early, output.hidden_states[2], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"return_hidden_state must be in \[0, 4\]"):
        tiny_mobile_model.vision_encoder(pixels, return_hidden_state=5)


def test_training_with_a_frozen_encoder_keeps_batch_norm_statistics():
    torch.manual_seed(0)
    model = SamModel(tiny_mobile_config()).train()
    model.vision_encoder.requires_grad_(False)
    batch_norms = [m for m in model.vision_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in batch_norms) and model.mask_decoder.training
    scene = generate_scene(0, 128)
    pixel_values, gt_masks = interactive_batch([(scene.image, scene.masks)], SamProcessor.for_config(model.config))
    encoder_before = {k: v.clone() for k, v in model.vision_encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in model.mask_decoder.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    InteractiveTrainer(model, num_corrective_points=0)(pixel_values, gt_masks).backward()
    optimizer.step()
    assert all(torch.equal(v, encoder_before[k]) for k, v in model.vision_encoder.state_dict().items())
    assert any(not torch.equal(v, decoder_before[k]) for k, v in model.mask_decoder.state_dict().items())
    # Unfrozen statistics follow the training batches.
    model.vision_encoder.freeze_batch_norm = False
    model.train()
    assert all(m.training for m in batch_norms)
    with torch.no_grad():
        model.get_image_embeddings(pixel_values)
    assert not torch.equal(batch_norms[0].running_mean, encoder_before["patch_embed.conv1.batch_norm.running_mean"])


@pytest.mark.heavy
def test_light_hq_vit_tiny_matches_the_official():
    """SAM-HQ on TinyViT (`segment_anything_hq.sam_model_registry["vit_tiny"]`): its state dict converts (the HQ
    decoder fuses the second stage's output, 160 channels), and embeddings, masks and IoU equal the official, with and
    without `hq_token_only` (the official output is the first of sam_hf's: transformers' layout, sorted by IoU)."""
    torch.manual_seed(0)
    official = perturb_(sam_model_registry["vit_tiny"](), seed=8, buffers=True)
    model = build_model(official.state_dict())
    assert model.config.mask_decoder_config.vit_dim == 160
    gaussian = official.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.numel()
    expected_count = sum(p.numel() for p in official.parameters()) + gaussian - CLASSIFIER_PARAMETERS
    assert sum(p.numel() for p in model.parameters()) == expected_count
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        embedding, interm = official.image_encoder(pixels)
        ours = model.get_image_embeddings(pixels)
    torch.testing.assert_close(ours[:, :256], embedding, atol=EMBEDDING_ATOL, rtol=0)
    torch.testing.assert_close(ours[:, 256:], interm[0].permute(0, 3, 1, 2), atol=EMBEDDING_ATOL, rtol=0)
    for case, multimask, hq_token_only in [
        ("points_box", True, False),
        ("point", False, True),
        ("mask_only", True, True),
    ]:
        prompts = make_prompts(case, 1024, 256)
        expected_masks, expected_iou = run_official_hq(official, (embedding, interm), prompts, multimask, hq_token_only)
        with torch.no_grad():
            masks = prompts["masks"]
            output = model(
                image_embeddings=ours,
                input_points=None if prompts["coords"] is None else prompts["coords"][None],
                input_labels=None if prompts["coords"] is None else prompts["labels"][None],
                input_boxes=None if prompts["boxes"] is None else prompts["boxes"][None],
                input_masks=None if masks is None else masks[:, 0][None],
                multimask_output=multimask,
                hq_token_only=hq_token_only,
            )
        torch.testing.assert_close(output.pred_masks[0, :, :1], expected_masks, atol=LOGITS_ATOL, rtol=0)
        torch.testing.assert_close(output.iou_scores[0, :, :1], expected_iou, atol=LOGITS_ATOL, rtol=0)
