"""Weight-saliency masks (MMUnlearner, Huo et al. 2025, Sec. 3.3): which parameter entries the forget loss may move.

On the initial model theta_0 the diagonal Fisher saliency of a set D is ``S(D) = (grad_theta L_D(theta_0))^2``
(Eq. 4), for the target set T (forget VQA) and the preserved set P (text-only QA about the forget concepts, retain
VQA, text-only QA about retain concepts; Eq. 6). The mask is ``m = 1[S(T) / S(P) >= beta]`` (Eq. 7) and the
unlearning loss is ``-m * L_f + L_r`` (Eq. 3): the mask gates the forget-loss gradient only.

Any trainer uses a saved mask through ``UnlearnConfig.saliency_mask`` (a path): the forget forward then runs with
"gated" parameters whose value is unchanged but whose gradient is multiplied by the mask before it reaches the
parameter (so before clipping and before it meets the retain gradient, which is never masked).

Conventions, all documented on the functions below:

- ``fisher_mode``: ``"dataset"`` (default, Eq. 4 literally: the square of the gradient of the set's mean loss),
  ``"batch"`` (mean over mini-batches of the squared batch gradient, what the authors' released code does with
  batches of 2) or ``"sample"`` (the empirical diagonal Fisher: mean of squared per-sample gradients).
- Division guard: ``ratio = S(T) / max(S(P), eps)`` and ``0 / 0 = 0``: an entry without forget saliency is never
  selected; an entry with forget saliency and no preserved saliency is (unless ``S(T) < beta * eps``).
- LoRA: the adapter matrices have no useful saliency at initialisation (B = 0 gives A a zero gradient). The Fisher
  is computed on the base weight W the adapter wraps (whose gradient equals the gradient with respect to the
  adapter's update dW = s * B A) and mapped by channel: the rows of B follow the output channels of W whose summed
  saliency ratio ``sum_in S_T / sum_in S_P`` passes beta, the columns of A the input channels likewise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import losses
from .data.collator import model_inputs, row_images, row_name, to_device
from .fingerprint import image_digest, model_fingerprint

__all__ = [
    "FISHER_MODES",
    "SaliencyMask",
    "compute_saliency_mask",
    "fisher_diagonal",
    "saliency_scores",
    "saliency_targets",
    "saliency_ratio",
    "masks_from_scores",
    "model_fingerprint",
    "data_fingerprint",
    "parameter_group",
    "set_trainable",
    "forget_gradient_gate",
    "check_checkpointing",
]

logger = logging.getLogger(__name__)

FISHER_MODES = ("dataset", "batch", "sample")
_FORMAT = "unlearn_trainer.saliency/v1"
_LORA_KEYS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "modules_to_save")


# -- which tensors the saliency is computed on -----------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    """How the mask of one trainable parameter is derived: from the Fisher of ``source`` element-wise ("param"),
    or from the channel sums of a LoRA base weight ("lora_A": input channels, "lora_B": output channels)."""

    source: str
    kind: str
    shape: tuple[int, ...]
    fan_in_fan_out: bool = False


def _lora_layers(model) -> tuple[dict[int, tuple[str, Any, bool]], dict[int, str]]:
    """Map ``id(lora parameter)`` to ``(kind, base weight, fan_in_fan_out)`` for LoRA on Linear layers, and list
    the LoRA parameters of layer types whose saliency mapping is not defined here (conv, embedding)."""
    supported: dict[int, tuple[str, Any, bool]] = {}
    unsupported: dict[int, str] = {}
    for module_name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if not isinstance(lora_a, torch.nn.ModuleDict) or not hasattr(module, "get_base_layer"):
            continue
        base = module.get_base_layer()
        weight = getattr(base, "weight", None)
        for adapter, a in lora_a.items():
            b = lora_b[adapter]
            linear = (isinstance(a, torch.nn.Linear) and isinstance(b, torch.nn.Linear)
                      and torch.is_tensor(weight) and weight.ndim == 2)
            for kind, layer in (("lora_A", a), ("lora_B", b)):
                for p in layer.parameters():
                    if linear and p is layer.weight:
                        supported[id(p)] = (kind, weight, bool(getattr(module, "fan_in_fan_out", False)))
                    else:
                        unsupported[id(p)] = f"{module_name} ({type(layer).__name__} LoRA)"
        for attr in ("lora_embedding_A", "lora_embedding_B"):
            table = getattr(module, attr, None)
            if isinstance(table, torch.nn.ParameterDict):
                for p in table.values():
                    unsupported[id(p)] = f"{module_name} (embedding LoRA)"
    return supported, unsupported


def saliency_targets(model) -> tuple[OrderedDict[str, torch.Tensor], OrderedDict[str, _Target]]:
    """The tensors whose Fisher is computed, and for every trainable parameter (``requires_grad``, named as in
    ``model.named_parameters()``) how its mask derives from them. A full parameter is its own target; LoRA A/B of
    a Linear layer map to the base weight they wrap (see the module docstring)."""
    params = OrderedDict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    lora, unsupported = _lora_layers(model)
    targets: OrderedDict[str, torch.Tensor] = OrderedDict()
    layout: OrderedDict[str, _Target] = OrderedDict()
    for name, p in params.items():
        if not p.requires_grad:
            continue
        if id(p) in unsupported:
            raise NotImplementedError(
                f"Saliency masks are defined for full parameters and LoRA on Linear layers; the trainable parameter "
                f"{name!r} belongs to {unsupported[id(p)]}. Leave that layer out of the LoRA target modules."
            )
        if id(p) in lora:
            kind, base, fan_in_fan_out = lora[id(p)]
            if not base.dtype.is_floating_point:
                raise ValueError(
                    f"The base weight under LoRA parameter {name!r} is {base.dtype} (quantized); the saliency of a "
                    f"LoRA layer is the Fisher of its base weight, which needs a floating-point weight."
                )
            source = names[id(base)]
            targets[source] = base
            layout[name] = _Target(source, kind, tuple(p.shape), fan_in_fan_out)
        else:
            targets[name] = p
            layout[name] = _Target(name, "param", tuple(p.shape))
    if not layout:
        raise ValueError("The model has no trainable parameter (requires_grad=True); nothing to compute a mask for.")
    return targets, layout


# -- the Fisher diagonal -----------------------------------------------------------------------------------------
def _device_of(model) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_mode(mode: str) -> None:
    if mode not in FISHER_MODES:
        raise ValueError(f"fisher_mode must be one of {FISHER_MODES}, got {mode!r}.")


def fisher_diagonal(
    model,
    rows: Sequence[dict],
    collator,
    *,
    targets: dict[str, torch.Tensor] | None = None,
    mode: str = "dataset",
    batch_size: int = 4,
    progress: bool = True,
    desc: str = "Fisher",
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher saliency of ``rows`` at the model's current parameters (MMUnlearner Eq. 4), float32 on CPU.

    The loss of a row is its mean answer-token NLL (Eq. 13), the set's loss their mean (Eq. 14). ``mode``:
    ``"dataset"``: ``(grad L_D)^2``, gradients accumulated over batches, squared once (independent of
    ``batch_size``); ``"batch"``: mean over batches of ``(grad L_batch)^2``; ``"sample"``: mean over rows of
    ``(grad L_row)^2`` (empirical Fisher; one row per forward). Runs in eval mode (no dropout, deterministic),
    leaves ``.grad`` and ``requires_grad`` as they were; a progress bar counts batches. A batch whose loss does not
    depend on the tensors (text-only rows when only the vision encoder / connector train, MMUnlearner Table 2)
    contributes a zero gradient.
    """
    from ._progress import progress_bar

    _check_mode(mode)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    n = len(rows)
    if n == 0:
        raise ValueError(f"{desc}: the set is empty; a saliency needs at least one row.")
    if targets is None:
        targets = saliency_targets(model)[0]
    names, tensors = list(targets), list(targets.values())
    step = 1 if mode == "sample" else batch_size
    starts = list(range(0, n, step))
    acc = [torch.zeros(t.shape, dtype=torch.float32, device=t.device) for t in tensors]
    flags, was_training, device = [t.requires_grad for t in tensors], model.training, _device_of(model)
    try:
        model.eval()
        for t in tensors:
            t.requires_grad_(True)
        for start in progress_bar(starts, desc=f"saliency Fisher pass: {desc}", enabled=progress, unit="batch"):
            chunk = [rows[i] for i in range(start, min(start + step, n))]
            batch = to_device(collator(chunk), device)
            with torch.enable_grad():
                logits = model(**model_inputs(batch), use_cache=False).logits
                nll = losses.sequence_nll(logits, batch["labels"])
                if not torch.isfinite(nll).all():
                    bad = [row_name(chunk[i], start + i) for i in (~torch.isfinite(nll)).nonzero().flatten().tolist()]
                    raise ValueError(f"{desc}: non-finite loss on {', '.join(bad)}; the saliency would be undefined.")
                loss = nll.sum() / n if mode == "dataset" else nll.mean()
                # a batch that reaches none of the tensors (text-only rows when only the vision side trains) has a
                # zero gradient there: it adds nothing (it still counts in the means)
                grads = (torch.autograd.grad(loss, tensors, allow_unused=True) if loss.requires_grad
                         else [None] * len(tensors))
            for a, g in zip(acc, grads):
                if g is None:
                    continue
                if mode == "dataset":
                    a.add_(g.float())
                else:
                    a.add_(g.float().square(), alpha=1.0 / len(starts))
        if mode == "dataset":
            for a in acc:
                a.square_()
    finally:
        for t, flag in zip(tensors, flags):
            t.requires_grad_(flag)
        model.train(was_training)
    return {k: a.cpu() for k, a in zip(names, acc)}


# -- fingerprints and the on-disk cache --------------------------------------------------------------------------
def _json(value) -> str:
    def default(o):
        if isinstance(o, (set, frozenset)):
            return sorted(map(str, o))
        return str(o)

    return json.dumps(value, sort_keys=True, default=default)


def _config_digest(model) -> str:
    """Hash of the model's class, config (without its path and version) and PEFT config: what, besides the weights,
    changes the gradients a Fisher diagonal is made of."""
    h = hashlib.sha256(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        cfg = {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
        h.update(_json(cfg).encode())
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict):
        h.update(_json({k: v.to_dict() for k, v in peft_config.items()}).encode())
    return h.hexdigest()


def data_fingerprint(rows: Sequence[dict], collator=None) -> str:
    """Hash of the rows (id, question, answer, image contents) and of what the collator does with them."""
    h = hashlib.sha256()
    if collator is not None:
        processor = getattr(collator, "processor", None)
        template = getattr(processor, "chat_template", None) or getattr(
            getattr(collator, "tokenizer", None), "chat_template", None
        )
        h.update(_json({"collator": type(collator).__name__, "template": template,
                        "label_end_of_turn": getattr(collator, "label_end_of_turn", None)}).encode())
    for i in range(len(rows)):
        row = rows[i]
        h.update(_json({k: row.get(k) for k in ("id", "question", "answer")}).encode())
        h.update(_json([image_digest(im) for im in row_images(row)]).encode())
    return h.hexdigest()


def _atomic_save(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
    os.replace(tmp, path)


def saliency_scores(
    model,
    rows: Sequence[dict],
    collator,
    *,
    mode: str = "dataset",
    batch_size: int = 4,
    cache_dir: str | None = None,
    progress: bool = True,
    desc: str = "Fisher",
    targets: dict[str, torch.Tensor] | None = None,
    model_fp: str | None = None,
    data_fp: str | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`fisher_diagonal`, cached in ``cache_dir`` as safetensors keyed by the model and data fingerprints
    and the Fisher settings: a second call with the same model and rows loads the file instead of recomputing."""
    _check_mode(mode)
    if targets is None:
        targets = saliency_targets(model)[0]
    path = None
    if cache_dir is not None:
        key = _json({"format": _FORMAT, "model": model_fp or model_fingerprint(model), "config": _config_digest(model),
                     "data": data_fp or data_fingerprint(rows, collator), "mode": mode,
                     "batch_size": batch_size if mode == "batch" else None, "targets": list(targets)})
        path = os.path.join(cache_dir, f"fisher-{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors")
        if os.path.exists(path):
            from safetensors.torch import load_file

            try:
                scores = load_file(path)
            except Exception as err:  # truncated or not safetensors: the cache is ours, rebuild it
                logger.warning("The cached Fisher diagonal %s cannot be read (%s: %s); recomputing it and overwriting "
                               "the file.", path, type(err).__name__, err)
                scores = None
            if scores is not None:
                if set(scores) == set(targets) and all(
                    tuple(scores[k].shape) == tuple(t.shape) for k, t in targets.items()
                ):
                    logger.info("Loaded cached saliency %s from %s", desc, path)
                    return scores
                logger.warning("The cached Fisher diagonal %s does not fit the model's parameters; recomputing it.",
                               path)
    scores = fisher_diagonal(model, rows, collator, targets=targets, mode=mode, batch_size=batch_size,
                             progress=progress, desc=desc)
    if path is not None:
        _atomic_save(scores, path, {"format": _FORMAT, "mode": mode, "rows": str(len(rows)), "desc": desc})
    return scores


# -- from scores to a mask ---------------------------------------------------------------------------------------
def saliency_ratio(s_target: torch.Tensor, s_preserve: torch.Tensor, eps: float = 1e-30) -> torch.Tensor:
    """``S(T) / S(P)`` with the division guarded: the denominator is clamped to ``eps``, and entries with
    ``S(T) == 0`` get ratio 0 (so ``0 / 0 = 0``: no forget saliency, never selected)."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}.")
    s_target, s_preserve = s_target.float(), s_preserve.float()
    ratio = s_target / s_preserve.clamp_min(eps)
    return torch.where(s_target > 0, ratio, torch.zeros_like(ratio))


def masks_from_scores(
    layout: dict[str, _Target],
    s_target: dict[str, torch.Tensor],
    s_preserve: dict[str, torch.Tensor],
    beta: float = 1.0,
    eps: float = 1e-30,
) -> dict[str, torch.Tensor]:
    """Boolean masks ``1[S(T)/S(P) >= beta]`` (MMUnlearner Eq. 7) keyed by trainable parameter name; LoRA A/B
    masks come from the channel sums of their base weight's scores (columns of A, rows of B)."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}.")
    out: dict[str, torch.Tensor] = {}
    for name, t in layout.items():
        st, sp = s_target[t.source], s_preserve[t.source]
        if t.kind == "param":
            out[name] = saliency_ratio(st, sp, eps) >= beta
            continue
        if t.fan_in_fan_out:  # Conv1D-style storage [in, out]; make it [out, in]
            st, sp = st.T, sp.T
        if t.kind == "lora_B":  # [out, r]: an output channel of W is a row of B
            channel = saliency_ratio(st.sum(1), sp.sum(1), eps) >= beta
            out[name] = channel[:, None].expand(t.shape).clone()
        else:  # lora_A [r, in]: an input channel of W is a column of A
            channel = saliency_ratio(st.sum(0), sp.sum(0), eps) >= beta
            out[name] = channel[None, :].expand(t.shape).clone()
    return out


# -- grouping for reports and the heatmap ------------------------------------------------------------------------
_LAYER_CONTAINERS = ("layers", "blocks", "layer", "h")
_COMPONENTS = (  # first match wins: connectors often live inside the vision module (Qwen2-VL's visual.merger)
    ("connector", ("multi_modal_projector", "mm_projector", "merger", "connector", "projector")),
    ("vision", ("vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder")),
    ("lm_head", ("lm_head",)),
    ("language_model", ("language_model", "text_model", "embed_tokens", "model", "transformer")),
)


def _module_path(name: str) -> list[str]:
    """Segments of a parameter's module path without the PEFT wrapper, adapter parts and the tensor's own name."""
    segs = name.split(".")[:-1]
    if segs[:2] == ["base_model", "model"]:
        segs = segs[2:]
    out, skip = [], False
    for s in segs:
        if skip:
            skip = False
            continue
        if s in _LORA_KEYS:
            skip = True
            continue
        if s != "base_layer":
            out.append(s)
    return out


def parameter_group(name: str) -> tuple[str, int | None, str]:
    """``(component, layer index or None, module type)`` of a parameter, e.g. ``("language_model", 3,
    "self_attn.q_proj")``; components are vision, connector, language_model, lm_head, other."""
    segs = _module_path(name)
    component, marker = "other", None
    for comp, keys in _COMPONENTS:
        hit = next((segs.index(k) for k in keys if k in segs), None)
        if hit is not None:
            component, marker = comp, hit
            break
    for i, s in enumerate(segs[:-1]):
        if s in _LAYER_CONTAINERS and segs[i + 1].isdigit():
            return component, int(segs[i + 1]), ".".join(segs[i + 2:]) or "(layer)"
    rest = segs[marker + 1:] if marker is not None else segs
    return component, None, ".".join(rest) or (segs[marker] if marker is not None else name)


# -- the mask ----------------------------------------------------------------------------------------------------
class SaliencyMask:
    """Boolean masks keyed by trainable parameter name, with metadata; reports, heatmap, save/load, and
    :meth:`gate`, the context under which a forward's gradient reaches only the selected entries."""

    def __init__(self, masks: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None):
        self.masks = OrderedDict((k, v.detach().to("cpu", torch.bool)) for k, v in masks.items())
        self.metadata = dict(metadata or {})
        self._on_device: dict[tuple[str, str], torch.Tensor] = {}
        self._coverage: dict[str, str] = {}  # name -> "all" | "none" | "partial", computed once per name
        self._checked: set = set()  # (model id, trainable names) already validated by check()

    # counts and reports
    @property
    def num_selected(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def num_total(self) -> int:
        return int(sum(m.numel() for m in self.masks.values()))

    @property
    def fraction(self) -> float:
        return self.num_selected / max(self.num_total, 1)

    def report(self) -> dict[str, dict]:
        """Counts and fraction selected: ``total`` and ``by_component`` / ``by_layer`` / ``by_module`` /
        ``by_parameter``, each ``{group: {"selected", "total", "fraction"}}``; every grouping sums to the total."""
        groups: dict[str, dict[str, list[int]]] = {k: {} for k in ("by_component", "by_layer", "by_module",
                                                                    "by_parameter")}
        for name, m in self.masks.items():
            comp, layer, module = parameter_group(name)
            sel, tot = int(m.sum()), m.numel()
            keys = {"by_component": comp, "by_layer": f"{comp}.{'other' if layer is None else layer}",
                    "by_module": f"{comp}.{module}", "by_parameter": name}
            for g, key in keys.items():
                c = groups[g].setdefault(key, [0, 0])
                c[0] += sel
                c[1] += tot

        def fmt(c):
            return {"selected": c[0], "total": c[1], "fraction": c[0] / c[1] if c[1] else 0.0}

        out: dict[str, dict] = {"total": fmt([self.num_selected, self.num_total])}
        for g, d in groups.items():
            out[g] = {k: fmt(c) for k, c in d.items()}
        return out

    def table(self, by: Iterable[str] = ("by_component", "by_layer")) -> str:
        """Plain-text table of the fraction selected per group (by default per component and per layer)."""
        rep = self.report()
        lines = [f"{'group':<48} {'selected':>12} {'total':>12} {'fraction':>9}"]
        for g in by:
            lines.append(f"-- {g}")
            for k, c in rep[g].items():
                lines.append(f"{k:<48} {c['selected']:>12} {c['total']:>12} {100 * c['fraction']:>8.2f}%")
        t = rep["total"]
        lines.append(f"{'TOTAL':<48} {t['selected']:>12} {t['total']:>12} {100 * t['fraction']:>8.2f}%")
        return "\n".join(lines)

    def plot_heatmap(self, path: str, title: str | None = None) -> str:
        """Write a PNG heatmap of the fraction selected per (layer, module type), one panel per component with
        layers (the paper's Fig. 5/6 layout). Needs matplotlib (``pip install 'unlearn-trainer[plots]'``)."""
        try:
            from matplotlib.figure import Figure
        except ImportError as err:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "Plotting the saliency heatmap needs matplotlib: pip install 'unlearn-trainer[plots]'."
            ) from err
        import numpy as np

        cells: dict[str, dict[tuple[int, str], list[int]]] = {}
        for name, m in self.masks.items():
            comp, layer, module = parameter_group(name)
            if layer is None:
                continue
            c = cells.setdefault(comp, {}).setdefault((layer, module), [0, 0])
            c[0] += int(m.sum())
            c[1] += m.numel()
        if not cells:
            raise ValueError("No trainable parameter belongs to a numbered layer; there is no layer heatmap to plot.")
        fig = Figure(figsize=(5 * len(cells), 4), constrained_layout=True)
        axes = fig.subplots(1, len(cells), squeeze=False)[0]
        for ax, (comp, d) in zip(axes, cells.items()):
            layers = sorted({k[0] for k in d})
            modules = list(dict.fromkeys(k[1] for k in d))
            grid = np.full((len(layers), len(modules)), np.nan)
            for (layer, module), (sel, tot) in d.items():
                grid[layers.index(layer), modules.index(module)] = sel / tot
            im = ax.imshow(grid, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis", origin="lower")
            ax.set_xticks(range(len(modules)), modules, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(layers)), [str(i) for i in layers], fontsize=7)
            ax.set_xlabel("module")
            ax.set_ylabel("layer")
            ax.set_title(comp)
            fig.colorbar(im, ax=ax, label="fraction selected")
        fig.suptitle(title or f"Saliency mask: {100 * self.fraction:.1f}% of trainable entries selected")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=110)
        return path

    # persistence
    def save(self, path: str) -> str:
        """Save as safetensors (bool tensors, metadata as JSON strings)."""
        meta = {"format": _FORMAT, **{k: json.dumps(v) for k, v in self.metadata.items()}}
        _atomic_save(dict(self.masks), path, meta)
        return path

    @classmethod
    def load(cls, path: str) -> SaliencyMask:
        from safetensors import safe_open

        if not os.path.exists(path):
            raise FileNotFoundError(f"Saliency mask file {path!r} does not exist (UnlearnConfig.saliency_mask).")
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                masks = {k: f.get_tensor(k) for k in f.keys()}
            fmt = meta.get("format")
            metadata = {k: json.loads(v) for k, v in meta.items() if k != "format"} if fmt == _FORMAT else {}
        except Exception as err:  # truncated, or not a safetensors file
            raise ValueError(
                f"The saliency mask file {path!r} cannot be read ({type(err).__name__}: {err}); it is truncated or "
                f"not a mask. Delete it and recompute the mask (SaliencyTrainer without saliency_mask=, or "
                f"unlearn_trainer.saliency.compute_saliency_mask), or point saliency_mask= to an intact file."
            ) from err
        if fmt != _FORMAT:
            raise ValueError(f"{path!r} is not a saliency mask saved by unlearn_trainer.saliency (format "
                             f"{fmt!r}).")
        return cls(masks, metadata)

    def check_fingerprint(self, model, path: str | None = None) -> None:
        """Refuse a mask computed on other weights than ``model``'s (MMUnlearner computes it on the initial model,
        the one about to be unlearned): the stored ``model_fingerprint`` must equal this model's."""
        where = f" {path!r}" if path else ""
        stored = self.metadata.get("model_fingerprint")
        if stored is None:
            raise ValueError(
                f"The saliency mask{where} carries no model fingerprint, so nothing says it was computed on this "
                f"model. Recompute it on this model with unlearn_trainer.saliency.compute_saliency_mask (or "
                f"SaliencyTrainer without saliency_mask=)."
            )
        actual = model_fingerprint(model)
        if stored != actual:
            names = {n for n, _ in model.named_parameters()}
            hint = ("" if set(self.masks) <= names else " Its parameter names differ too (e.g. a mask of the PEFT "
                    "model used on the base model, or the other way round).")
            raise ValueError(
                f"The saliency mask{where} was computed on other weights than the model it is applied to (model "
                f"fingerprint {str(stored)[:12]}... vs {actual[:12]}...).{hint} A mask holds only for the weights it "
                f"was computed on: delete it and recompute it on this model (SaliencyTrainer without saliency_mask=, "
                f"or compute_saliency_mask), or train the model it was computed on."
            )

    # use during training
    def check(self, model) -> None:
        """Fail loudly unless the mask fits the model being trained: its keys must name the model's trainable
        parameters (``named_parameters()`` of that very model, so PEFT names for a PEFT model), cover every one of
        them with the right shape, and select at least one entry."""
        params = dict(model.named_parameters())
        trainable = [n for n, p in params.items() if p.requires_grad]
        key = (id(model), tuple(trainable), tuple(tuple(params[n].shape) for n in trainable))
        if key in self._checked:  # called on every forget pass: validate once per model and trainable set
            return
        if not trainable:
            raise ValueError("The model has no trainable parameter; a saliency mask has nothing to gate.")
        matched = [k for k in self.masks if k in trainable]
        if not matched:
            hint = ""
            if any(n.startswith("base_model.model.") for n in trainable) and not any(
                k.startswith("base_model.model.") for k in self.masks
            ):
                hint = (" The model is PEFT-wrapped but the mask uses base-model names: compute the mask on the "
                        "PEFT model you train (its LoRA parameters are mapped from the base weights' saliency).")
            raise ValueError(
                f"None of the saliency mask's {len(self.masks)} keys names a trainable parameter of the model, so the "
                f"mask would never apply. Mask keys look like {list(self.masks)[:2]}, trainable parameters like "
                f"{trainable[:2]}.{hint}"
            )
        unknown = [k for k in self.masks if k not in params]
        missing = [n for n in trainable if n not in self.masks]
        if unknown or missing:
            raise ValueError(
                f"The saliency mask does not fit the model: {len(missing)} trainable parameter(s) have no mask entry "
                f"(e.g. {missing[:3]}) and {len(unknown)} mask key(s) name no parameter (e.g. {unknown[:3]}). "
                f"Compute the mask on the model you train, with the same trainable parameters."
            )
        for n in trainable:
            if tuple(self.masks[n].shape) != tuple(params[n].shape):
                raise ValueError(f"Saliency mask for {n!r} has shape {tuple(self.masks[n].shape)}, the parameter "
                                 f"{tuple(params[n].shape)}.")
        if all(self._cover(n) == "none" for n in trainable):
            raise ValueError(
                f"The saliency mask selects no entry of any trainable parameter (0 of "
                f"{sum(params[n].numel() for n in trainable)}): the forget loss would change nothing. Lower beta "
                f"(now {self.metadata.get('beta')}) or check the forget and preserved sets."
            )
        self._checked.add(key)

    def _cover(self, name: str) -> str:
        if name not in self._coverage:
            m = self.masks[name]
            self._coverage[name] = "all" if bool(m.all()) else "none" if not bool(m.any()) else "partial"
        return self._coverage[name]

    def _device_mask(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, str(device))
        if key not in self._on_device:
            self._on_device[key] = self.masks[name].to(device)
        return self._on_device[key]

    @contextlib.contextmanager
    def gate(self, model, check: bool = True):
        """Run a forward under this context and its gradient reaches a parameter only where the mask is True.

        Each gated parameter is swapped, for the duration of the context, for a view of itself (same storage and
        value) whose gradient hook multiplies by the mask; fully selected parameters are left alone and fully
        unselected ones are replaced by ``p.detach()``. Forwards outside the context (the retain pass) are not
        affected, and gradients still accumulate into the original parameters in one backward.
        Activation checkpointing must be non-reentrant (the transformers default) for the gate to hold; sharded
        parameters (FSDP, ZeRO-3) do not match the mask's shapes and fail :meth:`check`.
        """
        if check:
            self.check(model)
        if not torch.is_grad_enabled():
            yield
            return
        replacement: dict[int, torch.Tensor] = {}
        for name, p in model.named_parameters():
            if name not in self.masks or not p.requires_grad or self._cover(name) == "all":
                continue
            if self._cover(name) == "none":
                replacement[id(p)] = p.detach()
                continue
            gated = p.view_as(p)
            dm = self._device_mask(name, p.device)
            gated.register_hook(lambda g, dm=dm: g * dm)
            replacement[id(p)] = gated
        swapped = []
        for module in model.modules():
            for pname, value in module._parameters.items():
                if value is not None and id(value) in replacement:
                    swapped.append((module, pname, value))
        try:
            for module, pname, value in swapped:  # in-place dict update keeps the parameter order
                module._parameters[pname] = replacement[id(value)]
            yield
        finally:
            for module, pname, value in swapped:
                module._parameters[pname] = value


# -- building a mask ---------------------------------------------------------------------------------------------
def compute_saliency_mask(
    model,
    forget_rows: Sequence[dict],
    preserve_rows: Sequence[dict],
    collator,
    *,
    beta: float = 1.0,
    fisher_mode: str = "dataset",
    batch_size: int = 4,
    eps: float = 1e-30,
    cache_dir: str | None = None,
    progress: bool = True,
    preserve_collator=None,
) -> SaliencyMask:
    """MMUnlearner's mask for the trainable parameters of ``model`` (Eqs. 4-7): Fisher saliency of the forget
    rows T and the preserved rows P at the current parameters, ``m = 1[S(T)/S(P) >= beta]``.

    ``collator`` turns rows into model inputs with answer-only labels (e.g. ``VLMUnlearningCollator``). With
    ``cache_dir`` the two Fisher diagonals are cached (safetensors, keyed by model and data fingerprints), so
    changing only ``beta`` or rerunning costs no forward pass. Raises if the mask selects nothing.
    """
    _check_mode(fisher_mode)
    targets, layout = saliency_targets(model)
    preserve_collator = preserve_collator or collator
    fps = {"model_fingerprint": model_fingerprint(model), "forget_fingerprint": data_fingerprint(forget_rows, collator),
           "preserve_fingerprint": data_fingerprint(preserve_rows, preserve_collator)}
    common = dict(mode=fisher_mode, batch_size=batch_size, cache_dir=cache_dir, progress=progress,
                  targets=targets, model_fp=fps["model_fingerprint"])
    s_t = saliency_scores(model, forget_rows, collator, desc="Saliency S(T) forget set",
                          data_fp=fps["forget_fingerprint"], **common)
    s_p = saliency_scores(model, preserve_rows, preserve_collator, desc="Saliency S(P) preserved set",
                          data_fp=fps["preserve_fingerprint"], **common)
    masks = masks_from_scores(layout, s_t, s_p, beta=beta, eps=eps)
    lora = sorted({t.kind for t in layout.values()} & {"lora_A", "lora_B"})
    mask = SaliencyMask(masks, {
        "beta": beta, "fisher_mode": fisher_mode, "fisher_batch_size": batch_size, "eps": eps,
        "n_forget": len(forget_rows), "n_preserve": len(preserve_rows), **fps,
        "lora_saliency": "base-weight channel ratio (rows of B: output channels, columns of A: input channels)"
        if lora else None,
    })
    if mask.num_selected == 0:
        raise ValueError(
            f"The saliency mask selects no trainable parameter entry (0 of {mask.num_total}) at beta={beta}: lower "
            f"beta, or check that the forget set differs from the preserved set."
        )
    return mask


def set_trainable(model, patterns: Sequence[str]) -> list[str]:
    """Full-parameter training of chosen modules: ``requires_grad`` is True exactly for the parameters whose name
    matches one of the regular expressions (``re.search``), e.g. ``["vision_tower", "multi_modal_projector",
    "language_model"]``. Returns the trainable names; raises if a pattern matches nothing."""
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = [re.compile(p) for p in patterns]
    names = [n for n, _ in model.named_parameters()]
    unused = [p.pattern for p in compiled if not any(p.search(n) for n in names)]
    if unused:
        raise ValueError(f"trainable_modules pattern(s) {unused} match no parameter name; names look like "
                         f"{names[:3]}.")
    chosen = []
    for n, p in model.named_parameters():
        on = any(c.search(n) for c in compiled)
        p.requires_grad_(on)
        if on:
            chosen.append(n)
    return chosen


def forget_gradient_gate(mask: SaliencyMask, model):
    """The context ``UnlearnTrainer.forget_gradient_context`` returns when ``args.saliency_mask`` is set: ``mask``
    (held by the trainer) gating the forget pass of ``model`` (unwrapped: the mask names its parameters)."""
    return mask.gate(model)


def check_checkpointing(args) -> None:
    """Reentrant activation checkpointing recomputes the forward in backward with the plain parameters, which
    would bypass the gate: refuse it (transformers' default is non-reentrant)."""
    kwargs = getattr(args, "gradient_checkpointing_kwargs", None) or {}
    if getattr(args, "gradient_checkpointing", False) and kwargs.get("use_reentrant", False):
        raise ValueError("Saliency masks need non-reentrant activation checkpointing: set "
                         "gradient_checkpointing_kwargs={'use_reentrant': False}.")
