"""Small building blocks shared by the encoder and the decoder."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN


class SamLayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a `(batch, channels, height, width)` tensor (the official `LayerNorm2d`)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, height, width)` -> the same shape, normalised over `channels`."""
        return super().forward(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SamMLPBlock(nn.Module):
    """Two-layer MLP of a transformer block: `lin2(act(lin1(x)))`."""

    def __init__(self, hidden_size: int, mlp_dim: int, hidden_act: str) -> None:
        super().__init__()
        self.lin1 = nn.Linear(hidden_size, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, hidden_size)
        self.act = ACT2FN[hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(..., hidden_size)` -> `(..., hidden_size)`."""
        return self.lin2(self.act(self.lin1(hidden_states)))


class SamFeedForward(nn.Module):
    """ReLU MLP of `num_layers` linear layers (hypernetwork and IoU heads): `proj_in`, `layers`, `proj_out`."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        self.proj_in = nn.Linear(input_dim, hidden_dim)
        self.layers = nn.ModuleList([nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers - 2)])
        self.proj_out = nn.Linear(hidden_dim, output_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(..., input_dim)` -> `(..., output_dim)`."""
        hidden_states = torch.relu(self.proj_in(hidden_states))
        for layer in self.layers:
            hidden_states = torch.relu(layer(hidden_states))
        return self.proj_out(hidden_states)


def relative_position_table(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Embedding of every (query, key) offset along one axis: `(size, size, head_dim)` from a `(2 * size - 1,
    head_dim)` table, row `q - k + size - 1` for query `q` and key `k`."""
    positions = torch.arange(size, device=rel_pos.device)
    return rel_pos[positions[:, None] - positions[None, :] + (size - 1)]
