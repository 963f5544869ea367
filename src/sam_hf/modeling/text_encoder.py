"""The text encoder: a CLIP text tower built by open_clip, giving L2-normalised text embeddings. The prompt encoder
turns them (or CLIP image embeddings, in training) into a sparse prompt token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration_sam import SamTextConfig


class SamTextEncoder(nn.Module):
    """open_clip's text tower for `config.architecture`: token ids `(n, context_length)` -> `(n, embed_dim)` unit
    vectors. Its parameters are frozen when `config.freeze_text_encoder`."""

    def __init__(self, config: SamTextConfig) -> None:
        super().__init__()
        # open_clip is imported here, not with the module: only checkpoints with a text encoder need it (seconds).
        # `_build_text_tower` is private, but it is the one builder of a text tower alone: both of open_clip's CLIP
        # classes call it, so the modules and state-dict keys are those of open_clip's checkpoints. The public
        # alternative, `open_clip.create_model`, builds the image tower too.
        from open_clip.model import CLIPTextCfg, _build_text_tower

        architecture = config.architecture
        self.clip = _build_text_tower(
            architecture["embed_dim"],
            CLIPTextCfg(**architecture["text_cfg"]),
            quick_gelu=architecture.get("quick_gelu", False),
        )
        self.clip.requires_grad_(not config.freeze_text_encoder)

    def load_open_clip_weights(self, config: SamTextConfig) -> None:
        """Copies the text tower of the open_clip checkpoint `config.pretrained` (a pretrained tag of a named
        architecture, or a local file) into this encoder; files are read without unpickling objects."""
        import open_clip

        if config.clip_architecture is None:
            clip = open_clip.create_model(config.clip_model_name, pretrained=config.pretrained)
        else:
            clip = open_clip.model.CLIP(**config.clip_architecture)
            open_clip.load_checkpoint(clip, config.pretrained, weights_only=True)
        own = self.clip.state_dict()
        self.clip.load_state_dict({key: value for key, value in clip.state_dict().items() if key in own})

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids `(n, context_length)` -> `(n, embed_dim)` L2-normalised text embeddings."""
        return F.normalize(self.clip(input_ids), dim=-1)
