"""SAM-HQ in sam_hf: parity with `segment_anything_hq` (the official code) and transformers' `SamHQModel` on random
weights (every parameter and buffer perturbed by 0.02 * randn), the official `sam_hq_vit_*.pth` and transformers'
`sam_hq` checkpoints through conversion and `load_sam`, the presets' parameter counts, and SAM-HQ through the
predictor, everything mode, text prompts, ONNX, the CLI and training.

Most tests use a small SAM-HQ (256 input, a 6-block ViT of width 64 with vit_b's global-attention layout: every third
block, so the fused feature is block 2's output, not the first or last block's); one heavy test runs vit_b.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import transformers
from segment_anything_hq import SamAutomaticMaskGenerator as OfficialGenerator
from segment_anything_hq import SamPredictor as OfficialPredictor
from segment_anything_hq import sam_model_registry
from segment_anything_hq.modeling import ImageEncoderViT, MaskDecoderHQ, PromptEncoder, Sam, TwoWayTransformer
from transformers import Trainer, TrainingArguments

from sam_hf import SamAutomaticMaskGenerator, SamConfig, SamModel, SamPredictor, load_sam, segment_text
from sam_hf.cli import main
from sam_hf.conversion import build_model, config_from_official, convert_key, detect_model_size
from tests.helpers import run_official_hq, scene_image, tiny_clip_scorer

SIZE, WIDTH, DEPTH, GLOBAL = 256, 64, 6, [2, 5]
LOGITS_ATOL = 1e-4
EMBEDDING_ATOL = 5e-5
# transformers' SAM-HQ decoder LayerNorms use eps 1e-6, the official 1e-5 (sam_hf loads transformers' checkpoints with
# the official value): outputs differ by ~3e-5 from that alone.
TRANSFORMERS_ATOL = 2e-4


# The official model's pixel normalisation buffers: constants that sam_hf's processor holds, not weights.
NORMALISATION_BUFFERS = {"pixel_mean", "pixel_std"}


def perturb_all_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Adds 0.02 * randn to every parameter and floating-point buffer (but the normalisation constants)."""
    generator = torch.Generator().manual_seed(seed)
    buffers = [buffer for name, buffer in module.named_buffers() if name not in NORMALISATION_BUFFERS]
    with torch.no_grad():
        for tensor in [*module.parameters(), *buffers]:
            if tensor.is_floating_point():
                tensor.add_(0.02 * torch.randn(tensor.shape, generator=generator))
    return module.eval()


def small_official_hq() -> Sam:
    """The official SAM-HQ at the small size (`_build_sam` with a smaller ViT and input)."""
    grid = SIZE // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=SIZE,
            embed_dim=WIDTH,
            depth=DEPTH,
            num_heads=2,
            window_size=7,
            global_attn_indexes=GLOBAL,
            out_chans=256,
            norm_layer=lambda dim: torch.nn.LayerNorm(dim, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(SIZE, SIZE), mask_in_chans=16
        ),
        mask_decoder=MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            vit_dim=WIDTH,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def small_hq_config() -> SamConfig:
    """The sam_hf config of `small_official_hq()`."""
    vision = {"image_size": SIZE, "hidden_size": WIDTH, "num_hidden_layers": DEPTH, "num_attention_heads": 2}
    vision |= {"window_size": 7, "global_attn_indexes": GLOBAL}
    return SamConfig(
        vision_config=vision,
        prompt_encoder_config={"image_size": SIZE},
        mask_decoder_config={"hq_token": True, "vit_dim": WIDTH},
    )


@pytest.fixture(scope="module")
def hq_checkpoint(tmp_path_factory) -> tuple[Sam, Path]:
    """The small official SAM-HQ with perturbed weights, and its state dict saved as the official files are."""
    torch.manual_seed(0)
    official = perturb_all_(small_official_hq(), seed=1)
    path = tmp_path_factory.mktemp("hq") / "sam_hq_vit_small.pth"
    torch.save(official.state_dict(), path)
    return official, path


@pytest.fixture(scope="module")
def hq_pair(hq_checkpoint) -> tuple[Sam, SamModel]:
    """The official model and the same weights loaded by `load_sam` from the official file."""
    official, path = hq_checkpoint
    model, _ = load_sam(path, device="cpu")
    return official, model


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def encoded(hq_pair, pixels) -> tuple[tuple[torch.Tensor, list[torch.Tensor]], torch.Tensor]:
    """The official image encoder's outputs (embeddings, global blocks' outputs) and sam_hf's image embeddings."""
    official, model = hq_pair
    with torch.no_grad():
        return official.image_encoder(pixels), model.get_image_embeddings(pixels)


def make_prompts(case: str) -> dict[str, torch.Tensor | None]:
    """Official-layout prompts for 3 prompts: coords (3, N, 2), labels (3, N), boxes (3, 4), masks (3, 1, 64, 64)."""
    generator = torch.Generator().manual_seed(sum(map(ord, case)))
    coords = labels = boxes = masks = None
    if "point" in case:
        num_points = 1 if case == "point" else 3
        coords = torch.rand(3, num_points, 2, generator=generator) * SIZE
        labels = torch.randint(0, 2, (3, num_points), generator=generator)
        labels[:, 0] = 1
    if "box" in case:
        corners = torch.rand(3, 2, 2, generator=generator) * SIZE
        boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=-1)
    if "mask" in case:
        masks = 4 * torch.randn(3, 1, 4 * SIZE // 16, 4 * SIZE // 16, generator=generator)
    return {"coords": coords, "labels": labels, "boxes": boxes, "masks": masks}


def run_sam_hf(model: SamModel, embeddings: torch.Tensor, prompts: dict, multimask: bool, hq_token_only: bool):
    def batched(tensor):
        return None if tensor is None else tensor[None]

    with torch.no_grad():
        return model(
            image_embeddings=embeddings,
            input_points=batched(prompts["coords"]),
            input_labels=batched(prompts["labels"]),
            input_boxes=batched(prompts["boxes"]),
            input_masks=None if prompts["masks"] is None else prompts["masks"][:, 0][None],
            multimask_output=multimask,
            hq_token_only=hq_token_only,
        )


def test_image_embeddings_carry_the_first_global_blocks_output(encoded):
    (expected, interm), ours = encoded
    assert ours.shape == (1, 256 + WIDTH, SIZE // 16, SIZE // 16)
    torch.testing.assert_close(ours[:, :256], expected, atol=EMBEDDING_ATOL, rtol=0)
    torch.testing.assert_close(ours[:, 256:], interm[0].permute(0, 3, 1, 2), atol=EMBEDDING_ATOL, rtol=0)


def test_encoder_pass_keeps_only_the_early_feature(hq_pair, pixels):
    """`get_image_embeddings` has the encoder keep the one hidden state the HQ decoder fuses, not every block's
    (~160 MB of peak memory for vit_b); `output_hidden_states` still returns them all."""
    model = hq_pair[1]
    kept = []
    hook = model.vision_encoder.register_forward_hook(lambda module, args, output: kept.append(output.hidden_states))
    try:
        with torch.no_grad():
            model.get_image_embeddings(pixels)
            every = model(
                pixel_values=pixels, input_boxes=torch.tensor([[[0.0, 0.0, 40.0, 40.0]]]), output_hidden_states=True
            ).vision_hidden_states
    finally:
        hook.remove()
    index = model.config.vision_config.global_attn_indexes[0] + 1
    assert len(kept[0]) == 1 and len(every) == model.config.vision_config.num_hidden_layers + 1
    torch.testing.assert_close(kept[0][0], every[index], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="return_hidden_state must be in"):
        model.vision_encoder(pixels, return_hidden_state=len(every))


def test_hq_features_are_computed_once_per_image_and_never_stale(hq_pair, encoded):
    """The decoder's per-image HQ features are reused while the same embedding comes back unchanged, and recomputed
    after an in-place edit of the embedding or new decoder weights (each answer equals a fresh computation)."""
    model = copy.deepcopy(hq_pair[1])
    decoder = model.mask_decoder
    calls = []
    compute = decoder.hq_features
    decoder.hq_features = lambda *args: calls.append(1) or compute(*args)
    embeddings = encoded[1].clone()
    prompts = make_prompts("points")

    def masks(fresh: bool = False) -> torch.Tensor:  # fresh: another tensor of equal values, computed anew
        return run_sam_hf(model, embeddings.clone() if fresh else embeddings, prompts, True, False).pred_masks

    first, again = masks(), masks()
    assert len(calls) == 1 and torch.equal(first, again)
    with torch.no_grad():
        embeddings.add_(0.5)
    assert not torch.equal(masks(), first) and len(calls) == 2
    assert torch.equal(masks(), masks(fresh=True)) and len(calls) == 3
    decoder.load_state_dict({key: value * 1.1 for key, value in decoder.state_dict().items()})
    assert torch.equal(masks(), masks(fresh=True)) and len(calls) == 5


@pytest.mark.parametrize("hq_token_only", [False, True])
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", ["point", "points", "box", "points_box", "points_mask", "mask"])
def test_masks_and_iou_match_the_official(hq_pair, encoded, case, multimask, hq_token_only):
    """The official output is the first of sam_hf's (transformers' layout: multimask masks sorted by IoU)."""
    official, model = hq_pair
    prompts = make_prompts(case)
    expected_masks, expected_iou = run_official_hq(official, encoded[0], prompts, multimask, hq_token_only)
    output = run_sam_hf(model, encoded[1], prompts, multimask, hq_token_only)
    assert output.pred_masks.shape[2] == (3 if multimask and not hq_token_only else 1)
    assert output.iou_scores.shape[2] == (3 if multimask else 1)
    torch.testing.assert_close(output.pred_masks[0, :, :1], expected_masks, atol=LOGITS_ATOL, rtol=0)
    torch.testing.assert_close(output.iou_scores[0, :, :1], expected_iou, atol=LOGITS_ATOL, rtol=0)
    if multimask:
        assert torch.all(output.iou_scores[..., :-1] >= output.iou_scores[..., 1:])  # sorted, best first


@pytest.fixture(scope="module")
def transformers_replica(tmp_path_factory) -> tuple[transformers.SamHQModel, Path]:
    """A replica of a `syscv-community/sam-hq-vit-*` repo: transformers' `SamHQModel` (small, perturbed random
    weights) written by its `save_pretrained`, with the Hub's processor config."""
    config = small_hq_config()
    hq_config = transformers.SamHQConfig(
        vision_config={
            key: getattr(config.vision_config, key)
            for key in ("image_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "window_size")
        }
        | {"global_attn_indexes": GLOBAL},
        prompt_encoder_config={"image_size": SIZE},
        mask_decoder_config={"vit_dim": WIDTH},
    )
    torch.manual_seed(0)
    model = perturb_all_(transformers.SamHQModel(hq_config), seed=4)
    directory = tmp_path_factory.mktemp("hub") / "sam-hq-vit-small"
    model.save_pretrained(directory)
    transformers.SamHQProcessor(transformers.SamImageProcessor(size={"longest_edge": SIZE})).save_pretrained(directory)
    return model, directory


def test_transformers_sam_hq_checkpoint_loads_and_matches(transformers_replica, pixels, tmp_path):
    """A transformers `sam_hq` checkpoint loads unchanged: the same tensors, the same encoder outputs and the same IoU
    predictions as transformers' `SamHQModel`. Its masks are not compared with transformers': transformers 5.x's
    `SamHQMaskDecoder` upscales the image embedding from before the two-way transformer (plus the dense prompt,
    height and width swapped) instead of the transformer's output, unlike `segment_anything_hq` (measured: logits
    ~0.5 apart on these weights; emulating that input in sam_hf reproduces transformers' masks to 3e-7). sam_hf's
    masks follow the official code (`test_masks_and_iou_match_the_official`)."""
    reference, directory = transformers_replica
    assert json.loads((directory / "config.json").read_text())["model_type"] == "sam_hq"
    model, processor = load_sam(directory, device="cpu")
    assert model.config.mask_decoder_config.hq_token and model.config.mask_decoder_config.vit_dim == WIDTH
    expected_state = reference.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected_state[key]), key
    assert processor.image_processor.size["longest_edge"] == SIZE
    prompts = make_prompts("points_box")
    with torch.no_grad():
        embeddings, intermediate = reference.get_image_embeddings(pixels)
        ours = model.get_image_embeddings(pixels)
    torch.testing.assert_close(ours[:, :256], embeddings, atol=EMBEDDING_ATOL, rtol=0)
    torch.testing.assert_close(ours[:, 256:], intermediate[0].permute(0, 3, 1, 2), atol=EMBEDDING_ATOL, rtol=0)
    for multimask in (True, False):
        for hq_token_only in (False, True):
            arguments = {
                "input_points": prompts["coords"][None],
                "input_labels": prompts["labels"][None],
                "input_boxes": prompts["boxes"][None],
                "multimask_output": multimask,
                "hq_token_only": hq_token_only,
            }
            with torch.no_grad():
                expected = reference(image_embeddings=embeddings, intermediate_embeddings=intermediate, **arguments)
                # transformers' split inputs (256-channel embeddings + intermediate_embeddings) are taken too
                split = model(image_embeddings=embeddings, intermediate_embeddings=intermediate, **arguments)
                joined = model(image_embeddings=ours, **arguments)
            torch.testing.assert_close(split.iou_scores, expected.iou_scores, atol=TRANSFORMERS_ATOL, rtol=0)
            assert split.pred_masks.shape == expected.pred_masks.shape
            torch.testing.assert_close(joined.pred_masks, split.pred_masks, atol=LOGITS_ATOL, rtol=0)
    # saved by sam_hf and read back: the same model
    model.save_pretrained(tmp_path / "saved")
    reloaded = SamModel.from_pretrained(tmp_path / "saved")
    assert reloaded.config.mask_decoder_config.hq_token
    assert all(torch.equal(value, reloaded.state_dict()[key]) for key, value in model.state_dict().items())


def test_official_checkpoint_converts_and_bad_keys_are_named(hq_checkpoint, tmp_path, capsys):
    official, path = hq_checkpoint
    assert convert_key("mask_decoder.hf_mlp.layers.1.weight") == "mask_decoder.hq_mask_mlp.layers.0.weight"
    assert convert_key("mask_decoder.compress_vit_feat.1.bias") == "mask_decoder.compress_vit_norm.bias"
    assert config_from_official(official.state_dict()).to_dict() == small_hq_config().to_dict()
    main(["convert", str(path), str(tmp_path / "out")])
    converted = SamModel.from_pretrained(tmp_path / "out")
    assert converted.config.mask_decoder_config.hq_token
    for key, value in build_model(official.state_dict()).state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    for edit, message in [
        (lambda sd: sd.pop("mask_decoder.hf_mlp.layers.2.bias"), r"missing keys \['mask_decoder.hq_mask_mlp.proj_out"),
        (lambda sd: sd.__setitem__("mask_decoder.hf_extra", torch.zeros(1)), r"unexpected keys \['mask_decoder.hf_ex"),
    ]:
        state_dict = dict(official.state_dict())
        edit(state_dict)
        torch.save(state_dict, tmp_path / "edited.pth")
        with pytest.raises(SystemExit):
            main(["convert", str(tmp_path / "edited.pth"), str(tmp_path / "bad")])
        assert re.search(message, capsys.readouterr().err)
        with pytest.raises(ValueError, match=message):
            load_sam(tmp_path / "edited.pth")


@pytest.mark.parametrize("size", ["vit_b", "vit_l", "vit_h"])
def test_preset_parameter_counts_equal_the_official(size):
    """Built on the meta device (no memory, no init). The official random Fourier matrix (2 x 128) is a buffer,
    sam_hf's (transformers') a parameter: it is counted on both sides."""
    with torch.device("meta"):
        official = sam_model_registry[size](checkpoint=None)
        model = SamModel(SamConfig.from_preset(f"sam-hq-{size.replace('_', '-')}"))
    count = sum(p.numel() for p in model.parameters())
    gaussian = official.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    assert count == sum(p.numel() for p in official.parameters()) + gaussian.numel()
    assert detect_model_size(official.state_dict()) == f"sam-hq-{size.replace('_', '-')}"


def test_hq_config_fields_are_checked():
    with pytest.raises(ValueError, match="vit_dim must be a positive int"):
        SamConfig(mask_decoder_config={"hq_token": True})
    with pytest.raises(ValueError, match=r"vit_dim \(768\) is only used by the SAM-HQ decoder"):
        SamConfig(mask_decoder_config={"vit_dim": 768})
    with pytest.raises(ValueError, match=r"vit_dim \(1024\) must equal vision_config.hidden_size \(768\)"):
        SamConfig(mask_decoder_config={"hq_token": True, "vit_dim": 1024})
    with pytest.raises(ValueError, match="hq_token must be a bool"):
        SamConfig(mask_decoder_config={"hq_token": "yes", "vit_dim": 768})


def test_bad_hq_inputs_are_named(hq_pair, small_pair, encoded):
    _, model = hq_pair
    embeddings = encoded[1]
    points = torch.zeros(1, 1, 1, 2)
    with pytest.raises(ValueError, match=r"image_embeddings must have shape \(batch_size, 256 \+ 64"):
        model(image_embeddings=embeddings[:, :300], input_points=points)
    with pytest.raises(ValueError, match="intermediate_embeddings must be"):
        model(image_embeddings=embeddings[:, :256], intermediate_embeddings=[torch.zeros(1, 16, 16, 8)])
    with pytest.raises(ValueError, match="labels with hq_token_only need multimask_output=False"):
        model(image_embeddings=embeddings, input_points=points, labels=torch.zeros(1, 1, 8, 8), hq_token_only=True)
    with pytest.raises(ValueError, match="hq_token_only and intermediate_embeddings are for SAM-HQ models"):
        small_pair[1](image_embeddings=torch.zeros(1, 256, 16, 16), input_points=points, hq_token_only=True)


@pytest.mark.parametrize("hq_token_only", [False, True])
def test_predictor_matches_the_official_hq_predictor(hq_pair, hq_token_only):
    official, model = hq_pair
    image = scene_image(5, 180, 240)
    ours, reference = SamPredictor(model), OfficialPredictor(official)
    ours.set_image(image)
    reference.set_image(image)
    torch.testing.assert_close(ours.get_image_embedding(), reference.features, atol=EMBEDDING_ATOL, rtol=0)
    for prompt in [
        {"point_coords": np.array([[120, 90]]), "point_labels": np.array([1])},
        {"box": np.array([20, 30, 200, 150])},
    ]:
        for multimask in (True, False):
            expected = reference.predict(**prompt, multimask_output=multimask, hq_token_only=hq_token_only)
            got = ours.predict(**prompt, multimask_output=multimask, hq_token_only=hq_token_only)
            np.testing.assert_allclose(got.scores, expected[1], atol=LOGITS_ATOL)
            np.testing.assert_allclose(got.low_res_logits, expected[2], atol=LOGITS_ATOL)
            assert (got.masks != expected[0]).mean() < 1e-3  # thresholded at 0: pixels within 1e-4 of it may flip


def test_everything_mode_matches_the_official_hq_generator(hq_pair):
    official, model = hq_pair
    image = scene_image(6, 160, 200)
    # every mask kept (random weights give near-identical masks, which NMS would pick among by ties)
    settings = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    expected = OfficialGenerator(official, **settings).generate(image)
    got = SamAutomaticMaskGenerator(model, **settings).generate(image)
    assert len(got) == len(expected) > 0
    by_point = {tuple(record["point_coords"][0]): record for record in got}
    for record in expected:
        mine = by_point[tuple(record["point_coords"][0])]
        assert abs(mine["predicted_iou"] - record["predicted_iou"]) < LOGITS_ATOL
        assert (mine["segmentation"] != record["segmentation"]).mean() < 1e-3


def test_text_prompts_and_cli_on_an_hq_checkpoint(hq_pair, tmp_path, capsys):
    _, model = hq_pair
    image = scene_image(7, 128, 160)
    result = segment_text(SamPredictor(model), image, "a red circle", method="zero-shot", clip=tiny_clip_scorer())
    assert result.masks.shape[1:] == image.shape[:2]
    model.save_pretrained(tmp_path / "hq")
    PIL.Image.fromarray(image).save(tmp_path / "scene.png")
    out, scores = tmp_path / "mask.png", tmp_path / "scores.json"
    model_args = ["--model", str(tmp_path / "hq"), "--point", "80,60", "--device", "cpu"]
    main(["segment", str(tmp_path / "scene.png"), *model_args, "--out", str(out), "--json", str(scores)])
    predictor = SamPredictor(model)
    predictor.set_image(image)
    expected = predictor.predict(point_coords=np.array([[80, 60]]), multimask_output=False)
    np.testing.assert_allclose(json.loads(scores.read_text())["scores"], expected.scores, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(out)) == 255, expected.masks[0])


def test_onnx_graphs_match_the_official_hq_onnx_model(hq_pair, encoded, pixels, tmp_path):
    """The encoder graph gives the embeddings and the early feature; the decoder graph (with its extra
    `interm_embeddings` input) gives `segment_anything_hq.utils.onnx.SamOnnxModel`'s outputs (its default
    `multimask_output=False`), box corners (labels 2, 3) and the padding point (-1) included; so does the decoder's
    module with `hq_token_only` (not exported again: the export is the slow part)."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from segment_anything_hq.utils.onnx import SamOnnxModel

    from sam_hf.conversion.onnx_export import decoder_example_inputs, decoder_module, export_onnx

    official, model = hq_pair
    encoder_path, decoder_path = export_onnx(model, tmp_path)
    embeddings, interm = onnxruntime.InferenceSession(str(encoder_path)).run(None, {"pixel_values": pixels.numpy()})
    assert interm.shape == (1, 1, SIZE // 16, SIZE // 16, WIDTH)
    np.testing.assert_allclose(embeddings, encoded[1][:, :256], atol=EMBEDDING_ATOL)
    np.testing.assert_allclose(interm[0], encoded[1][:, 256:].permute(0, 2, 3, 1), atol=EMBEDDING_ATOL)
    inputs = decoder_example_inputs(model, num_points=4)
    inputs["image_embeddings"] = encoded[0][0]
    inputs["interm_embeddings"] = torch.stack(encoded[0][1])  # all global blocks, as the official passes them
    inputs["point_labels"] = torch.tensor([[1.0, 2.0, 3.0, -1.0]])
    decoder = onnxruntime.InferenceSession(str(decoder_path))
    for hq_token_only in (False, True):
        if hq_token_only:
            with torch.no_grad():
                got = [output.numpy() for output in decoder_module(model, hq_token_only=True)(**inputs)]
        else:
            got = decoder.run(None, {name: value.numpy() for name, value in inputs.items()})
        with torch.no_grad():
            expected = SamOnnxModel(official, hq_token_only=hq_token_only)(**inputs)
        for name, ours, reference in zip(["masks", "iou_predictions", "low_res_masks"], got, expected, strict=True):
            assert ours.shape == reference.shape, name
            assert np.abs(ours - reference.numpy()).max() < LOGITS_ATOL, name


def test_training_with_a_frozen_encoder_changes_the_decoder_only(hq_pair, pixels, tmp_path):
    model = SamModel(hq_pair[1].config)
    model.load_state_dict(hq_pair[1].state_dict())
    model.vision_encoder.requires_grad_(False)
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixels)
    labels = torch.zeros(2, SIZE, SIZE)
    labels[0, 40:120, 60:200], labels[1, 150:230, 20:90] = 1, 1
    examples = [
        {
            "image_embeddings": embeddings[0],
            "input_points": torch.tensor([[[130.0, 80.0]], [[55.0, 190.0]]]),
            "labels": labels,
        }
    ] * 2
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    arguments = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    result = Trainer(model=model, args=arguments, train_dataset=examples).train()
    assert np.isfinite(result.training_loss)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert {"mask_decoder.hq_token.weight", "mask_decoder.mask_conv1.weight"} <= changed
    assert not any(name.startswith("vision_encoder.") for name in changed)


@pytest.mark.heavy
def test_vit_b_size_matches_the_official():
    """The full SAM-HQ vit_b (1024 input) converted from the official state dict gives the official numbers."""
    torch.manual_seed(0)
    official = perturb_all_(sam_model_registry["vit_b"](checkpoint=None), seed=2)
    model = build_model(official.state_dict())
    assert detect_model_size(official.state_dict()) == "sam-hq-vit-b"
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixels)
        encoded = official.image_encoder(pixels)
        torch.testing.assert_close(embeddings[:, :256], encoded[0], atol=EMBEDDING_ATOL, rtol=0)
        torch.testing.assert_close(embeddings[:, 256:], encoded[1][0].permute(0, 3, 1, 2), atol=EMBEDDING_ATOL, rtol=0)
        for case in ("points_box", "mask"):
            prompts = {
                key: value * 4 if key in ("coords", "boxes") and value is not None else value
                for key, value in make_prompts(case).items()
            }
            if prompts["masks"] is not None:
                prompts["masks"] = torch.nn.functional.interpolate(prompts["masks"], size=256)
            for multimask, hq_token_only in ((True, False), (False, True)):
                expected_masks, expected_iou = run_official_hq(official, encoded, prompts, multimask, hq_token_only)
                output = run_sam_hf(model, embeddings, prompts, multimask, hq_token_only)
                torch.testing.assert_close(output.pred_masks[0, :, :1], expected_masks, atol=LOGITS_ATOL, rtol=0)
                torch.testing.assert_close(output.iou_scores[0, :, :1], expected_iou, atol=LOGITS_ATOL, rtol=0)
