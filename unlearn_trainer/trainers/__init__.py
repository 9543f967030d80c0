from .base import NonFiniteLossError, UnlearnConfig, UnlearnTrainer
from .ga import GAConfig, GATrainer
from .npo import NPOConfig, NPOTrainer

__all__ = [
    "NonFiniteLossError",
    "UnlearnConfig",
    "UnlearnTrainer",
    "GAConfig",
    "GATrainer",
    "NPOConfig",
    "NPOTrainer",
]
