"""SGPVT's visual-token machinery: exact spherical perturbation, cosine-band curriculum, damage boundary, top-K
selection by text-to-image attention, and where the visual tokens are read and replaced in each family.

Paper: "SGPVT: Self-Generated Proximal Visual Tokens for Mitigating Proximal Collateral Damage in MLLM
Unlearning" (Sec. 3.3). The trainer is :class:`unlearn_trainer.trainers.sgpvt.SGPVTTrainer`; everything here is
independent of it.

- :func:`cosine_band` -- Eq. 4, ``s_t = (s_min+1)/2 + (1-s_min)/2 * (1-2 eps) * cos(2 pi t / T)``.
- :func:`rotate_to_cosine` -- Eqs. 5-7: ``v~ = ||v|| (v^ cos theta + n/||n|| sin theta)``, ``theta = arccos s``,
  ``n`` the part of ``r ~ N(0, I)`` orthogonal to ``v^``. Eq. 7 writes ``||v^||`` (= 1) in front; the official
  LLaVA code does that and replaces CLIP features (norm ~ tens) by unit vectors. We keep ``||v||``, so only the
  direction moves and ``cos(v, v~) = s`` exactly. :func:`perturb_tokens` adds Eq. 8's ``N(0, sigma^2)`` noise.
- :func:`damage_boundary` -- Eq. 3, the mean cosine similarity between the target's mean-pooled visual embedding
  and those of images of distant concepts.
- :func:`text_to_image_attention` -- Eq. 2 without eager attention: during one forward pass the query and key
  states of ONE chosen language-model layer are captured right where the layer hands them to its attention
  function (after q/k norms and the rotary embedding -- RoPE or Qwen's M-RoPE --, so nothing is approximated),
  and ``softmax(q k^T * scaling)`` is computed here for the answer (or concept) query positions only, with the
  layer's scaling, GQA head sharing, causal + padding mask, logit soft-capping and sliding window. The forward
  pass stops after that layer. Heads and query positions are averaged. The official code instead turns on
  ``output_attentions`` (eager attention in every layer, a ``[L, B, H, T, T]`` tensor) and averages all layers
  with weights ``softmax(linspace(0.1, 2.0, L))``. Default layer: the middle one (``L // 2``), where
  text-to-image grounding is usually strongest; any layer can be chosen.
- :class:`TokenSite` -- where the visual tokens are read and replaced (``perturb``), and how they map to the
  language model's image tokens (:meth:`TokenSite.dependency`), so that attention measured on image tokens
  selects pre-projector features.

What is perturbed, per family (``perturb="pre_projector"``, the default, is what the official LLaVA code
perturbs: the CLIP vision tower's output, fed through the projector afterwards; its InternVL branch perturbs
the post-MLP features but never feeds them to the model). Rows are the vectors of the replaced tensor along its
last dimension; "rows -> tokens" is how the family turns them into language-model image tokens (tiny test
models of ``unlearn_trainer.testing``, per image):

==========  ===============================================  =======================================  ===========
family      pre_projector: tensor replaced                   rows -> image tokens                     post
==========  ===============================================  =======================================  ===========
llava       projector input ``[images, 16, Dv]``             1 -> 1                                   yes
llava_next  projector input ``[base+crops, 16, Dv]``         1 -> 1, unpadded; image_newline none     yes
qwen2_vl    merger input ``[patches, Dv]``                   2x2 merge: 4 -> 1                        yes
qwen2_5_vl  merger input (attention-window order)            2x2 merge: 4 -> 1                        yes
idefics3    connector input ``[tiles, 16, Dv]``              pixel shuffle: 4 -> 1                    yes
smolvlm     connector input ``[tiles, 16, Dv]``              pixel shuffle: 4 -> 1                    yes
gemma3      projector input ``[images, 16, Dv]``             average pool: 4 -> 1                     yes
paligemma   projector input ``[images, 16, Dv]``             1 -> 1                                   yes
internvl    vision tower output ``[images, 1+16, Dv]``       pixel shuffle then MLP: 4 -> 1; CLS none  yes
mllama      not supported (cross-attention)                  --                                       no
==========  ===============================================  =======================================  ===========

``perturb="post_projector"`` perturbs the language model's input embeddings at the image-token positions
(:meth:`VisionAdapter.replace_visual_embeddings`), the same for every in-sequence family. The row-to-token map
is computed, not hard-coded: one pass with the pre-projector tensor as a leaf, then a vector-Jacobian product
per image token; row ``r`` feeds token ``j`` iff the gradient of token ``j`` w.r.t. row ``r`` is non-zero
(exact, since unrelated rows get exact zeros). An image token's attention is split equally among the rows that
feed it, and the top-K rows are chosen among rows that feed some token (CLS and unpadded-away crop rows never
are). Mllama has no visual tokens in its sequence (its images enter through cross-attention layers): SGPVT's
token replacement does not apply and :class:`TokenSite` raises ``NotImplementedError``.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..data.collator import model_inputs
from .adapters import get_adapter, unwrap_model
from .hooks import StopForward, capture, module_hook

__all__ = [
    "PERTURB_SITES",
    "MLLAMA_NOT_SUPPORTED",
    "cosine_band",
    "rotate_to_cosine",
    "perturb_tokens",
    "topk_count",
    "select_topk",
    "damage_boundary",
    "attention_scores",
    "capture_attention_states",
    "text_to_image_attention",
    "lift_token_scores",
    "resolve_layer",
    "TokenSite",
]

PERTURB_SITES = ("pre_projector", "post_projector")

MLLAMA_NOT_SUPPORTED = (
    "SGPVT perturbs the visual tokens the language model reads in its input sequence. Mllama (Llama 3.2 Vision) "
    "has none: its images enter through cross-attention layers and the sequence holds one <|image|> placeholder "
    "per image, so there is no visual token to select by attention or to replace. SGPVT does not support "
    "cross-attention architectures; use a method without visual-token replacement (GA, NPO, ViKeR, ...)."
)


# -- Eq. 4: the cosine-band curriculum ---------------------------------------------------------------------------
def cosine_band(step: int | float, s_min: float | torch.Tensor, period: int = 20, eps: float = 0.05):
    """Eq. 4: the target cosine similarity at training step ``step``,
    ``s_t = (s_min+1)/2 + (1-s_min)/2 * (1-2 eps) * cos(2 pi step / period)``.

    It oscillates in ``[s_min + eps (1-s_min), 1 - eps (1-s_min)]``, starting at the top (``step = 0``, closest to
    the target) and reaching the bottom at ``period / 2``. ``s_min`` may be a float or a tensor (one per sample).
    """
    if period <= 0:
        raise ValueError(f"The curriculum period must be > 0, got {period}.")
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"The curriculum eps must be in [0, 0.5), got {eps}.")
    wave = math.cos(2.0 * math.pi * float(step) / float(period))
    return (s_min + 1.0) / 2.0 + (1.0 - s_min) / 2.0 * (1.0 - 2.0 * eps) * wave


# -- Eqs. 5-8: exact spherical rotation -------------------------------------------------------------------------
def rotate_to_cosine(
    tokens: torch.Tensor, cos: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Eqs. 5-7 with the token's norm kept: each row ``v`` of ``tokens`` ``[N, D]`` is turned, in a uniformly random
    direction orthogonal to it, to a vector ``v~`` with ``cos(v, v~) = cos`` and ``||v~|| = ||v||``.

    ``cos`` is a float or one value per row, clipped to ``[-1, 1]``. The random directions ``r ~ N(0, I)`` are
    drawn on the CPU from ``generator`` (so a seed gives the same result on any device). Computed in float32 and
    returned in ``tokens``' dtype. Rows of norm 0 have no direction and are returned unchanged.
    """
    if tokens.dim() != 2:
        raise ValueError(f"rotate_to_cosine expects [N, D] tokens, got shape {tuple(tokens.shape)}.")
    n_rows, dim = tokens.shape
    if dim < 2:
        raise ValueError("rotate_to_cosine needs tokens of dimension >= 2 (a direction orthogonal to v).")
    x = tokens.detach().float()
    norm = x.norm(dim=-1, keepdim=True)
    unit = x / norm.clamp_min(torch.finfo(torch.float32).tiny)
    r = torch.randn(n_rows, dim, generator=generator, dtype=torch.float32).to(x.device)
    for _ in range(2):  # Gram-Schmidt (Eq. 6), twice for float32 accuracy
        r = r - (r * unit).sum(-1, keepdim=True) * unit
    ortho = r / r.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    c = torch.as_tensor(cos, dtype=torch.float32, device=x.device).clamp(-1.0, 1.0)
    c = c.reshape(-1, 1) if c.dim() else c
    theta = torch.arccos(c)  # Eq. 5
    out = norm * (unit * torch.cos(theta) + ortho * torch.sin(theta))  # Eq. 7, with ||v|| (not ||v^|| = 1)
    out = torch.where(norm > 0, out, x)
    return out.to(tokens.dtype)


def perturb_tokens(
    tokens: torch.Tensor, cos: float | torch.Tensor, noise_std: float = 0.01, generator: torch.Generator | None = None
) -> torch.Tensor:
    """SGPVT tokens (Eqs. 5-8): :func:`rotate_to_cosine`, then ``+ N(0, noise_std^2)`` per coordinate (Eq. 8,
    sigma = 0.01 in the paper; absolute, as in the official code)."""
    out = rotate_to_cosine(tokens, cos, generator)
    if noise_std > 0:
        noise = torch.randn(out.shape, generator=generator, dtype=torch.float32).to(out.device) * noise_std
        out = (out.float() + noise).to(tokens.dtype)
    return out


# -- Eq. 3: the damage boundary -----------------------------------------------------------------------------------
def damage_boundary(target: torch.Tensor, distant: torch.Tensor) -> float:
    """Eq. 3: ``s_min = mean_k cos(V^C, V_k^dis)`` for the target's pooled embedding ``[D]`` and the distant images'
    pooled embeddings ``[n, D]``."""
    if distant.dim() != 2 or distant.shape[0] == 0:
        raise ValueError(f"damage_boundary needs [n >= 1, D] distant embeddings, got shape {tuple(distant.shape)}.")
    if target.shape[-1] != distant.shape[-1]:
        raise ValueError(f"target {tuple(target.shape)} and distant {tuple(distant.shape)} embeddings differ in size.")
    cos = F.cosine_similarity(target.float().reshape(1, -1), distant.float().to(target.device), dim=-1)
    return float(cos.mean())


# -- top-K selection ---------------------------------------------------------------------------------------------
def topk_count(num_tokens: int, ratio: float) -> int:
    """Tokens selected out of ``num_tokens``: ``max(1, floor(num_tokens * ratio))`` (the official code's rule), at
    most ``num_tokens``."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"topk_ratio must be in (0, 1], got {ratio}.")
    if num_tokens <= 0:
        return 0
    return min(num_tokens, max(1, int(math.floor(num_tokens * ratio + 1e-9))))


def select_topk(scores: torch.Tensor, ratio: float, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Sorted indices of the ``topk_count`` highest ``scores`` (``[n]``) among ``candidates`` (a bool mask; all by
    default). Ties go to the lower index."""
    scores = scores.detach().float().cpu()
    if candidates is None:
        candidates = torch.ones_like(scores, dtype=torch.bool)
    candidates = candidates.cpu()
    pool = candidates.nonzero().flatten()
    k = topk_count(int(pool.numel()), ratio)
    if k == 0:
        return pool
    # stable descending sort: equal scores keep index order
    order = torch.sort(-scores[pool], stable=True).indices[:k]
    return pool[order].sort().values


def lift_token_scores(token_scores: torch.Tensor, dependency: torch.Tensor) -> torch.Tensor:
    """Scores of the pre-projector rows: each image token's score ``[N]`` split equally among the rows that feed
    it (``dependency [N, R]`` bool), summed per row; ``[R]``."""
    dep = dependency.float().cpu()
    fan_in = dep.sum(-1, keepdim=True).clamp_min(1.0)
    return (token_scores.detach().float().cpu().reshape(-1, 1) * dep / fan_in).sum(0)


# -- Eq. 2: text-to-image attention of one layer ----------------------------------------------------------------
def attention_scores(
    query: torch.Tensor,
    key: torch.Tensor,
    query_positions: torch.Tensor,
    key_valid: torch.Tensor,
    scaling: float,
    softcap: float | None = None,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Eq. 2 for one sequence: ``softmax(q_i k_j * scaling)`` over the keys each query position may attend to
    (causal, ``key_valid``, optional sliding window), averaged over heads and query positions: ``[T]``.

    ``query`` is ``[Hq, T, d]`` and ``key`` ``[Hkv, T, d]`` as the layer hands them to its attention function
    (rotary embedding applied); with grouped-query attention head ``h`` uses key head ``h // (Hq / Hkv)``.
    """
    if query.dim() != 3 or key.dim() != 3:
        raise ValueError(f"query [Hq, T, d] and key [Hkv, T, d] expected, got {tuple(query.shape)}, {tuple(key.shape)}.")
    hq, hkv = query.shape[0], key.shape[0]
    if hq % hkv:
        raise ValueError(f"{hq} query heads cannot share {hkv} key heads.")
    seq = key.shape[1]
    pos = query_positions.to(query.device).long()
    q = query[:, pos].float()
    k = key.float().repeat_interleave(hq // hkv, dim=0)
    logits = q @ k.transpose(-1, -2) * scaling  # [Hq, nq, T]
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    qi = pos.reshape(-1, 1)
    ki = torch.arange(seq, device=query.device).reshape(1, -1)
    allowed = (ki <= qi) & key_valid.to(query.device).bool().reshape(1, -1)
    if sliding_window:
        allowed = allowed & (qi - ki < sliding_window)
    logits = logits.masked_fill(~allowed, float("-inf"))
    return torch.softmax(logits, dim=-1).mean(dim=(0, 1))


_PROBE_IMPL = "sgpvt_attention_probe"
_ACTIVE_PROBES: dict[int, dict] = {}


class _AttnConfigProxy:
    """The attention module's config with ``_attn_implementation`` pointing at the probe (that layer only)."""

    def __init__(self, config, impl: str):
        object.__setattr__(self, "_sgpvt_wrapped", config)
        object.__setattr__(self, "_attn_implementation", impl)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "_sgpvt_wrapped"), name)


def _probe_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """Attention function of a probed layer: record q, k (post-RoPE) and the layer's scaling, then stop the pass
    (the deepest probed layer) or run the layer's own attention implementation."""
    probe = _ACTIVE_PROBES.get(id(module))
    if probe is None:
        raise RuntimeError(f"{type(module).__name__} uses the SGPVT attention probe outside an active probe.")
    probe["query"], probe["key"] = query.detach(), key.detach()
    probe["scaling"] = kwargs.get("scaling", getattr(module, "scaling", query.shape[-1] ** -0.5))
    probe["softcap"] = kwargs.get("softcap", getattr(module, "attn_logit_softcapping", None))
    probe["sliding_window"] = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
    if probe["stop"]:
        raise StopForward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    impl = probe["original_impl"]
    if impl in ALL_ATTENTION_FUNCTIONS:
        fn = ALL_ATTENTION_FUNCTIONS[impl]
    else:  # "eager": the modeling file's own function
        fn = sys.modules[type(module).__module__].eager_attention_forward
    return fn(module, query, key, value, attention_mask, *args, **kwargs)


def _register_probe() -> None:
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if _PROBE_IMPL not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(_PROBE_IMPL, _probe_attention)


def _decoder_layers(model) -> Sequence[torch.nn.Module]:
    lm = get_adapter(model).language_model(model)
    layers = getattr(lm, "layers", None)
    if layers is None:
        raise NotImplementedError(f"{type(lm).__name__} has no `layers`; cannot pick a layer for SGPVT's attention.")
    return layers


def resolve_layer(model, layer: int | None) -> int:
    """The decoder layer index used for attention (``None``: the middle layer, ``L // 2``; negative counts back)."""
    n = len(_decoder_layers(model))
    index = n // 2 if layer is None else int(layer)
    if index < 0:
        index += n
    if not 0 <= index < n:
        raise ValueError(f"attention_layer {layer} is out of range for a language model with {n} layers.")
    return index


@contextlib.contextmanager
def _probing(model, layers: Sequence[int]) -> Iterator[dict[int, dict]]:
    """Within the block, the attention modules of ``layers`` record their q/k; the deepest stops the pass."""
    _register_probe()
    m = unwrap_model(model)
    decoder = _decoder_layers(m)
    deepest = max(layers)
    swapped, probes = [], {}
    try:
        for i in sorted(set(layers)):
            attn = getattr(decoder[i], "self_attn", None)
            if attn is None or not hasattr(attn, "config"):
                raise NotImplementedError(f"Decoder layer {i} ({type(decoder[i]).__name__}) has no self_attn with a "
                                          f"config; cannot probe its attention.")
            original = attn.config
            probe = {"stop": i == deepest, "original_impl": getattr(original, "_attn_implementation", "eager")}
            attn.config = _AttnConfigProxy(original, _PROBE_IMPL)
            swapped.append((attn, original))
            _ACTIVE_PROBES[id(attn)] = probe
            probes[i] = probe
        yield probes
    finally:
        for attn, original in swapped:
            attn.config = original
            _ACTIVE_PROBES.pop(id(attn), None)


def capture_attention_states(model, batch: dict, layers: Sequence[int]) -> dict[int, dict]:
    """Run ``model`` on ``batch`` until the deepest of ``layers`` and return, per layer, the ``query`` ``[B, Hq, T,
    d]`` and ``key`` ``[B, Hkv, T, d]`` states its attention function received, its ``scaling``, ``softcap`` and
    ``sliding_window``. Layers are decoder layer indices of the language model (non-negative)."""
    inputs = model_inputs(batch)
    with _probing(model, layers) as probes:
        try:
            model(**inputs, use_cache=False)
        except StopForward:
            pass
    missing = [i for i, p in probes.items() if "query" not in p]
    if missing:
        raise RuntimeError(f"The forward pass never reached the attention of decoder layer(s) {missing}.")
    return probes


def text_to_image_attention(
    model, batch: dict, query_mask: torch.Tensor, layer: int | None = None
) -> list[torch.Tensor]:
    """Eq. 2: for each row of ``batch``, the attention that the query positions (``query_mask [B, T]``, e.g. the
    answer or concept tokens) pay to each of the row's image tokens, ``[n_image_tokens]`` in sequence order,
    averaged over heads and query positions, in decoder layer ``layer`` (default: the middle one)."""
    index = resolve_layer(model, layer)
    probe = capture_attention_states(model, batch, [index])[index]
    adapter = get_adapter(model)
    image = adapter.image_token_mask(unwrap_model(model), batch["input_ids"])
    valid = batch.get("attention_mask")
    if valid is None:
        valid = torch.ones_like(batch["input_ids"], dtype=torch.bool)
    out = []
    for b in range(batch["input_ids"].shape[0]):
        positions = query_mask[b].nonzero().flatten()
        if positions.numel() == 0:
            raise ValueError(f"Batch row {b} has no query positions for SGPVT's attention.")
        scores = attention_scores(
            probe["query"][b], probe["key"][b], positions, valid[b].bool(), probe["scaling"],
            probe["softcap"], probe["sliding_window"],
        )
        out.append(scores[image[b].to(scores.device)].cpu())
    return out


# -- where the visual tokens are read and replaced ---------------------------------------------------------------
def _tower_output_read(model, output) -> tuple[torch.Tensor, Any]:
    """The feature tensor in a vision tower's output and where it sits (InternVL: the ``vision_feature_layer``)."""
    if torch.is_tensor(output):
        return output, None
    layer = getattr(unwrap_model(model).config, "vision_feature_layer", -1)
    if isinstance(layer, int) and layer != -1:
        return output.hidden_states[layer], layer
    return output.last_hidden_state, None


def _tower_output_write(output, where, tensor):
    if torch.is_tensor(output):
        return tensor
    if where is None:
        output["last_hidden_state"] = tensor
        return output
    states = list(output.hidden_states)
    states[where] = tensor
    output["hidden_states"] = tuple(states)
    return output


class TokenSite:
    """Where SGPVT reads and replaces the visual tokens of a model.

    ``perturb="pre_projector"``: the vision features the projector (connector, merger) receives -- or, for
    InternVL, the vision tower's output -- as a tensor whose rows (vectors along the last dimension) are the
    tokens. ``"post_projector"``: the language model's input embeddings at the image-token positions, one row per
    image token in :meth:`VisionAdapter.image_token_mask` order. In both, the rows of a batch are its samples'
    rows one after the other, in batch order. Raises ``NotImplementedError`` for cross-attention models (Mllama).
    """

    def __init__(self, model, perturb: str = "pre_projector"):
        if perturb not in PERTURB_SITES:
            raise ValueError(f"perturb must be one of {PERTURB_SITES}, got {perturb!r}.")
        adapter = get_adapter(model)
        if adapter.cross_attention:
            raise NotImplementedError(MLLAMA_NOT_SUPPORTED)
        self.perturb = perturb

    @contextlib.contextmanager
    def _feature_hook(self, model, fn) -> Iterator[None]:
        """Pre-projector site: call ``fn(tensor)`` on the feature tensor of every forward; a non-None result
        replaces it."""
        m = unwrap_model(model)
        adapter = get_adapter(m)
        if adapter.feature_source == "projector_input":

            def pre(module, args, kwargs):
                if not args:
                    raise RuntimeError(f"{type(module).__name__} was called without positional inputs.")
                new = fn(args[0])
                return None if new is None else ((new,) + tuple(args[1:]), kwargs)

            with module_hook(adapter.projector(m), pre, pre=True, with_kwargs=True):
                yield
        else:

            def post(module, args, output):
                tensor, where = _tower_output_read(m, output)
                new = fn(tensor)
                return None if new is None else _tower_output_write(output, where, new)

            with module_hook(adapter.vision_tower(m), post):
                yield

    @contextlib.contextmanager
    def capture(self, model, batch: dict) -> Iterator[dict]:
        """Record the rows ``[R, D]`` of the forward passes run in the block (the last one): ``box["rows"]`` (with
        the graph), ``box["shape"]`` (the pre-projector tensor's shape)."""
        box: dict = {}
        if self.perturb == "pre_projector":

            def record(tensor):
                box["rows"], box["shape"] = tensor.reshape(-1, tensor.shape[-1]), tuple(tensor.shape)

            with self._feature_hook(model, record):
                yield box
        else:
            m = unwrap_model(model)
            adapter = get_adapter(m)
            with capture(adapter.language_model(m), "input", kwarg="inputs_embeds") as seen:
                yield box
            if seen.value is not None:
                mask = adapter.image_token_mask(m, batch["input_ids"]).to(seen.value.device)
                box["rows"], box["shape"] = seen.value[mask], None

    @contextlib.contextmanager
    def replace(self, model, rows: torch.Tensor, shape: tuple | None = None) -> Iterator[None]:
        """Within the block, forward passes use ``rows`` (``[R, D]``, as :meth:`capture` returns them) as the
        visual tokens; ``shape`` is the pre-projector tensor's shape (from :meth:`capture`)."""
        if self.perturb == "post_projector":
            with get_adapter(model).replace_visual_embeddings(model, rows):
                yield
            return

        def swap(tensor):
            if tensor.numel() != rows.numel() or tensor.shape[-1] != rows.shape[-1]:
                raise ValueError(f"SGPVT: the batch has pre-projector features of shape {tuple(tensor.shape)}; got "
                                 f"{tuple(rows.shape)} replacement rows.")
            if shape is not None and tuple(tensor.shape) != tuple(shape):
                raise ValueError(f"SGPVT: pre-projector features of shape {tuple(tensor.shape)}, expected {shape}.")
            return rows.reshape(tensor.shape).to(tensor.device, tensor.dtype)

        with self._feature_hook(model, swap):
            yield

    def rows(self, model, batch: dict) -> torch.Tensor:
        """The rows ``[R, D]`` of ``batch`` (the forward pass stops at the language model's input)."""
        m = unwrap_model(model)
        lm = get_adapter(m).language_model(m)
        with self.capture(m, batch) as box, capture(lm, "input", stop=True, kwarg="inputs_embeds") as seen:
            try:
                m(**model_inputs(batch), use_cache=False)
            except StopForward:
                pass
        if self.perturb == "post_projector":
            mask = get_adapter(m).image_token_mask(m, batch["input_ids"]).to(seen.value.device)
            return seen.value[mask]
        if "rows" not in box:
            raise RuntimeError("The forward pass never reached the vision features; does the batch have pixel_values?")
        return box["rows"]

    def dependency(self, model, batch: dict) -> torch.Tensor:
        """Bool ``[N, R]``: which rows feed each of the batch's ``N`` image tokens (identity for post_projector).

        Pre-projector: one pass with the feature tensor as a leaf up to the language model's input, then one
        vector-Jacobian product per image token (random direction); row ``r`` feeds token ``j`` iff its gradient
        is non-zero. Depends only on the input layout (image sizes), not on the weights' values.
        """
        m = unwrap_model(model)
        adapter = get_adapter(m)
        mask = adapter.image_token_mask(m, batch["input_ids"])
        if self.perturb == "post_projector":
            return torch.eye(int(mask.sum()), dtype=torch.bool)
        leaf: dict = {}

        def as_leaf(tensor):
            leaf["x"] = tensor.detach().clone().requires_grad_(True)
            return leaf["x"]

        lm = adapter.language_model(m)
        with torch.enable_grad():
            with self._feature_hook(m, as_leaf), capture(lm, "input", stop=True, kwarg="inputs_embeds") as seen:
                try:
                    m(**model_inputs(batch), use_cache=False)
                except StopForward:
                    pass
            if "x" not in leaf or seen.value is None:
                raise RuntimeError("SGPVT: the forward pass did not reach the vision features and the language model.")
            x = leaf["x"]
            tokens = seen.value[mask.to(seen.value.device)]  # [N, Dt]
            g = torch.Generator().manual_seed(0)
            direction = torch.randn(tokens.shape, generator=g).to(tokens.device, tokens.dtype)
            dep = torch.zeros(tokens.shape[0], x.numel() // x.shape[-1], dtype=torch.bool)
            for j in range(tokens.shape[0]):
                (grad,) = torch.autograd.grad(
                    (tokens[j] * direction[j]).sum(), x, retain_graph=j + 1 < tokens.shape[0], allow_unused=True
                )
                if grad is not None:
                    dep[j] = grad.reshape(-1, x.shape[-1]).abs().sum(-1).cpu() > 0
        return dep

    def pooled(self, model, batch: dict) -> torch.Tensor:
        """The visual embedding of a one-row batch, mean-pooled over its tokens, ``[D]`` (Eq. 3's V):
        pre_projector: the vision features (:meth:`VisionAdapter.vision_features`: class tokens dropped, every
        unit of the row); post_projector: the visual embeddings at the image-token positions."""
        if batch["input_ids"].shape[0] != 1:
            raise ValueError("TokenSite.pooled expects a batch of one row.")
        adapter = get_adapter(model)
        if self.perturb == "pre_projector":
            feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in adapter.vision_features(model, batch)])
        else:
            feats = adapter.visual_embeddings(model, batch)
        if feats.shape[0] == 0:
            raise ValueError("The row has no visual tokens.")
        return feats.detach().float().mean(0)
