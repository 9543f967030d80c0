"""ToyWorld: an offline, deterministic miniature of MLLMU-Bench (fictional identities drawn as pictures)."""

from .world import GENERATOR_VERSION, IMAGE_KINDS, KINDS, REFUSALS, TEXT_KINDS, Identity, ToyWorld, to_dataset

__all__ = ["GENERATOR_VERSION", "IMAGE_KINDS", "KINDS", "REFUSALS", "TEXT_KINDS", "Identity", "ToyWorld", "to_dataset"]
