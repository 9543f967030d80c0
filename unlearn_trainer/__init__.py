"""unlearn_trainer: machine unlearning for vision-language models as drop-in Hugging Face trainers."""

__version__ = "0.1.0.dev0"

from .data import ForgetRetainCollator, ForgetRetainDataset, ReferenceImagePool, VLMUnlearningCollator
from .trainers import (
    GAConfig,
    GATrainer,
    NonFiniteLossError,
    NPOConfig,
    NPOTrainer,
    SaliencyConfig,
    SaliencyTrainer,
    UnlearnConfig,
    UnlearnTrainer,
    ViKeRConfig,
    ViKeRTrainer,
)

__all__ = [
    "__version__",
    "ForgetRetainCollator",
    "ForgetRetainDataset",
    "ReferenceImagePool",
    "VLMUnlearningCollator",
    "GAConfig",
    "GATrainer",
    "NonFiniteLossError",
    "NPOConfig",
    "NPOTrainer",
    "SaliencyConfig",
    "SaliencyTrainer",
    "UnlearnConfig",
    "UnlearnTrainer",
    "ViKeRConfig",
    "ViKeRTrainer",
]
