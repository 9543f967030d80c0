"""Vision side of VLM unlearning: per-architecture adapters (tower, projector, visual tokens) and scoped hooks."""

from .adapters import (
    LANGUAGE_MODEL_LORA_TARGETS,
    UnsupportedArchitectureError,
    VisionAdapter,
    get_adapter,
    register_adapter,
    registered_model_types,
    unwrap_model,
)
from .hooks import Captured, StopForward, capture, count_hooks, module_hook, run_until_captured

__all__ = [
    "LANGUAGE_MODEL_LORA_TARGETS",
    "VisionAdapter",
    "UnsupportedArchitectureError",
    "get_adapter",
    "register_adapter",
    "registered_model_types",
    "unwrap_model",
    "Captured",
    "StopForward",
    "capture",
    "count_hooks",
    "module_hook",
    "run_until_captured",
]
