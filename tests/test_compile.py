"""Ready for accelerators, shown on the CPU: `torch.compile` traces the prompt path and the image encoder without a
graph break, and nothing inside the model or the interactive trainer builds a tensor on the CPU for inputs on another
device (the meta device stands in for the accelerator: mixing it with a CPU tensor raises)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from sam_hf import SamModel
from sam_hf.training.interactive import InteractiveTrainer

EMBEDDING_SHAPE = (2, 64, 8, 8)  # tiny_config(): 128 input, 8x8 grid, 64 channels
PROMPTS = {
    "points": {
        "input_points": torch.tensor([[[[30.0, 40.0], [90.0, 20.0]]]] * 2),
        "input_labels": torch.tensor([[[1, 0]]] * 2),
    },
    "boxes": {"input_boxes": torch.tensor([[[10.0, 20.0, 90.0, 100.0]]] * 2)},
    "masks": {"input_masks": torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))},
}
PROMPTS["everything"] = {**PROMPTS["points"], **PROMPTS["boxes"], **PROMPTS["masks"]}


@pytest.fixture
def model(tiny_model: SamModel) -> SamModel:
    return tiny_model.eval()


@pytest.mark.parametrize("kind", sorted(PROMPTS))
def test_prompt_path_has_no_graph_break(model, kind):
    torch._dynamo.reset()
    embeddings = torch.randn(EMBEDDING_SHAPE)
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(image_embeddings=embeddings, **PROMPTS[kind])
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_image_encoder_has_no_graph_break(model):
    torch._dynamo.reset()
    with torch.no_grad():
        explanation = torch._dynamo.explain(model.get_image_embeddings)(torch.randn(1, 3, 128, 128))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_compiled_full_graph_matches_eager(model):
    """`fullgraph=True` fails on any break; the traced model (value checks skipped, padding mask always kept) gives
    the eager outputs."""
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    pixel_values = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(pixel_values=pixel_values, **PROMPTS["everything"])
        actual = compiled(pixel_values=pixel_values, **PROMPTS["everything"])
    torch.testing.assert_close(actual.pred_masks, expected.pred_masks, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.iou_scores, expected.iou_scores, atol=1e-5, rtol=0)


def test_value_checks_still_run_in_eager(model):
    """Skipping value checks applies to tracing only: eager calls keep their clear errors."""
    with pytest.raises(ValueError, match="input_labels"):
        model(
            image_embeddings=torch.randn(EMBEDDING_SHAPE),
            **{**PROMPTS["points"], "input_labels": torch.full((2, 1, 2), 5)},
        )
    with pytest.raises(ValueError, match="pixel_values"):
        model.get_image_embeddings(torch.full((1, 3, 128, 128), float("nan")))


def on_meta(tensors: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    return {name: None if value is None else value.to("meta") for name, value in tensors.items()}


@pytest.mark.parametrize("output_attentions", [False, True])
def test_model_builds_no_cpu_tensor_for_inputs_elsewhere(model, output_attentions):
    model = model.to("meta")
    prompts = on_meta(PROMPTS["everything"])
    output = model(
        pixel_values=torch.empty(2, 3, 128, 128, device="meta"),
        output_attentions=output_attentions,
        output_hidden_states=True,
        **prompts,
    )
    assert output.pred_masks.shape == (2, 1, 3, 32, 32)
    assert output.pred_masks.is_meta and output.iou_scores.is_meta
    points_only = model(
        image_embeddings=torch.empty(EMBEDDING_SHAPE, device="meta"), input_points=prompts["input_points"]
    )
    assert points_only.pred_masks.is_meta


def test_meta_device_catches_a_cpu_tensor(model):
    """The check above can fail: one prompt tensor left on the CPU (as the trainer's labels were) raises."""
    model = model.to("meta")
    prompts = on_meta(PROMPTS["points"])
    with pytest.raises(RuntimeError, match="device"):
        model(
            image_embeddings=torch.empty(EMBEDDING_SHAPE, device="meta"),
            input_points=prompts["input_points"],
            input_labels=PROMPTS["points"]["input_labels"],
        )


def test_interactive_trainer_builds_no_cpu_tensor_for_inputs_elsewhere(model):
    """Its random draws come from a CPU generator and move to the data's device; labels are made on that device."""
    trainer = InteractiveTrainer(model.to("meta"), num_corrective_points=2)
    gt_masks = torch.empty(2, 3, 128, 128, dtype=torch.bool, device="meta")
    loss = trainer(torch.empty(2, 3, 128, 128, device="meta"), gt_masks)
    assert loss.is_meta and loss.shape == ()
