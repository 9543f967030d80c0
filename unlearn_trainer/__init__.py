"""unlearn_trainer: machine unlearning for vision-language models as drop-in Hugging Face trainers."""

__version__ = "0.1.0.dev0"

from .data import (
    ConceptMaskCollator,
    ForgetRetainCollator,
    ForgetRetainDataset,
    ReferenceImagePool,
    VLMUnlearningCollator,
)
from .trainers import (
    FTTPConfig,
    FTTPTrainer,
    GAConfig,
    GATrainer,
    NonFiniteLossError,
    NPOConfig,
    NPOTrainer,
    PUBGConfig,
    PUBGTrainer,
    SaliencyConfig,
    SaliencyTrainer,
    SGPVTConfig,
    SGPVTTrainer,
    UnlearnConfig,
    UnlearnTrainer,
    ViKeRConfig,
    ViKeRTrainer,
)

__all__ = [
    "__version__",
    "ConceptMaskCollator",
    "ForgetRetainCollator",
    "ForgetRetainDataset",
    "ReferenceImagePool",
    "VLMUnlearningCollator",
    "FTTPConfig",
    "FTTPTrainer",
    "GAConfig",
    "GATrainer",
    "NonFiniteLossError",
    "NPOConfig",
    "NPOTrainer",
    "PUBGConfig",
    "PUBGTrainer",
    "SaliencyConfig",
    "SaliencyTrainer",
    "SGPVTConfig",
    "SGPVTTrainer",
    "UnlearnConfig",
    "UnlearnTrainer",
    "ViKeRConfig",
    "ViKeRTrainer",
]
