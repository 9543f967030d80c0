"""unlearn_trainer: machine unlearning for vision-language models as drop-in Hugging Face trainers."""

from . import _quiet  # noqa: F401  (first: drops two upstream start-up messages, see _quiet.py)
from ._version import __version__
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
from .vision.adapters import language_model_lora_targets

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
    "language_model_lora_targets",
]
