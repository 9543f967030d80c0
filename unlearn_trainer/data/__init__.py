from .collator import (
    META_KEYS,
    ForgetRetainCollator,
    ForgetRetainDataset,
    VLMUnlearningCollator,
    build_messages,
    model_inputs,
    row_images,
)
from .reference_images import ReferenceImagePool, reference_rows

__all__ = [
    "META_KEYS",
    "ForgetRetainCollator",
    "ForgetRetainDataset",
    "VLMUnlearningCollator",
    "build_messages",
    "model_inputs",
    "row_images",
    "ReferenceImagePool",
    "reference_rows",
]
