"""sam_hf: Segment Anything on the Hugging Face transformers API.

Importing the package registers its classes with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoProcessor`, ...) under the model type `"sam_hf"` and adds the pipeline task `"promptable-mask-generation"` (points,
boxes and text); transformers' own `"mask-generation"` pipeline runs sam_hf models as they are.
"""

from transformers import AutoConfig, AutoModel

from .clip_scoring import ClipScorer
from .configuration_sam import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamTextConfig, SamVisionConfig
from .everything import EverythingSettings, SamAutomaticMaskGenerator
from .loading import BUNDLED_CLIP_PATH, BUNDLED_MODEL_PATH, load_clip, load_sam, open_image
from .modeling import SamImageSegmentationOutput, SamModel, SamPreTrainedModel
from .pipelines import SamMaskGenerationPipeline, SamPromptableMaskGenerationPipeline, register_pipelines
from .predictor import EmbeddedImage, EmbeddingCache, ImageNotSetError, Prediction, ResizeLongestSide, SamPredictor
from .processing import SamHfImageProcessor, SamHfProcessor, SamImageProcessor, SamProcessor, register_auto_classes
from .text_to_mask import TextSegmentation, segment_prompts, segment_text

AutoConfig.register(SamConfig.model_type, SamConfig, exist_ok=True)
AutoModel.register(SamConfig, SamModel, exist_ok=True)
register_auto_classes()
register_pipelines()

__all__ = [
    "BUNDLED_CLIP_PATH",
    "BUNDLED_MODEL_PATH",
    "ClipScorer",
    "EmbeddedImage",
    "EmbeddingCache",
    "EverythingSettings",
    "ImageNotSetError",
    "Prediction",
    "ResizeLongestSide",
    "SamAutomaticMaskGenerator",
    "SamConfig",
    "SamHfImageProcessor",
    "SamHfProcessor",
    "SamImageProcessor",
    "SamImageSegmentationOutput",
    "SamMaskDecoderConfig",
    "SamMaskGenerationPipeline",
    "SamModel",
    "SamPreTrainedModel",
    "SamPredictor",
    "SamProcessor",
    "SamPromptEncoderConfig",
    "SamPromptableMaskGenerationPipeline",
    "SamTextConfig",
    "SamVisionConfig",
    "TextSegmentation",
    "load_clip",
    "load_sam",
    "open_image",
    "segment_prompts",
    "segment_text",
]
