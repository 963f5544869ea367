"""Training and evaluation library: the shared loop (`fit`), the paper's simulated interactive training, learned
text-token training, training on the prompt of video tracking, and single-prompt mIoU scoring. The recipe that
trained the bundled model lives outside the package, in the repository's `recipes/` folder.

Names load from their submodule on first use, so `python -m sam_hf.training.text_token` runs its module once and
importing one part does not import the others' dependencies.
"""

from importlib import import_module

_SUBMODULE = {
    "evaluate": "evaluation",
    "text_iou": "evaluation",
    "InteractiveTrainer": "interactive",
    "interactive_batch": "interactive",
    "interactive_loss": "interactive",
    "masks_to_input_frame": "interactive",
    "noisy_boxes": "interactive",
    "sample_error_points": "interactive",
    "sample_points": "interactive",
    "add_budget_arguments": "loop",
    "fit": "loop",
    "save_trained": "loop",
    "CocoMaskedImages": "text_token",
    "TextTokenTrainer": "text_token",
    "paper_view": "text_token",
    "text_token_batch": "text_token",
    "train_text_token": "text_token",
    "with_text_encoder": "text_token",
    "TrackingTrainer": "tracking",
    "tracking_batch": "tracking",
    "tracking_loss": "tracking",
}
__all__ = sorted(_SUBMODULE)


def __getattr__(name: str):
    if name not in _SUBMODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_SUBMODULE[name]}", __name__), name)
