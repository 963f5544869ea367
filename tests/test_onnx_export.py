"""ONNX export (sam_hf.conversion.onnx_export, `sam-hf export-onnx`): the graphs run with onnxruntime give sam_hf's
PyTorch numbers and the official `SamOnnxModel`'s, with the official input layout."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from segment_anything.utils.onnx import SamOnnxModel

from sam_hf import BUNDLED_MODEL_PATH, SamModel, SamPredictor, SamProcessor
from sam_hf.cli import main
from sam_hf.conversion import onnx_export
from sam_hf.conversion.onnx_export import (
    DECODER_FILE,
    DECODER_OUTPUTS,
    ENCODER_FILE,
    export_decoder,
    export_image_encoder,
)
from sam_hf.data import generate_scene
from sam_hf.processing.image_processing_sam import get_preprocess_shape

ORIGINAL_SIZE = (150, 225)  # (height, width) of the imaginary original image: not square, so padding is cropped


def run_decoder(session: ort.InferenceSession, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    outputs = session.run(None, {name: value.numpy() for name, value in inputs.items()})
    return dict(zip(DECODER_OUTPUTS, outputs, strict=True))


def onnx_inputs(
    model: SamModel,
    points: torch.Tensor,
    labels: torch.Tensor,
    box: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    original_size: tuple[int, int] = ORIGINAL_SIZE,
) -> dict[str, torch.Tensor]:
    """The official layout: points (model frame), then box corners (labels 2, 3), or one padding point (-1)."""
    config = model.config.prompt_encoder_config
    if box is None:
        points, labels = torch.cat([points, torch.zeros(1, 2)]), torch.cat([labels, torch.tensor([-1])])
    else:
        points, labels = torch.cat([points, box.reshape(2, 2)]), torch.cat([labels, torch.tensor([2, 3])])
    size, grid = config.mask_input_size, config.image_embedding_size
    return {
        "image_embeddings": torch.randn(1, config.hidden_size, grid, grid),
        "point_coords": points[None].float(),
        "point_labels": labels[None].float(),
        "mask_input": torch.zeros(1, 1, size, size) if mask is None else mask,
        "has_mask_input": torch.tensor([0.0 if mask is None else 1.0]),
        "orig_im_size": torch.tensor(original_size, dtype=torch.float),
    }


@pytest.fixture(scope="module")
def small_decoder(small_pair, tmp_path_factory) -> ort.InferenceSession:
    """The small random-weights model's decoder graph, all four masks."""
    path = export_decoder(small_pair[1], tmp_path_factory.mktemp("onnx") / DECODER_FILE)
    return ort.InferenceSession(str(path))


def sam_hf_outputs(model: SamModel, inputs: dict[str, torch.Tensor], num_points: int, has_box: bool) -> dict:
    """The same prompt through `SamModel` + `post_process_masks`, both multimask settings, as the graph's 4 masks."""
    points, labels = inputs["point_coords"][:, None, :num_points], inputs["point_labels"][:, None, :num_points]
    prompt = {"input_points": points, "input_labels": labels.long()}
    if has_box:
        prompt["input_boxes"] = inputs["point_coords"][:, None, -2:].flatten(2)
    if inputs["has_mask_input"].item():
        prompt["input_masks"] = inputs["mask_input"]
    image_size = model.config.vision_config.image_size
    original_size = [int(v) for v in inputs["orig_im_size"]]
    reshaped_size = get_preprocess_shape(*original_size, image_size)
    low_res, iou = [], []
    with torch.no_grad():
        for multimask in (False, True):
            out = model(image_embeddings=inputs["image_embeddings"], multimask_output=multimask, **prompt)
            low_res.append(out.pred_masks[0])
            iou.append(out.iou_scores[0])
    low_res = torch.cat(low_res, dim=1)
    processor = SamProcessor.for_config(model.config)
    masks = processor.post_process_masks([low_res], [original_size], [reshaped_size], binarize=False)[0]
    return {"masks": masks.numpy(), "iou_predictions": torch.cat(iou, 1).numpy(), "low_res_masks": low_res.numpy()}


@pytest.mark.parametrize(
    "num_points,has_box,has_mask", [(1, False, False), (2, False, True), (5, False, False), (1, True, False)]
)
def test_decoder_matches_pytorch_and_official(small_pair, small_decoder, num_points, has_box, has_mask) -> None:
    """One exported graph (5 example points) for 1, 2 and 5 points, a box, a mask prompt: the same logits and IoU
    as sam_hf's `SamModel` and the official `SamOnnxModel` in PyTorch on the same weights."""
    official, model = small_pair
    torch.manual_seed(num_points)
    size = model.config.vision_config.image_size
    points = torch.rand(num_points, 2) * size
    labels = torch.randint(0, 2, (num_points,))
    box = torch.tensor([30.0, 40.0, 200.0, 150.0]) if has_box else None
    mask_size = model.config.prompt_encoder_config.mask_input_size
    mask = torch.randn(1, 1, mask_size, mask_size) if has_mask else None
    inputs = onnx_inputs(model, points, labels, box, mask)

    got = run_decoder(small_decoder, inputs)
    expected = sam_hf_outputs(model, inputs, num_points, has_box)
    with torch.no_grad():
        official_out = SamOnnxModel(official, return_single_mask=False)(**inputs)
    official_out = dict(zip(DECODER_OUTPUTS, official_out, strict=True))
    assert got["masks"].shape == (1, 4, *ORIGINAL_SIZE)
    for name in DECODER_OUTPUTS:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-3, rtol=0, err_msg=name)
        np.testing.assert_allclose(got[name], official_out[name].numpy(), atol=1e-3, rtol=0, err_msg=name)


def test_decoder_orig_im_size_is_an_input(small_pair, small_decoder) -> None:
    """Another original size in the same graph: masks of that size, as the official model's."""
    official, model = small_pair
    inputs = onnx_inputs(model, torch.tensor([[100.0, 60.0]]), torch.tensor([1]), original_size=(97, 61))
    got = run_decoder(small_decoder, inputs)
    with torch.no_grad():
        expected = SamOnnxModel(official, return_single_mask=False)(**inputs)[0].numpy()
    assert got["masks"].shape == (1, 4, 97, 61)
    np.testing.assert_allclose(got["masks"], expected, atol=1e-3, rtol=0)


@pytest.fixture(scope="module")
def bundled_graphs(tmp_path_factory) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    """Both graphs of the bundled model, through the command line, single-mask decoder."""
    directory = tmp_path_factory.mktemp("bundled_onnx")
    main(["export-onnx", BUNDLED_MODEL_PATH, str(directory), "--return-single-mask"])
    return ort.InferenceSession(str(directory / ENCODER_FILE)), ort.InferenceSession(str(directory / DECODER_FILE))


def test_bundled_model_same_binary_masks(bundled_graphs) -> None:
    """A generated scene through both ONNX graphs gives SamPredictor's binary masks. The single-mask graph chooses as
    the official one, by the number of point tokens: a click (+ padding point) or a box (2 corners) -> the best of the
    three multimask candidates; a click and a box (3 tokens) -> the single-mask output."""
    encoder, decoder = bundled_graphs
    model = SamModel.from_pretrained(BUNDLED_MODEL_PATH).eval()
    predictor = SamPredictor(model)
    scene = generate_scene(3, 128)
    predictor.set_image(scene.image)
    pixel_values = predictor.processor.image_processor(scene.image)["pixel_values"]
    embeddings = encoder.run(None, {"pixel_values": pixel_values.numpy()})[0]
    np.testing.assert_allclose(embeddings, predictor.image.image_embeddings.numpy(), atol=1e-4, rtol=0)

    resize = predictor.processor.image_processor.resize_coordinates
    size = scene.image.shape[:2]
    no_points = (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    checked = 0
    for obj in scene.objects:
        ys, xs = np.nonzero(obj.mask)
        click = np.array([[xs.mean(), ys.mean()]])
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
        click_prompt, box_corners = (resize(click, size), torch.tensor([1])), resize(box.reshape(2, 2), size)
        for prompt, multimask, onnx_prompt in (
            ({"point_coords": click}, True, click_prompt),
            ({"box": box}, True, (*no_points, box_corners)),
            ({"point_coords": click, "box": box}, False, (*click_prompt, box_corners)),
        ):
            expected = predictor.predict(**prompt, multimask_output=multimask)
            best = int(np.argmax(expected.scores))
            inputs = onnx_inputs(model, *onnx_prompt, original_size=size)
            inputs["image_embeddings"] = torch.from_numpy(embeddings)
            got = run_decoder(decoder, inputs)
            assert got["masks"].shape == (1, 1, *size)
            np.testing.assert_allclose(got["iou_predictions"][0, 0], expected.scores[best], atol=1e-4)
            np.testing.assert_array_equal(got["masks"][0, 0] > 0, expected.masks[best])
            checked += 1
    assert checked >= 6


def test_export_rejects_bad_arguments(tmp_path, tiny_model) -> None:
    with pytest.raises(TypeError, match="model"):
        export_decoder(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset"):
        export_image_encoder(tiny_model, tmp_path / "x.onnx", opset=11)
    with pytest.raises(SystemExit) as exit_info:
        main(["export-onnx", str(tmp_path / "missing"), str(tmp_path)])
    assert exit_info.value.code == 2


def test_export_command_takes_an_official_checkpoint(small_pair, tmp_path, monkeypatch, capsys) -> None:
    """`sam-hf export-onnx sam_vit_x.pth OUT` exports the checkpoint's model, converted in memory (the graphs
    themselves are checked above; here the exporter is replaced to keep the test quick)."""
    official, model = small_pair
    torch.save(official.state_dict(), tmp_path / "sam_vit_small.pth")
    exported = []

    def record(model, output_dir, return_single_mask, opset):
        exported.append((model, output_dir, return_single_mask, opset))
        return output_dir / ENCODER_FILE, output_dir / DECODER_FILE

    monkeypatch.setattr(onnx_export, "export_onnx", record)
    main(["export-onnx", str(tmp_path / "sam_vit_small.pth"), str(tmp_path / "out"), "--opset", "19"])
    ((got, output_dir, single, opset),) = exported
    assert (output_dir, single, opset) == (tmp_path / "out", False, 19)
    expected = model.state_dict()
    assert got.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in got.state_dict().items())
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {tmp_path / 'out' / name}" for name in (ENCODER_FILE, DECODER_FILE)
    ]


def test_cached_decoder_exports_once_per_model(small_pair, tmp_path, monkeypatch) -> None:
    exported = []

    def fake_export(model, path, return_single_mask=False, opset=onnx_export.DEFAULT_OPSET, **options):
        exported.append(path)
        Path(path).write_bytes(b"graph")
        return Path(path)

    monkeypatch.setattr(onnx_export, "export_decoder", fake_export)
    model = small_pair[1]
    first = onnx_export.cached_decoder(model, tmp_path)
    assert onnx_export.cached_decoder(model, tmp_path) == first and len(exported) == 1  # the second call: cached
    assert first.read_bytes() == b"graph" and first.parent.name == onnx_export.decoder_cache_key(model)
    vision_only = copy.deepcopy(model)
    with torch.no_grad():
        vision_only.vision_encoder.neck.conv1.weight.add_(1.0)  # the image encoder is not in the decoder graph
    assert onnx_export.decoder_cache_key(vision_only) == onnx_export.decoder_cache_key(model)
    with torch.no_grad():
        vision_only.mask_decoder.iou_prediction_head.proj_in.weight.add_(1.0)
    assert onnx_export.cached_decoder(vision_only, tmp_path) != first and len(exported) == 2
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_export.default_cache_dir() == tmp_path / "xdg" / "sam_hf" / "onnx"


def test_low_res_decoder_is_the_official_graph_without_upscaling(small_pair, tmp_path) -> None:
    """`SamLowResDecoder` (the Space page's graph; run in onnxruntime-web by tests/test_space_browser.py): the four
    tokens' low-res logits and IoU of the official `SamOnnxModel`, on a box and a mask prompt."""
    official, model = small_pair
    torch.manual_seed(7)
    mask_size = model.config.prompt_encoder_config.mask_input_size
    inputs = onnx_inputs(
        model,
        torch.rand(2, 2) * 200,
        torch.tensor([1, 0]),
        torch.tensor([30.0, 40.0, 200.0, 150.0]),
        torch.randn(1, 1, mask_size, mask_size),
    )
    with torch.no_grad():
        _, official_iou, official_low_res = SamOnnxModel(official, return_single_mask=False)(**inputs)
        inputs.pop("orig_im_size")
        low_res, iou = onnx_export.SamLowResDecoder(model)(**inputs)
    assert low_res.shape == (1, 4, mask_size, mask_size)
    np.testing.assert_allclose(low_res.numpy(), official_low_res.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(iou.numpy(), official_iou.numpy(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="return_single_mask"):
        export_decoder(model, tmp_path / "x.onnx", return_single_mask=True, low_res=True)
