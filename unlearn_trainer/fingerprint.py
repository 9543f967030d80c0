"""Fingerprints of models and images that key the package's caches (PUBG o*, Fisher diagonals) and tie a saliency
mask to the weights it was computed on: a fingerprint changes when any weight changes."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["model_fingerprint", "image_digest"]

_ADAPTER_KEYS = ("lora_", "modules_to_save")
_CHUNK = 1 << 24  # elements hashed per step: a large tensor is never copied to the CPU whole


def _inert_lora_a(model) -> set[int]:
    """LoRA A matrices whose B is exactly zero: they do not change the model's function (a fresh adapter)."""
    inert = set()
    for module in model.modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and isinstance(lora_b, torch.nn.ModuleDict):
            for adapter, a in lora_a.items():
                if adapter in lora_b and all(not p.any() for p in lora_b[adapter].parameters()):
                    inert.update(id(p) for p in a.parameters())
    return inert


def model_fingerprint(model, adapters: bool = True) -> str:
    """SHA-256 over every parameter's name, shape, dtype and full bytes, tensor by tensor (so it changes when any
    weight changes; configs are not part of it). LoRA A matrices whose B is exactly zero are skipped, so a fresh
    adapter on the same base gives the same fingerprint. ``adapters=False``: the base model only (a PEFT model's
    reference, its adapter disabled): adapter and ``modules_to_save`` copies are left out."""
    if not adapters and hasattr(model, "get_base_model"):
        model = model.get_base_model()
    skip = _inert_lora_a(model) if adapters else set()
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not adapters and any(k in name for k in _ADAPTER_KEYS):
                continue
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
            if id(p) in skip or p.numel() == 0 or p.device.type == "meta":
                continue
            flat = p.detach().reshape(-1)
            for chunk in flat.split(_CHUNK):
                h.update(chunk.contiguous().cpu().view(torch.uint8).numpy())
    return h.hexdigest()


def image_digest(image) -> str:
    """Digest of an image's content (PIL: mode, size and pixels; tensor: its bytes); a path is its own digest."""
    if isinstance(image, str):
        return "path:" + image
    h = hashlib.sha256()
    if torch.is_tensor(image):
        h.update(f"{image.dtype}{tuple(image.shape)}".encode())
        h.update(image.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    elif hasattr(image, "tobytes"):  # PIL image, numpy array
        h.update(f"{getattr(image, 'mode', '')}{getattr(image, 'size', '')}{getattr(image, 'shape', '')}".encode())
        h.update(image.tobytes())
    else:
        h.update(repr(image).encode())
    return h.hexdigest()[:24]
