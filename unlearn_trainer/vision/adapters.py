"""Per-architecture access to the vision side of a VLM: tower, projector, visual tokens and their replacement.

Vision-side unlearning methods (SGPVT's perturbed visual tokens, saliency over the vision tower...) need the same
few things from every architecture; a :class:`VisionAdapter` says where they are for one family, keyed by
``config.model_type``. Models may be wrapped (PEFT, DDP, ``torch.compile``): :func:`unwrap_model` peels the
wrappers, so LoRA layers stay in place and active.

::

    from unlearn_trainer.vision import get_adapter

    adapter = get_adapter(model)
    mask = adapter.image_token_mask(model, batch["input_ids"])    # [B, T] bool
    v = adapter.visual_embeddings(model, batch)                    # [mask.sum(), D_text]
    with adapter.replace_visual_embeddings(model, perturb(v)):
        logits = model(**model_inputs(batch)).logits               # the language model sees perturb(v)

Definitions (the same for every family):

- *visual embeddings* (post-projector): the vectors the language model receives at the image-token positions,
  read at the language model's input (``inputs_embeds``), in the order of ``image_token_mask(...).nonzero()``
  (row by row, left to right). Reading them there makes them exactly what the model uses, whatever the family
  does after its projector (LLaVA-NeXT's ``image_newline`` tokens, Qwen's window re-ordering...).
- *vision features* (pre-projector): the vision encoder's output as the connector receives it, before any
  pixel shuffle, patch merge, pooling or projection: a list with one ``[tokens, D_vision]`` tensor per *unit*
  (an image, or a tile for families that tile: see the table); ``D_vision == adapter.feature_size(model)``.
- *replacement*: :meth:`VisionAdapter.replace_visual_embeddings` is a context manager under which every forward
  pass feeds the language model the given embeddings (or ``fn(original)``) at the image-token positions. It is a
  forward pre-hook on the language model, so it works with or without ``pixel_values`` in the batch, through
  PEFT, and the gradient flows into the given embeddings.

Both readers run the model's own forward pass and stop it (:class:`~unlearn_trainer.vision.hooks.StopForward`)
as soon as the wanted tensor is read, so the language model does not run.

Families (transformers 5.23). Module paths are under ``model.`` of the ``*ForConditionalGeneration`` model (the
``lm_head`` is ``lm_head``); token counts and shapes are those of the tiny models of ``unlearn_trainer.testing``
(16x16 images, 4x4 patches):

==========  ============  =====================  ==============  ================================  =====================
family      vision tower  projector              language model  image token (tokens per image)    pre-projector / unit
==========  ============  =====================  ==============  ================================  =====================
llava       vision_tower  multi_modal_projector  language_model  ``<image>`` (16)                  [16, Dv] / image
llava_next  vision_tower  multi_modal_projector  language_model  ``<image>`` (88)                  [5*16, Dv] / image
qwen2_vl    visual        visual.merger          language_model  ``<|image_pad|>`` (4)             [16, Dv] / image
qwen2_5_vl  visual        visual.merger          language_model  ``<|image_pad|>`` (4)             [16, Dv] / image
idefics3    vision_model  connector              text_model      ``<image>`` (20)                  [16, Dv] / tile
smolvlm     vision_model  connector              text_model      ``<image>`` (20)                  [16, Dv] / tile
gemma3      vision_tower  multi_modal_projector  language_model  ``<image_soft_token>`` (4)        [16, Dv] / image
paligemma   vision_tower  multi_modal_projector  language_model  ``<image>`` (16)                  [16, Dv] / image
internvl    vision_tower  multi_modal_projector  language_model  ``<IMG_CONTEXT>`` (4)             [16, Dv] / image
mllama      vision_model  multi_modal_projector  language_model  ``<|image|>`` (1, no vector)      [17, Dvo] / image
==========  ============  =====================  ==============  ================================  =====================

Dv is ``vision_config.hidden_size`` (Qwen2-VL: ``vision_config.embed_dim``; LLaVA(-NeXT) with several feature
layers: that many times it); Dvo is Mllama's ``vision_config.vision_output_dim``. Notes:

- llava / llava_next / internvl: the class token is dropped ("default" feature strategy). LLaVA-NeXT encodes a
  base view plus any-resolution crops (5 crops of 16 patches here; features concatenated per image); its visual
  embeddings are the base view, then the unpadded crop grid with one ``image_newline`` token per row.
- qwen2_vl / qwen2_5_vl: the merger merges 2x2 patches (16 -> 4 tokens); M-RoPE needs ``mm_token_type_ids``.
  Qwen2.5-VL's vision blocks run in attention-window order; features are restored to the processor's order.
- idefics3 / smolvlm: images are split into tiles plus a global view (5 tiles of 16x16 here, 4 tokens each);
  the connector pixel-shuffles (16 -> 4 tokens) then projects. Features are per tile.
- gemma3: the projector average-pools 16 patches to 4 soft tokens (between ``<start_of_image>`` and
  ``<end_of_image>``); ``token_type_ids`` mark the image tokens (bidirectional attention among them).
- paligemma: a prefix-LM: ``token_type_ids`` 0 = prefix (image + prompt, bidirectional), 1 = the answer.
- internvl: the pixel shuffle (ratio 0.5) runs before the projector, so features are read at the tower's output.
- mllama: cross-attention (one ``<|image|>`` placeholder per image, no visual vectors in the sequence); features
  and embeddings cover the real tiles only (here 1 tile of 16 patches + class token); token replacement raises
  ``NotImplementedError``.

Add an architecture with :func:`register_adapter`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from ..data.collator import model_inputs
from .hooks import module_hook, run_until_captured

__all__ = [
    "VisionAdapter",
    "UnsupportedArchitectureError",
    "get_adapter",
    "language_model_layer_targets",
    "language_model_lora_targets",
    "register_adapter",
    "registered_model_types",
    "unwrap_model",
]


# LoRA on the language model only: "q_proj" alone would also adapt the vision tower in most families.
_LORA_PROJECTIONS = "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"


def language_model_lora_targets(model=None) -> str:
    """``LoraConfig(target_modules=...)`` regex for the attention and MLP projections of the language model only
    (never the vision tower or the projector). With ``model``: under its family's language model (the adapter's
    ``language_model_path``, e.g. ``model.text_model`` for Idefics3); without one, or for an unregistered family:
    under any module named ``language_model`` or ``text_model`` (every family here)."""
    if model is not None:
        try:
            path = get_adapter(model).language_model_path
        except UnsupportedArchitectureError:
            path = None
        if path:
            return rf"(.*\.)?{re.escape(path)}\..*\.({_LORA_PROJECTIONS})"
    return rf".*(language_model|text_model).*\.({_LORA_PROJECTIONS})"


def language_model_layer_targets(model, layer_ids, within: str = "mlp") -> str:
    """``LoraConfig(target_modules=...)`` regex for the projections under ``within`` (e.g. "mlp", "mlp.down_proj",
    "" for the whole layer) of the language model's decoder layers ``layer_ids`` only (RMU's updated layers)."""
    ids = sorted({int(i) for i in layer_ids})
    if not ids:
        raise ValueError("language_model_layer_targets: give at least one decoder layer index.")
    path = re.escape(get_adapter(model).language_model_path) + r"\.layers\.(" + "|".join(map(str, ids)) + ")"
    within = within.strip(".")
    if within and within.split(".")[-1] in _LORA_PROJECTIONS.split("|"):
        return rf"(.*\.)?{path}\.{re.escape(within)}"
    inner = rf"\.{re.escape(within)}" if within else ""
    return rf"(.*\.)?{path}{inner}\.(.*\.)?({_LORA_PROJECTIONS})"


class UnsupportedArchitectureError(ValueError):
    """No :class:`VisionAdapter` is registered for the model's ``config.model_type``."""


_WRAPPERS_WITH_MODULE = ("DistributedDataParallel", "DataParallel", "FullyShardedDataParallel", "DeepSpeedEngine")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside DDP/FSDP/DeepSpeed, ``torch.compile`` and PEFT wrappers.

    PEFT injects its layers into the base model, so the unwrapped model still runs with the adapter active.
    """
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTuner

    for _ in range(16):
        if type(model).__name__ in _WRAPPERS_WITH_MODULE and hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, PeftModel):
            model = model.get_base_model()
        elif isinstance(model, BaseTuner):  # a bare PEFT tuner (LoraModel)
            model = model.model
        else:
            return model
    raise RuntimeError(f"Could not unwrap {type(model).__name__}: too many nested wrappers.")


def is_checkpointing(model: torch.nn.Module) -> bool:
    """Whether the model inside ``model``'s wrappers recomputes its layers in backward (gradient checkpointing)."""
    base = unwrap_model(model)
    checkpointing = getattr(base, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers before is_activation_checkpointing
        checkpointing = getattr(base, "is_gradient_checkpointing", False)
    return bool(checkpointing)


def is_fsdp_sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP (1 or 2) wraps ``model`` or any of its modules."""
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # older torch without FSDP2
        return False
    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules())


# -- per-family pieces ---------------------------------------------------------------------------------------
def _per_image(model, batch, x: torch.Tensor) -> list[torch.Tensor]:
    """Projector input ``[n_images, tokens, D]`` -> one ``[tokens, D]`` per image (or tile)."""
    return list(x.unbind(0))


def _llava_next_per_image(model, batch, x: torch.Tensor) -> list[torch.Tensor]:
    """``[all crops, tokens, D]`` (base view + any-resolution crops of every image) -> one ``[crops*tokens, D]``
    per image."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    cfg = model.config
    counts = [
        image_size_to_num_patches(
            image_size=size, grid_pinpoints=cfg.image_grid_pinpoints, patch_size=cfg.vision_config.image_size
        )
        for size in batch["image_sizes"]
    ]
    return [crops.reshape(-1, crops.shape[-1]) for crops in x.split(counts)]


def _qwen_per_image(model, batch, x: torch.Tensor) -> list[torch.Tensor]:
    """``[all patches, D]`` in the processor's order -> one ``[t*h*w, D]`` per image (``image_grid_thw``)."""
    return list(x.split(batch["image_grid_thw"].prod(-1).tolist()))


def _qwen2_5_per_image(model, batch, x: torch.Tensor) -> list[torch.Tensor]:
    """Qwen2.5-VL's vision blocks run on patches re-ordered into attention windows; the merger input is in that
    window order. Undo it (the model undoes it after the merger) before splitting per image."""
    vc = model.config.vision_config
    grid = batch["image_grid_thw"]
    try:  # transformers 5.23: a shared helper (the one the vision model itself calls)
        from transformers.vision_utils import get_vision_window_index
    except ImportError:  # earlier releases: a method of the vision model
        window_index, _ = model.model.visual.get_window_index(grid)
    else:
        window_index, _ = get_vision_window_index(
            grid, spatial_merge_size=vc.spatial_merge_size, window_size=vc.window_size, patch_size=vc.patch_size
        )
    unit = vc.spatial_merge_size**2
    restore = torch.argsort(window_index.to(x.device))
    x = x.reshape(-1, unit, x.shape[-1])[restore].reshape(-1, x.shape[-1])
    return _qwen_per_image(model, batch, x)


def _internvl_per_image(model, batch, out) -> list[torch.Tensor]:
    """InternVL's vision tower output -> the selected layer with the class token dropped, as ``get_image_features``
    selects it before its pixel shuffle."""
    cfg = model.config
    layer = cfg.vision_feature_layer
    if layer == -1:
        h = out.last_hidden_state
    else:
        if getattr(out, "hidden_states", None) is None:
            raise RuntimeError(f"InternVL vision tower returned no hidden states for vision_feature_layer={layer}.")
        h = out.hidden_states[layer]
    if cfg.vision_feature_select_strategy == "default":
        h = h[:, 1:]
    return list(h.unbind(0))


def _mllama_per_image(model, batch, x: torch.Tensor) -> list[torch.Tensor]:
    """``[B, images, tiles, patches, D]`` -> one ``[real tiles * patches, D]`` per real image (padding image slots,
    ``aspect_ratio_ids == 0``, and padding tiles, ``aspect_ratio_mask == 0``, dropped)."""
    tiles = batch["aspect_ratio_mask"].bool().to(x.device)
    real = batch["aspect_ratio_ids"].to(x.device) > 0
    return [
        x[b, i][tiles[b, i]].reshape(-1, x.shape[-1])
        for b in range(x.shape[0])
        for i in range(x.shape[1])
        if real[b, i]
    ]


def _vision_hidden(config) -> int:
    return config.vision_config.hidden_size


def _llava_feature_size(config) -> int:
    layer = config.vision_feature_layer
    return config.vision_config.hidden_size * (len(layer) if isinstance(layer, (list, tuple)) else 1)


_MLLAMA_NO_TOKENS = (
    "Mllama (Llama 3.2 Vision) feeds images to the language model through cross-attention layers: the sequence "
    "holds one <|image|> placeholder per image and no visual token embeddings, so there is nothing to replace at "
    "image-token positions. To perturb what the language model sees, change the cross-attention states (the "
    "projector's output, adapter.projector(model)) with a forward hook."
)


# -- the adapter ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisionAdapter:
    """Where one architecture keeps its vision parts, and how its visual tokens reach the language model.

    Paths are dotted submodule paths of the unwrapped ``*ForConditionalGeneration`` model.

    Args:
        vision_tower_path, projector_path, language_model_path: the modules.
        image_token: the image placeholder token of the family's processor (for messages).
        feature_source: where pre-projector features are read: ``"projector_input"`` (the projector's first
            input) or ``"tower_output"`` (the vision tower's output, when something else sits in between).
        split_features: ``fn(model, batch, captured) -> list[Tensor]``: one ``[tokens, D]`` tensor per unit.
        feature_size_fn: ``fn(config) -> int``, the last dimension of the pre-projector features.
        feature_unit: what one entry of :meth:`vision_features` is (``"image"`` or ``"tile"``).
        cross_attention: the language model attends to the vision states through cross-attention instead of
            visual tokens in the sequence (Mllama); token replacement does not apply, and
            :meth:`visual_embeddings` returns the projector's output split by ``split_features``.
        inner_path: the ``*Model`` that embeds ``input_ids`` and calls the language model (called with
            ``input_ids=`` as a keyword by the ``*ForConditionalGeneration`` model).
        notes: free text for people reading the registry.
    """

    vision_tower_path: str
    projector_path: str
    language_model_path: str
    image_token: str
    feature_source: str = "projector_input"
    split_features: Callable = _per_image
    feature_size_fn: Callable = _vision_hidden
    feature_unit: str = "image"
    cross_attention: bool = False
    inner_path: str = "model"
    notes: str = field(default="", compare=False)

    def __post_init__(self):
        if self.feature_source not in ("projector_input", "tower_output"):
            raise ValueError(f"feature_source must be 'projector_input' or 'tower_output', got {self.feature_source!r}")

    # -- modules ---------------------------------------------------------------------------------------------
    def vision_tower(self, model) -> torch.nn.Module:
        return unwrap_model(model).get_submodule(self.vision_tower_path)

    def projector(self, model) -> torch.nn.Module:
        return unwrap_model(model).get_submodule(self.projector_path)

    def language_model(self, model) -> torch.nn.Module:
        return unwrap_model(model).get_submodule(self.language_model_path)

    def decoder_layers(self, model) -> torch.nn.ModuleList:
        """The language model's decoder layers (``<language model>.layers``), first to last."""
        layers = getattr(self.language_model(model), "layers", None)
        if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
            raise UnsupportedArchitectureError(
                f"{self.language_model_path} of {type(unwrap_model(model)).__name__} has no `layers` ModuleList of "
                f"decoder layers; register an adapter whose language_model_path points at a decoder with `.layers`.")
        return layers

    def feature_size(self, model) -> int:
        """Last dimension of :meth:`vision_features`."""
        return self.feature_size_fn(unwrap_model(model).config)

    # -- image tokens ----------------------------------------------------------------------------------------
    def image_token_id(self, model) -> int:
        config = unwrap_model(model).config
        for name in ("image_token_id", "image_token_index"):
            value = getattr(config, name, None)
            if value is not None:
                return int(value)
        raise ValueError(f"{type(config).__name__} has no image_token_id / image_token_index.")

    def image_token_mask(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask ``[B, T]`` of the image-token positions in ``input_ids``. For in-sequence families these are
        exactly the positions that receive visual embeddings; for Mllama the one ``<|image|>`` placeholder per
        image (it carries no visual embedding)."""
        return input_ids == self.image_token_id(model)

    # -- features --------------------------------------------------------------------------------------------
    def vision_features(self, model, batch: dict) -> list[torch.Tensor]:
        """Pre-projector vision features: one ``[tokens, feature_size]`` tensor per unit (image or tile)."""
        m = unwrap_model(model)
        inputs = model_inputs(batch)

        def call():
            return m(**inputs, use_cache=False)

        if self.feature_source == "projector_input":
            captured = run_until_captured(call, self.projector(m), "input")
        else:
            captured = run_until_captured(call, self.vision_tower(m), "output")
        return self.split_features(m, batch, captured)

    def visual_embeddings(self, model, batch: dict) -> torch.Tensor:
        """Post-projector visual embeddings ``[N, D_text]`` as the language model receives them.

        In-sequence families: ``N == image_token_mask(...).sum()``, in the mask's row-major order. Mllama: the
        cross-attention states of the real tiles, ``[real tiles * patches, D_text]`` ordered by (row, image,
        tile, patch).
        """
        m = unwrap_model(model)
        inputs = model_inputs(batch)

        def call():
            return m(**inputs, use_cache=False)

        if self.cross_attention:
            states = run_until_captured(call, self.projector(m), "output")
            parts = self.split_features(m, batch, states)
            return torch.cat(parts) if parts else states.new_zeros(0, states.shape[-1])
        embeds = run_until_captured(call, self.language_model(m), "input", kwarg="inputs_embeds")
        return embeds[self.image_token_mask(m, batch["input_ids"]).to(embeds.device)]

    # -- replacement -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def replace_visual_embeddings(
        self, model, embeddings: torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
    ) -> Iterator[None]:
        """Within the block, the language model receives ``embeddings`` at the image-token positions.

        ``embeddings`` is ``[N, D_text]`` in the order of :meth:`visual_embeddings` (N = image tokens of the
        batch), or a function mapping the original ``[N, D_text]`` embeddings to new ones (e.g. a perturbation).
        Forward passes without image tokens (e.g. decoding steps) are left unchanged. The model must be called
        with ``input_ids``.
        """
        if self.cross_attention:
            raise NotImplementedError(_MLLAMA_NO_TOKENS)
        m = unwrap_model(model)
        state: dict = {"mask": None}

        def remember_ids(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            state["mask"] = None if ids is None else self.image_token_mask(m, ids)

        def swap(module, args, kwargs):
            embeds = kwargs.get("inputs_embeds")
            mask = state["mask"]
            if embeds is None or mask is None:
                raise RuntimeError(
                    "replace_visual_embeddings: call the model with input_ids (the image-token positions are read "
                    "from them); the language model must receive inputs_embeds."
                )
            if tuple(mask.shape) != tuple(embeds.shape[:2]):
                raise RuntimeError(
                    f"replace_visual_embeddings: {tuple(mask.shape)} input_ids but {tuple(embeds.shape[:2])} "
                    f"embeddings reach the language model."
                )
            mask = mask.to(embeds.device)
            n = int(mask.sum())
            if n == 0:
                return None
            new = embeddings(embeds[mask]) if callable(embeddings) else embeddings
            if tuple(new.shape) != (n, embeds.shape[-1]):
                raise ValueError(
                    f"replace_visual_embeddings: the batch has {n} image tokens of size {embeds.shape[-1]}; got "
                    f"embeddings of shape {tuple(new.shape)}."
                )
            full = mask.unsqueeze(-1).expand_as(embeds)
            kwargs = dict(kwargs, inputs_embeds=embeds.masked_scatter(full, new.to(embeds.device, embeds.dtype)))
            return args, kwargs

        inner = m.get_submodule(self.inner_path)
        with module_hook(inner, remember_ids, pre=True, with_kwargs=True), module_hook(
            self.language_model(m), swap, pre=True, with_kwargs=True
        ):
            yield


# -- registry ------------------------------------------------------------------------------------------------
_LLAVA_LAYOUT = dict(
    vision_tower_path="model.vision_tower",
    projector_path="model.multi_modal_projector",
    language_model_path="model.language_model",
)
_IDEFICS_LAYOUT = dict(
    vision_tower_path="model.vision_model",
    projector_path="model.connector",
    language_model_path="model.text_model",
    image_token="<image>",
    feature_unit="tile",
    notes="images are split into tiles plus a global view; the connector pixel-shuffles then projects",
)

_QWEN_LAYOUT = dict(
    vision_tower_path="model.visual",
    projector_path="model.visual.merger",
    language_model_path="model.language_model",
    image_token="<|image_pad|>",
)

_REGISTRY: dict[str, VisionAdapter] = {
    "llava": VisionAdapter(**_LLAVA_LAYOUT, image_token="<image>", feature_size_fn=_llava_feature_size),
    "llava_next": VisionAdapter(
        **_LLAVA_LAYOUT,
        image_token="<image>",
        split_features=_llava_next_per_image,
        feature_size_fn=_llava_feature_size,
        notes="visual embeddings include the unpadded crop grid and image_newline tokens",
    ),
    "qwen2_vl": VisionAdapter(
        **_QWEN_LAYOUT, split_features=_qwen_per_image, feature_size_fn=lambda c: c.vision_config.embed_dim
    ),
    "qwen2_5_vl": VisionAdapter(
        **_QWEN_LAYOUT,
        split_features=_qwen2_5_per_image,
        notes="window attention re-orders patches; features are restored to the processor's order",
    ),
    "idefics3": VisionAdapter(**_IDEFICS_LAYOUT),
    "smolvlm": VisionAdapter(**_IDEFICS_LAYOUT),
    "gemma3": VisionAdapter(**_LLAVA_LAYOUT, image_token="<image_soft_token>"),
    "paligemma": VisionAdapter(**_LLAVA_LAYOUT, image_token="<image>"),
    "internvl": VisionAdapter(
        **_LLAVA_LAYOUT,
        image_token="<IMG_CONTEXT>",
        feature_source="tower_output",
        split_features=_internvl_per_image,
        notes="pixel shuffle runs before the projector, so features are read at the tower's output",
    ),
    "mllama": VisionAdapter(
        vision_tower_path="model.vision_model",
        projector_path="model.multi_modal_projector",
        language_model_path="model.language_model",
        image_token="<|image|>",
        split_features=_mllama_per_image,
        feature_size_fn=lambda c: c.vision_config.vision_output_dim,
        cross_attention=True,
        notes=_MLLAMA_NO_TOKENS,
    ),
}


def register_adapter(model_type: str, adapter: VisionAdapter, overwrite: bool = False) -> None:
    """Register ``adapter`` for models whose ``config.model_type`` is ``model_type``."""
    if not isinstance(adapter, VisionAdapter):
        raise TypeError(f"register_adapter expects a VisionAdapter, got {type(adapter).__name__}.")
    if model_type in _REGISTRY and not overwrite:
        raise ValueError(f"A vision adapter for {model_type!r} is already registered; pass overwrite=True to replace it.")
    _REGISTRY[model_type] = adapter


def registered_model_types() -> list[str]:
    return sorted(_REGISTRY)


def get_adapter(model) -> VisionAdapter:
    """The :class:`VisionAdapter` of ``model`` (wrappers are looked through), by ``config.model_type``."""
    base = unwrap_model(model)
    config = getattr(base, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _REGISTRY:
        raise UnsupportedArchitectureError(
            f"No vision adapter for model_type={model_type!r} ({type(base).__name__}). Supported: "
            f"{', '.join(registered_model_types())}. Register one with "
            f"unlearn_trainer.vision.register_adapter({model_type!r}, VisionAdapter(vision_tower_path=..., "
            f"projector_path=..., language_model_path=..., image_token=...)), giving the dotted module paths of the "
            f"vision tower, the projector and the language model in your model."
        )
    return _REGISTRY[model_type]
