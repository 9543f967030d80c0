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
    PUBGReferenceCache,
    generate_reference_answers,
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
    "ConceptForgetRetainCollator",
    "ConceptMaskCollator",
    "DEFAULT_INCONTEXT_PROMPT",
    "DEFAULT_QUERY",
    "PUBGCollator",
    "PUBGDataset",
    "PUBGReferenceCache",
    "generate_reference_answers",
    "BenchmarkData",
    "load_benchmark",
    "load_clear",
    "load_concept_folder",
    "load_mllmu_bench",
]
