"""Image encoders beside the ViT of `image_encoder.py`, selected by `SamVisionConfig.backbone`; each maps pixels to
the same image embedding, so the prompt encoder and the decoder do not know which produced it."""

from .tiny_vit import TinyViTVisionEncoder

__all__ = ["TinyViTVisionEncoder"]
