"""sam_hf: Segment Anything on the Hugging Face transformers API.

Importing the package registers its classes with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoProcessor`, ...) under the model type `"sam_hf"`.
"""

from transformers import AutoConfig, AutoModel

from .configuration_sam import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig
from .modeling import SamImageSegmentationOutput, SamModel, SamPreTrainedModel
from .processing import SamHfImageProcessor, SamHfProcessor, SamImageProcessor, SamProcessor, register_auto_classes

AutoConfig.register(SamConfig.model_type, SamConfig, exist_ok=True)
AutoModel.register(SamConfig, SamModel, exist_ok=True)
register_auto_classes()

__all__ = [
    "SamConfig",
    "SamHfImageProcessor",
    "SamHfProcessor",
    "SamImageProcessor",
    "SamImageSegmentationOutput",
    "SamMaskDecoderConfig",
    "SamModel",
    "SamPreTrainedModel",
    "SamProcessor",
    "SamPromptEncoderConfig",
    "SamVisionConfig",
]
