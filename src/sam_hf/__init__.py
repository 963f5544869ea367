"""sam_hf: Segment Anything on the Hugging Face transformers API.

Importing the package registers its classes with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoProcessor`, ...) under the model type `"sam_hf"`, and its pipelines: `"mask-generation"` for sam_hf models and
`"promptable-mask-generation"`.
"""

from transformers import AutoConfig, AutoModel

from .configuration_sam import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig
from .everything import SamAutomaticMaskGenerator
from .loading import BUNDLED_MODEL_PATH, load_sam
from .modeling import SamImageSegmentationOutput, SamModel, SamPreTrainedModel
from .pipelines import SamMaskGenerationPipeline, SamPromptableMaskGenerationPipeline, register_pipelines
from .predictor import EmbeddedImage, Prediction, SamPredictor
from .processing import SamHfImageProcessor, SamHfProcessor, SamImageProcessor, SamProcessor, register_auto_classes

AutoConfig.register(SamConfig.model_type, SamConfig, exist_ok=True)
AutoModel.register(SamConfig, SamModel, exist_ok=True)
register_auto_classes()
register_pipelines()

__all__ = [
    "BUNDLED_MODEL_PATH",
    "EmbeddedImage",
    "Prediction",
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
    "SamVisionConfig",
    "load_sam",
]
