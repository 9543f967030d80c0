from .base import NonFiniteLossError, UnlearnConfig, UnlearnTrainer
from .fttp import FTTPConfig, FTTPTrainer
from .ga import GAConfig, GATrainer
from .idk_dpo import IdkDPOConfig, IdkDPOTrainer
from .idk_nll import IdkNLLConfig, IdkNLLTrainer
from .npo import NPOConfig, NPOTrainer
from .pubg import PUBGConfig, PUBGTrainer
from .rmu import RMUConfig, RMUTrainer
from .saliency import SaliencyConfig, SaliencyTrainer
from .scrub import SCRUBConfig, SCRUBTrainer
from .sgpvt import SGPVTConfig, SGPVTTrainer
from .simnpo import SimNPOConfig, SimNPOTrainer
from .undial import UNDIALConfig, UNDIALTrainer
from .viker import ViKeRConfig, ViKeRTrainer

__all__ = [
    "NonFiniteLossError",
    "UnlearnConfig",
    "UnlearnTrainer",
    "FTTPConfig",
    "FTTPTrainer",
    "GAConfig",
    "GATrainer",
    "NPOConfig",
    "NPOTrainer",
    "PUBGConfig",
    "PUBGTrainer",
    "SaliencyConfig",
    "SaliencyTrainer",
    "SGPVTConfig",
    "SGPVTTrainer",
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
    "RMUConfig",
    "RMUTrainer",
    "SCRUBConfig",
    "SCRUBTrainer",
]
