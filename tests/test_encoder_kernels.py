"""The image encoder's layers by the CPU kernels (attention with the decomposed relative-position bias, GELU MLP) and
by ATen calls (SDPA a chunk of queries at a time, the MLP a block of tokens at a time), and the windowed blocks'
projections on the unpadded grid, against the official `Block` on the same weights; where the kernels run and where
they fall back; a layer's activations run in chunks."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from segment_anything.modeling.image_encoder import Block

from sam_hf.configuration_sam import SamVisionConfig
from sam_hf.modeling import cpu_kernels, image_encoder
from sam_hf.modeling.image_encoder import SamVisionLayer
from tests.helpers import LargestTensor, perturb_

GRID, HIDDEN, HEADS = 16, 64, 2  # 256 tokens; a 5-token window pads the grid to 20x20
ACTIVATION_BUDGET = 2 * 5 * GRID * 4 * HIDDEN  # the MLP activations of one row of 5-token windows in a batch of 2


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


@pytest.mark.parametrize("kernels", ["block", "attention and mlp", "aten"])
@pytest.mark.parametrize(("window_size", "qkv_bias"), [(0, True), (5, True), (5, False), (8, True)])
def test_layer_matches_the_official_block(window_size, qkv_bias, kernels, monkeypatch):
    """Global, padded-window (with and without a qkv bias: the padding's qkv is the bias) and unpadded-window blocks,
    by the block kernels, by the attention and MLP kernels (the block kernel turned off, as for a layer with adapted
    qkv weights), and by ATen calls. Tasks are shrunk to 48 query rows (3 grid rows: a global block's last band of
    rows is partial) and 100 tokens; the SDPA chunks so that a global block runs 7 chunks, the last one partial. The
    activation chunks are shrunk too: the MLP runs 4 blocks of tokens, a 5-token-window layer 4 bands of one window
    row (the last one padded), an 8-token-window layer 2."""
    monkeypatch.setenv("SAM_HF_CPU_KERNELS", "0" if kernels == "aten" else "1")
    if kernels == "attention and mlp":
        monkeypatch.setattr(image_encoder, "vision_block", lambda *args: None)
    monkeypatch.setattr(cpu_kernels, "ROWS_PER_TASK", 48)
    monkeypatch.setattr(cpu_kernels, "TOKENS_PER_TASK", 100)
    monkeypatch.setattr(image_encoder, "BIAS_CHUNK_ELEMENTS", HEADS * GRID * GRID * 40)
    monkeypatch.setattr(image_encoder, "ACTIVATION_CHUNK_ELEMENTS", ACTIVATION_BUDGET)
    official, ours = layer_pair(window_size, qkv_bias)
    tokens = torch.randn(2, GRID, GRID, HIDDEN)
    with torch.inference_mode():
        expected = official(tokens)
        got, _ = ours(tokens)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_global_attention_never_builds_the_full_bias(monkeypatch):
    """SDPA chunks: neither the bias nor the logits of all queries and keys (heads x tokens x tokens) are made; the
    eager path, which returns the weights, does make them: the recorder sees the difference. (The fused kernel makes
    one task's logits at a time, inside C++ where the recorder cannot look.)"""
    monkeypatch.setenv("SAM_HF_CPU_KERNELS", "0")
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


@pytest.mark.parametrize("window_size", [0, 5])
def test_a_layers_largest_activation_is_bounded(window_size, monkeypatch):
    """Whole, the largest activation is at least the MLP's hidden one (tokens x mlp_dim); in chunks, a windowed layer
    stays within the budget and a global one within its qkv (tokens x 3 x hidden, which attention needs whole)."""
    monkeypatch.setenv("SAM_HF_CPU_KERNELS", "0")  # the recorder sees the ATen calls of the SDPA path
    monkeypatch.setattr(image_encoder, "BIAS_CHUNK_ELEMENTS", HEADS * GRID * GRID * 20)
    _, ours = layer_pair(window_size)
    tokens = torch.randn(2, GRID, GRID, HIDDEN)
    whole, chunked = LargestTensor(), LargestTensor()
    with torch.inference_mode():
        monkeypatch.setattr(image_encoder, "ACTIVATION_CHUNK_ELEMENTS", 1 << 40)
        with whole:
            expected, _ = ours(tokens)
        monkeypatch.setattr(image_encoder, "ACTIVATION_CHUNK_ELEMENTS", ACTIVATION_BUDGET)
        with chunked:
            got, _ = ours(tokens)
    assert whole.numel >= tokens.numel() * 4  # mlp_dim = 4 x hidden (the padded qkv of 5-token windows is larger)
    assert chunked.numel <= (ACTIVATION_BUDGET if window_size else tokens.numel() * 3)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_int8_layer_with_padded_windows_matches_the_official_block():
    """int8 dynamic quantisation of a layer with padded windows: the quantised qkv layer has no bias tensor, so the
    padding's qkv is the projection of a zero token. Against the official block quantised alike, outputs differ only by
    the activation scales of the output projection (the official quantises the padded rows too)."""
    torch.manual_seed(0)  # activation scales follow the input: a fixed one keeps the bounds meaningful
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


def test_the_kernels_build_and_run_inference_only(monkeypatch):
    """The kernels build here (a C++ compiler with OpenMP is on every machine this project tests on) and a layer runs
    in the block kernel for inference; training (gradients), another dtype and `SAM_HF_CPU_KERNELS=0` take the ATen
    path. A layer the block kernel cannot run uses the attention and MLP kernels where they apply: an adapted (here
    int8) qkv layer both, a quantised MLP or a tanh GELU attention alone."""
    assert cpu_kernels.load_kernel() is not None, cpu_kernels.unavailable_reason()
    tokens = torch.randn(1, GRID, GRID, HIDDEN)
    used: dict[str, bool] = {}

    def recording(name: str) -> Callable[..., torch.Tensor | None]:
        kernel = getattr(cpu_kernels, name)

        def run(*args: object) -> torch.Tensor | None:
            output = kernel(*args)
            used[name] = output is not None
            return output

        return run

    for name in ("vision_block", "relative_position_attention", "gelu_mlp"):
        monkeypatch.setattr(image_encoder, name, recording(name))

    def kernels_used(layer: SamVisionLayer, inputs: torch.Tensor = tokens) -> list[str]:
        used.clear()
        layer(inputs)
        return sorted(name for name, ran in used.items() if ran)

    def layer_with(change: Callable[[SamVisionLayer], object]) -> SamVisionLayer:
        _, layer = layer_pair(window_size=0)
        change(layer)
        return layer

    def int8(module: torch.nn.Module) -> torch.nn.Module:
        return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(module), {torch.nn.Linear}, torch.qint8)[0]

    _, plain = layer_pair(window_size=0)
    int8_qkv = layer_with(lambda layer: setattr(layer.attn, "qkv", int8(layer.attn.qkv)))
    int8_mlp = layer_with(lambda layer: setattr(layer, "mlp", int8(layer.mlp)))
    tanh_gelu = layer_with(lambda layer: setattr(layer.mlp, "act", torch.nn.GELU(approximate="tanh")))
    with torch.inference_mode():
        assert kernels_used(plain) == ["vision_block"]
        assert kernels_used(int8_qkv) == ["gelu_mlp", "relative_position_attention"]
        assert kernels_used(int8_mlp) == ["relative_position_attention"]
        assert kernels_used(tanh_gelu) == ["relative_position_attention"]
        assert kernels_used(layer_pair(window_size=0)[1].double(), tokens.double()) == []
    with torch.no_grad():
        assert kernels_used(plain) == ["vision_block"]
    assert kernels_used(plain) == []  # gradients wanted
    monkeypatch.setenv("SAM_HF_CPU_KERNELS", "0")
    with torch.inference_mode():
        assert kernels_used(plain) == []


def test_an_unbuildable_kernel_warns_once_and_falls_back(monkeypatch):
    """No compiler: one warning that names the reason, then the ATen path, with the same output."""

    def no_compiler(**kwargs: object) -> None:
        raise RuntimeError("Error building extension: c++: command not found")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    monkeypatch.setattr(cpu_kernels, "_kernel", None)
    monkeypatch.setattr(cpu_kernels, "_unavailable", None)
    official, ours = layer_pair(window_size=0)
    tokens = torch.randn(1, GRID, GRID, HIDDEN)
    with pytest.warns(UserWarning, match="c\\+\\+: command not found"), torch.inference_mode():
        got, _ = ours(tokens)
    with warnings.catch_warnings(record=True) as later, torch.inference_mode():
        warnings.simplefilter("always")
        ours(tokens)
        expected = official(tokens)
    assert not [warning for warning in later if "CPU kernels" in str(warning.message)]
    assert "command not found" in cpu_kernels.unavailable_reason()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_build_folder_is_named_by_the_source_and_the_torch_install(monkeypatch, tmp_path):
    """Two checkouts or virtual environments sharing `~/.cache/torch_extensions` keep separate builds: the name
    changes with the kernel source (content or path) and with the torch install, and not otherwise."""
    name = cpu_kernels.extension_name()
    assert name == cpu_kernels.extension_name() and name.startswith("sam_hf_cpu_kernels_")
    copied, edited = tmp_path / "copied.cpp", tmp_path / "edited.cpp"
    copied.write_bytes(cpu_kernels.SOURCE.read_bytes())
    edited.write_bytes(cpu_kernels.SOURCE.read_bytes() + b"\n// edited\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE", copied)
    in_another_checkout = cpu_kernels.extension_name()
    monkeypatch.setattr(cpu_kernels, "SOURCE", edited)
    assert len({name, in_another_checkout, cpu_kernels.extension_name()}) == 3
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "other_venv" / "torch" / "__init__.py"))
    assert cpu_kernels.extension_name() != name
