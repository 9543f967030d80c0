"""Vision side of VLM unlearning: per-architecture adapters (tower, projector, visual tokens) and scoped hooks."""

from .adapters import (
    UnsupportedArchitectureError,
    VisionAdapter,
    get_adapter,
    language_model_lora_targets,
    register_adapter,
    registered_model_types,
    unwrap_model,
)
from .hooks import Captured, StopForward, capture, count_hooks, module_hook, run_until_captured

__all__ = [
    "VisionAdapter",
    "UnsupportedArchitectureError",
    "get_adapter",
    "language_model_lora_targets",
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
