"""unlearn_trainer: machine unlearning for vision-language models as drop-in Hugging Face trainers.

The public names are imported lazily (PEP 562), so ``import unlearn_trainer`` and ``unlearn_trainer.testing`` or
``unlearn_trainer.losses`` do not load transformers' ``Trainer``, peft, bitsandbytes or DeepSpeed; a name's
subpackage is imported on first use (``from unlearn_trainer import NPOTrainer``).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from . import _quiet  # noqa: F401  (first: drops two upstream start-up messages, see _quiet.py)
from ._version import __version__

# Public name -> the subpackage that defines it (imported on first access).
_LAZY_IMPORTS = {
    "ConceptMaskCollator": "data",
    "ForgetRetainCollator": "data",
    "ForgetRetainDataset": "data",
    "ReferenceImagePool": "data",
    "VLMUnlearningCollator": "data",
    "FTTPConfig": "trainers",
    "FTTPTrainer": "trainers",
    "GAConfig": "trainers",
    "GATrainer": "trainers",
    "NonFiniteLossError": "trainers",
    "NPOConfig": "trainers",
    "NPOTrainer": "trainers",
    "PUBGConfig": "trainers",
    "PUBGTrainer": "trainers",
    "RMUConfig": "trainers",
    "RMUTrainer": "trainers",
    "SaliencyConfig": "trainers",
    "SaliencyTrainer": "trainers",
    "SCRUBConfig": "trainers",
    "SCRUBTrainer": "trainers",
    "SGPVTConfig": "trainers",
    "SGPVTTrainer": "trainers",
    "UnlearnConfig": "trainers",
    "UnlearnTrainer": "trainers",
    "ViKeRConfig": "trainers",
    "ViKeRTrainer": "trainers",
    "SimNPOConfig": "trainers",
    "SimNPOTrainer": "trainers",
    "UNDIALConfig": "trainers",
    "UNDIALTrainer": "trainers",
    "IdkNLLConfig": "trainers",
    "IdkNLLTrainer": "trainers",
    "IdkDPOConfig": "trainers",
    "IdkDPOTrainer": "trainers",
    "language_model_lora_targets": "vision.adapters",
}

if TYPE_CHECKING:  # the same names for type checkers and IDEs (and the import graph in tests/test_import_graph.py)
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
        IdkDPOConfig,
        IdkDPOTrainer,
        IdkNLLConfig,
        IdkNLLTrainer,
        NonFiniteLossError,
        NPOConfig,
        NPOTrainer,
        PUBGConfig,
        PUBGTrainer,
        RMUConfig,
        RMUTrainer,
        SaliencyConfig,
        SaliencyTrainer,
        SCRUBConfig,
        SCRUBTrainer,
        SGPVTConfig,
        SGPVTTrainer,
        SimNPOConfig,
        SimNPOTrainer,
        UNDIALConfig,
        UNDIALTrainer,
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
    "RMUConfig",
    "RMUTrainer",
    "SaliencyConfig",
    "SaliencyTrainer",
    "SCRUBConfig",
    "SCRUBTrainer",
    "SGPVTConfig",
    "SGPVTTrainer",
    "UnlearnConfig",
    "UnlearnTrainer",
    "ViKeRConfig",
    "ViKeRTrainer",
    "SimNPOConfig",
    "SimNPOTrainer",
    "UNDIALConfig",
    "UNDIALTrainer",
    "IdkNLLConfig",
    "IdkNLLTrainer",
    "IdkDPOConfig",
    "IdkDPOTrainer",
    "language_model_lora_targets",
]

# Public submodules, also imported on first access: ``import unlearn_trainer; unlearn_trainer.trainers.base`` works
# as it did when this file imported them eagerly.
_SUBMODULES = frozenset(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str):
    if name in _LAZY_IMPORTS:
        value = getattr(importlib.import_module(f".{_LAZY_IMPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
