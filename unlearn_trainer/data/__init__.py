from .benchmarks import (
    BenchmarkData,
    load_benchmark,
    load_clear,
    load_concept_folder,
    load_mllmu_bench,
)
from .collator import (
    META_KEYS,
    ForgetRetainCollator,
    ForgetRetainDataset,
    VLMUnlearningCollator,
    build_messages,
    model_inputs,
    row_images,
)
from .concepts import ConceptForgetRetainCollator, ConceptMaskCollator
from .pubg import (
    DEFAULT_INCONTEXT_PROMPT,
    DEFAULT_QUERY,
    PUBGCollator,
    PUBGDataset,
    PUBGGuidanceCache,
    generate_guidance_answers,
)
from .reference_images import ReferenceImagePool, swap_in_reference_images

__all__ = [
    "META_KEYS",
    "ForgetRetainCollator",
    "ForgetRetainDataset",
    "VLMUnlearningCollator",
    "build_messages",
    "model_inputs",
    "row_images",
    "ReferenceImagePool",
    "swap_in_reference_images",
    "ConceptForgetRetainCollator",
    "ConceptMaskCollator",
    "DEFAULT_INCONTEXT_PROMPT",
    "DEFAULT_QUERY",
    "PUBGCollator",
    "PUBGDataset",
    "PUBGGuidanceCache",
    "generate_guidance_answers",
    "BenchmarkData",
    "load_benchmark",
    "load_clear",
    "load_concept_folder",
    "load_mllmu_bench",
]
