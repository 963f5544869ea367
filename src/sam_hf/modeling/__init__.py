from .modeling_sam import SamImageSegmentationOutput, SamModel, SamPreTrainedModel

__all__ = ["SamImageSegmentationOutput", "SamModel", "SamPreTrainedModel"]
