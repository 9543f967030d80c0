"""unlearn_trainer: machine unlearning for vision-language models as drop-in Hugging Face trainers."""

__version__ = "0.1.0.dev0"

from .data import ForgetRetainCollator, ForgetRetainDataset, VLMUnlearningCollator
from .trainers import (
    GAConfig,
    GATrainer,
    NonFiniteLossError,
    NPOConfig,
    NPOTrainer,
    UnlearnConfig,
    UnlearnTrainer,
)

__all__ = [
    "__version__",
    "ForgetRetainCollator",
    "ForgetRetainDataset",
    "VLMUnlearningCollator",
    "GAConfig",
    "GATrainer",
    "NonFiniteLossError",
    "NPOConfig",
    "NPOTrainer",
    "UnlearnConfig",
    "UnlearnTrainer",
]
