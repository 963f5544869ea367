from .image_encoder import SamVisionEncoderOutput
from .modeling_sam import SamImageSegmentationOutput, SamModel, SamPreTrainedModel

__all__ = ["SamImageSegmentationOutput", "SamModel", "SamPreTrainedModel", "SamVisionEncoderOutput"]
