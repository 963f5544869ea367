"""The image encoder's attention: fused SDPA a chunk of queries at a time with the decomposed relative-position bias,
and the windowed blocks' projections on the unpadded grid, against the official `Block` on the same weights."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.image_encoder import Block

from sam_hf.configuration_sam import SamVisionConfig
from sam_hf.modeling import image_encoder
from sam_hf.modeling.image_encoder import SamVisionLayer
from tests.helpers import LargestTensor, perturb_

GRID, HIDDEN, HEADS = 16, 64, 2  # 256 tokens; a 5-token window pads the grid to 20x20


def layer_pair(window_size: int, qkv_bias: bool = True) -> tuple[Block, SamVisionLayer]:
    """The official ViT block and sam_hf's layer with the same perturbed weights."""
    official = Block(
        HIDDEN, HEADS, qkv_bias=qkv_bias, use_rel_pos=True, window_size=window_size, input_size=(GRID, GRID)
    )
    perturb_(official, seed=window_size)
    vision = {"image_size": GRID * 16, "hidden_size": HIDDEN, "num_attention_heads": HEADS, "mlp_dim": 4 * HIDDEN}
    config = SamVisionConfig(**vision, qkv_bias=qkv_bias, window_size=max(window_size, 1))
    ours = SamVisionLayer(config, window_size).eval()
    renamed = {
        key.replace("norm1", "layer_norm1").replace("norm2", "layer_norm2"): value
        for key, value in official.state_dict().items()
    }
    ours.load_state_dict(renamed, strict=True)
    return official.eval(), ours


@pytest.mark.parametrize(("window_size", "qkv_bias"), [(0, True), (5, True), (5, False), (8, True)])
def test_layer_matches_the_official_block(window_size, qkv_bias, monkeypatch):
    """Global, padded-window (with and without a qkv bias: the padding's qkv is the bias) and unpadded-window blocks;
    the bias chunk is shrunk so that a global block runs 7 chunks, the last one partial."""
    monkeypatch.setattr(image_encoder, "BIAS_CHUNK_ELEMENTS", HEADS * GRID * GRID * 40)
    official, ours = layer_pair(window_size, qkv_bias)
    tokens = torch.randn(2, GRID, GRID, HIDDEN)
    with torch.inference_mode():
        expected = official(tokens)
        got, _ = ours(tokens)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_global_attention_never_builds_the_full_bias(monkeypatch):
    """Neither the bias nor the logits of all queries and keys (heads x tokens x tokens) are made; the eager path, which
    returns the weights, does make them: the recorder sees the difference."""
    monkeypatch.setattr(image_encoder, "BIAS_CHUNK_ELEMENTS", HEADS * GRID * GRID * 32)
    _, ours = layer_pair(window_size=0)
    tokens = torch.randn(1, GRID, GRID, HIDDEN)
    full_bias = HEADS * (GRID * GRID) ** 2
    fused, eager = LargestTensor(), LargestTensor()
    with torch.inference_mode():
        with fused:
            ours.attn(tokens)
        with eager:
            _, weights = ours.attn(tokens, output_attentions=True)
    assert weights.shape == (HEADS, GRID * GRID, GRID * GRID)
    assert eager.numel >= full_bias
    assert fused.numel < full_bias // 2  # the largest is qkv (tokens x 3 x hidden); a bias chunk is 32 query rows


def test_int8_layer_with_padded_windows_matches_the_official_block():
    """int8 dynamic quantisation of a layer with padded windows: the quantised qkv layer has no bias tensor, so the
    padding's qkv is the projection of a zero token. Against the official block quantised alike, outputs differ only by
    the activation scales of the output projection (the official quantises the padded rows too)."""
    official, ours = layer_pair(window_size=5)
    quantized = [
        torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, torch.qint8) for module in (official, ours)
    ]
    tokens = torch.randn(1, GRID, GRID, HIDDEN)
    with torch.inference_mode():
        expected = quantized[0](tokens)
        got, _ = quantized[1](tokens)
    difference = (got - expected).abs()
    assert difference.mean() < 2e-4 and difference.max() < 0.05, (difference.mean(), difference.max())
