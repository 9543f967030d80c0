from .collator import (
    META_KEYS,
    ForgetRetainCollator,
    ForgetRetainDataset,
    VLMUnlearningCollator,
    build_messages,
    model_inputs,
    row_images,
)

__all__ = [
    "META_KEYS",
    "ForgetRetainCollator",
    "ForgetRetainDataset",
    "VLMUnlearningCollator",
    "build_messages",
    "model_inputs",
    "row_images",
]
