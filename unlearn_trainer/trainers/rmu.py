"""RMU: Representation Misdirection for Unlearning (Li et al. 2024, the WMDP benchmark), Sec. 5.

At the language model's decoder layer l, push the hidden states of forget inputs toward ``c * u`` (a fixed, seeded
random unit vector scaled by the steering coefficient) and keep those of retain inputs on the frozen model's:
L = mean_{D_f} MSE(h_l(x_f), c u) + alpha * mean_{D_r} MSE(h_l(x_r), h_l^ref(x_r)). Only layers l-2..l train
(their ``updated_modules``: the MLPs). The forward passes stop at layer l (no logits are computed).

Tokens: the forget term covers the positions that predict an answer token (the last prompt token and the answer
but its last token: where the answer is produced; the question, shared with retain rows, is left alone); the retain
term covers every attended token of the retain input (image, prompt and answer), as the paper keeps all of a retain
text. Under LoRA the reference is the adapter-disabled model; put LoRA on the updated layers only
(:func:`rmu_lora_targets`); without LoRA every parameter outside them is frozen. The frozen model's retain states
depend only on the row: they are computed once per retain row and cached (``cache_reference``, CPU, layer dtype).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .. import losses
from ..citation import Citation
from ..data.collator import model_inputs
from ..vision.adapters import get_adapter, is_checkpointing, language_model_layer_targets, unwrap_model
from ..vision.hooks import StopForward, capture
from .base import UnlearnConfig, UnlearnTrainer, paper_field

__all__ = ["RMUConfig", "RMUTrainer", "rmu_layers", "rmu_lora_targets"]

logger = logging.getLogger(__name__)

#: Zephyr-7B (32 decoder layers): steer at layer 7 (the authors' release: c 6.5, alpha 1200, layers 5-7, lr 5e-5,
#: batch 4, 150 batches); on other models the layer is the same fraction of the depth, 7/32.
_PAPER_LAYER, _PAPER_DEPTH = 7, 32


@dataclass
class RMUConfig(UnlearnConfig):
    """RMU. Paper settings (WMDP, Zephyr-7B): ``steering_coeff`` c = 6.5, ``alpha`` = 1200, layer 7 of 32 (here
    ``layer_fraction`` 7/32 of the model's decoder layers unless ``layer`` is given; the resolved layer is written
    to ``layer``), 3 updated layers (l-2..l), their MLPs, lr 5e-5, batch 4, 150 steps, full-parameter training.
    The authors' code updates only ``mlp.down_proj``; set ``updated_modules="mlp.down_proj"`` for that."""

    paper_settings: ClassVar[dict[str, Any]] = {
        "steering_coeff": 6.5, "alpha": 1200.0, "layer_fraction": _PAPER_LAYER / _PAPER_DEPTH,
        "num_updated_layers": 3, "updated_modules": "mlp", "learning_rate": 5e-5, "per_device_train_batch_size": 4,
        "max_steps": 150, "adapter": "full",
    }
    paper_retain_term: ClassVar[str] = "the retain activation MSE"

    steering_coeff: float = paper_field(paper_settings, "steering_coeff",
                                        "c: norm of the random target of forget activations (paper 6.5, Zephyr-7B).")
    alpha: float = paper_field(paper_settings, "alpha", "Weight of the retain activation MSE (paper 1200).")
    layer_fraction: float = paper_field(
        paper_settings, "layer_fraction",
        "Steered layer as a fraction of the decoder layers when `layer` is unset (paper: 7 of 32 = 0.21875).")
    layer: int | None = field(
        default=None, metadata={"help": "Decoder layer l whose output is steered (0-based); unset: "
                                        "round(layer_fraction * number of layers). Holds the resolved value."})
    num_updated_layers: int = paper_field(paper_settings, "num_updated_layers",
                                          "Layers l-n+1..l that train (paper 3: l-2, l-1, l).")
    updated_modules: str = paper_field(
        paper_settings, "updated_modules",
        "Submodule of each updated layer that trains: 'mlp' (paper), 'mlp.down_proj' (the authors' code), '' (all).")
    control_seed: int = field(default=0, metadata={"help": "Seed of the random direction u."})
    learning_rate: float = paper_field(paper_settings, "learning_rate", "AdamW learning rate (paper 5e-5).")
    per_device_train_batch_size: int = paper_field(paper_settings, "per_device_train_batch_size",
                                                   "Batch size per device (paper 4).")
    max_steps: int = paper_field(paper_settings, "max_steps", "Training steps (paper 150 batches).")

    def __post_init__(self):
        super().__post_init__()
        if self.steering_coeff <= 0:
            raise ValueError(f"steering_coeff must be > 0, got {self.steering_coeff}.")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}.")
        if not 0 <= self.layer_fraction <= 1:
            raise ValueError(f"layer_fraction must be in [0, 1], got {self.layer_fraction}.")
        if self.layer is not None and self.layer < 0:
            raise ValueError(f"layer must be >= 0 (a 0-based decoder layer index), got {self.layer}.")
        if self.num_updated_layers < 1:
            raise ValueError(f"num_updated_layers must be >= 1, got {self.num_updated_layers}.")


def rmu_layers(model, args: RMUConfig) -> tuple[int, list[int]]:
    """``(l, updated layer indices)`` for ``model``: ``args.layer``, or ``round(layer_fraction * depth)``."""
    depth = len(get_adapter(model).decoder_layers(model))
    layer = args.layer if args.layer is not None else min(depth - 1, round(args.layer_fraction * depth))
    if layer >= depth:
        raise ValueError(f"layer={layer} but the language model has {depth} decoder layers (0..{depth - 1}): "
                         f"pick a layer below {depth} or leave it unset (layer_fraction).")
    return layer, list(range(max(0, layer - args.num_updated_layers + 1), layer + 1))


def rmu_lora_targets(model, args: RMUConfig) -> str:
    """``LoraConfig(target_modules=...)`` for RMU: the ``updated_modules`` projections of the updated layers only."""
    return language_model_layer_targets(model, rmu_layers(model, args)[1], args.updated_modules)


class RMUTrainer(UnlearnTrainer):
    config_class = RMUConfig
    method_name = "rmu"
    citation = Citation(
        "RMU",
        "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning",
        "Nathaniel Li, Alexander Pan, Anjali Gopal, Summer Yue, Daniel Berrios, et al.",
        "ICML 2024, arXiv:2403.03218",
        "https://arxiv.org/abs/2403.03218",
        "steer the hidden states of forget inputs at one layer toward a scaled random vector, keep those of retain "
        "inputs on the original model's, training only the layers just below (representation misdirection).",
    )
    needs_reference = True
    retain_in_objective = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        self.rmu_layer, self.updated_layers = rmu_layers(model, self.args)
        self.args.layer = self.rmu_layer
        self._freeze_outside_updated_layers(model)
        hidden = get_adapter(model).language_model(model).config.hidden_size
        self.control_vector = losses.rmu_control_vector(hidden, self.args.steering_coeff, self.args.control_seed)

    def _freeze_outside_updated_layers(self, model) -> None:
        """Train only the parameters under ``layers[i].<updated_modules>`` for the updated layers (LoRA weights
        there under PEFT): everything else stops requiring gradients."""
        layers = get_adapter(model).decoder_layers(model)
        keep = set()
        for i in self.updated_layers:
            module = layers[i].get_submodule(self.args.updated_modules) if self.args.updated_modules else layers[i]
            keep.update(id(p) for p in module.parameters() if p.requires_grad)
        frozen = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in keep]
        for p in model.parameters():
            if id(p) not in keep:
                p.requires_grad_(False)
        if not keep:
            raise ValueError(
                f"RMU trains layers {self.updated_layers} ({self.args.updated_modules or 'whole layers'}), but no "
                f"parameter there is trainable: under PEFT put the adapter on them (LoraConfig(target_modules="
                f"rmu_lora_targets(model, args)))."
            )
        if frozen:
            logger.info("RMU: froze %d trainable parameter tensor(s) outside layers %s.", len(frozen),
                        self.updated_layers)

    # -- the objective -------------------------------------------------------------------------------------
    def unlearning_passes(self, model, inputs):
        forget, retain = inputs["forget"], inputs["retain"]
        return [lambda: self._forget_pass(model, forget), lambda: self._retain_pass_rmu(model, retain)]

    def _forget_pass(self, model, forget):
        with self.forget_gradient_context(model):
            hidden = self.layer_activations(model, forget)
        mask = losses.answer_positions(forget["labels"])
        loss = losses.rmu_activation_loss(hidden, self.control_vector.to(hidden.device), mask)
        norm = (hidden.detach().float().norm(dim=-1) * mask).sum() / mask.sum()
        return loss, {"rmu_forget_mse": loss, "forget_activation_norm": norm}

    def _retain_pass_rmu(self, model, retain):
        mask = retain["attention_mask"].bool()
        frozen = self.frozen_retain_activations(model, retain)
        hidden = self.layer_activations(model, retain)
        mse = losses.rmu_activation_loss(hidden, frozen.to(hidden.device), mask)
        return self.args.alpha * mse, {"rmu_retain_mse": mse}

    def frozen_retain_activations(self, model, retain: dict) -> torch.Tensor:
        """The frozen model's layer-l states ``[B, T, D]`` on a retain batch (0 on padding). They depend only on the
        reference and the row, so each retain row's states at its attended tokens are computed once and cached on
        the CPU in the layer's dtype (``[n_tokens, D]``: exact, and no accelerator memory grows with the retain
        set); ``cache_reference=False`` recomputes them every step."""
        if not self.args.cache_reference or retain.get("sample_index") is None:  # a frozen forward every call
            return torch.stack(self.cached_reference("rmu_frozen_retain", model, retain,
                                                     lambda ref, batch: list(self.layer_activations(ref, batch))))
        mask = retain["attention_mask"].bool()
        rows = self.cached_reference("rmu_frozen_retain", model, retain, self._frozen_rows)
        frozen = torch.zeros(*mask.shape, rows[0].shape[-1], dtype=rows[0].dtype, device=mask.device)
        for b, states in enumerate(rows):
            if states.shape[0] != int(mask[b].sum()):
                raise RuntimeError(
                    f"The cached frozen activations of retain sample {int(retain['sample_index'][b])} cover "
                    f"{states.shape[0]} tokens, the batch has {int(mask[b].sum())}: the collator's output changed "
                    f"between steps (set cache_reference=False)."
                )
            frozen[b, mask[b]] = states.to(mask.device, non_blocking=True)
        return frozen

    def _frozen_rows(self, ref, retain: dict) -> list[torch.Tensor]:
        hidden = self.layer_activations(ref, retain)
        mask = retain["attention_mask"].bool()
        return [hidden[b][mask[b]].cpu() for b in range(hidden.shape[0])]

    def reference_cache_nbytes(self) -> int:
        """Bytes held by the cached frozen retain activations (CPU)."""
        return sum(t.numel() * t.element_size() for t in self._ref_cache["rmu_frozen_retain"].values())

    def layer_activations(self, model, batch: dict) -> torch.Tensor:
        """Output ``[B, T, D]`` of decoder layer l on ``batch``; the forward stops there (except under gradient
        checkpointing, whose recomputation would meet the stop again)."""
        base = unwrap_model(model)
        stop = not is_checkpointing(base)
        with capture(get_adapter(base).decoder_layers(base)[self.rmu_layer], "output", stop=stop) as box:
            try:
                model(**model_inputs(batch), use_cache=False)
            except StopForward:
                pass
        out = box.value
        if out is None:
            raise RuntimeError(f"The forward pass never reached decoder layer {self.rmu_layer}.")
        return out[0] if isinstance(out, (tuple, list)) else out
