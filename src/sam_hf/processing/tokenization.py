"""Text prompts to CLIP token ids with open_clip's BPE tokenizer (its vocabulary ships inside open_clip, so this works
offline)."""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

CLIP_CONTEXT_LENGTH = 77  # every standard CLIP text tower


@functools.lru_cache(maxsize=4)
def _tokenizer(context_length: int) -> SimpleTokenizer:
    from open_clip.tokenizer import SimpleTokenizer  # imported on first use: open_clip takes seconds to import

    return SimpleTokenizer(context_length=context_length)


def check_text(text: Any, name: str = "text") -> str:
    """`text` if it is a string with at least one non-space character; a `TypeError`/`ValueError` naming `name`."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}.")
    if not text.strip():
        raise ValueError(f"{name} must not be empty or whitespace only, got {text!r}.")
    return text


def tokenize(texts: list[str], context_length: int = CLIP_CONTEXT_LENGTH, name: str = "text") -> torch.Tensor:
    """`texts` -> int64 token ids `(len(texts), context_length)`: start token, BPE tokens, end token, zero padding.

    Texts longer than the context are truncated (keeping the end token) with a warning; texts that are not strings
    or have no word raise, naming `name`.
    """
    tokenizer = _tokenizer(context_length)
    for text in texts:
        check_text(text, name)
        length = len(tokenizer.encode(text)) + 2  # + start and end tokens
        if length > context_length:
            warnings.warn(
                f"{name} {text[:40]!r}... has {length} tokens; truncated to the context length {context_length}.",
                stacklevel=3,
            )
    return tokenizer(texts)
