"""sam_hf: Segment Anything on the Hugging Face transformers API.

Importing the package registers its classes with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoProcessor`, ...) under the model type `"sam_hf"`.
"""

from transformers import AutoConfig, AutoModel

from .configuration_sam import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig
from .modeling import SamImageSegmentationOutput, SamModel, SamPreTrainedModel

AutoConfig.register(SamConfig.model_type, SamConfig, exist_ok=True)
AutoModel.register(SamConfig, SamModel, exist_ok=True)

__all__ = [
    "SamConfig",
    "SamImageSegmentationOutput",
    "SamMaskDecoderConfig",
    "SamModel",
    "SamPreTrainedModel",
    "SamPromptEncoderConfig",
    "SamVisionConfig",
]
