from .base import NonFiniteLossError, UnlearnConfig, UnlearnTrainer
from .ga import GAConfig, GATrainer
from .npo import NPOConfig, NPOTrainer
from .saliency import SaliencyConfig, SaliencyTrainer
from .viker import ViKeRConfig, ViKeRTrainer

__all__ = [
    "NonFiniteLossError",
    "UnlearnConfig",
    "UnlearnTrainer",
    "GAConfig",
    "GATrainer",
    "NPOConfig",
    "NPOTrainer",
    "SaliencyConfig",
    "SaliencyTrainer",
    "ViKeRConfig",
    "ViKeRTrainer",
]
