#!/usr/bin/env python
"""Every trainer at the published model sizes: LLaVA-1.5-7B, Qwen2-VL-7B and SmolVLM-256M, random weights, bf16.

    python benchmarks/real_size.py --device cuda --out OUT   # full depth, one GPU (benchmarks/gpu/run.sh)
    python benchmarks/real_size.py --device cpu              # real WIDTH, 1-2 layers, fewer image tokens (default
                                                             # without CUDA); writes results/real_size_cpu.*

Models are built from their published config values (written below, with where each comes from) with random
weights: no download. Processors are the real classes with the released image settings and an in-memory tokenizer
whose vocabulary is padded to the published ``vocab_size``. LoRA (r=8, alpha=16) on the language model
(``language_model_lora_targets``), attention ``sdpa`` (plus ``flash_attention_2`` on CUDA when ``flash_attn`` is
installed), gradient checkpointing off and on.

Per (family, attention, checkpointing) configuration, SFT and every method of ``benchmarks/speed.py`` (the same
``Method`` list, ``Runner`` and trainer construction, imported from it) run in ONE process:

- time: median ``training_step`` seconds over ``--steps`` steps after a warm-up of at least one forget epoch (caches
  full), all methods interleaved step by step in a shuffled order (CUDA: synchronised around the step);
- memory: afterwards, method by method with only that method's trainer alive, the peak over ``--memory-steps``
  steps after warm-up: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the RSS high-water mark (``VmHWM`` reset
  through ``/proc/self/clear_refs``, glibc mmap threshold fixed, as in speed.py). The frozen base weights are built
  once per family and shared by every method's model (``copy.deepcopy`` with the parameters in the memo: only the
  LoRA adapters, optimizer states and caches are per method), so each peak is what a single run of that method needs.

Ratios to SFT and the targets are those of speed.py (reported, not asserted). ``--max_minutes`` stops adding
configurations when the time is spent, writing what it has.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402 - the shared Method list, Runner and helpers

RESULTS_DIR = speed.RESULTS_DIR
GIB = 1024**3

# ----------------------------------------------------------------------------------------------------------------
# Published configurations. Sources: the config.json files of the released checkpoints on the Hub
# (llava-hf/llava-1.5-7b-hf, Qwen/Qwen2-VL-7B-Instruct, HuggingFaceTB/SmolVLM-256M-Instruct) and their
# preprocessor_config.json, as published (written here from those files; nothing is downloaded), cross-checked with
# transformers 5's config classes: LlavaConfig's defaults are LLaVA-1.5-7B's (image_seq_length 576, feature layer -2,
# strategy "default", gelu projector), CLIPVisionConfig's defaults are ViT-B/32's (so every CLIP value is set here),
# LlamaConfig's defaults are Llama-2-7B's (4096/11008/32 layers/32 heads, rms 1e-6: LLaVA's config says 1e-5).
# ----------------------------------------------------------------------------------------------------------------
LLAVA_15_7B = {
    "source": "llava-hf/llava-1.5-7b-hf config.json (Vicuna-7B v1.5 + CLIP ViT-L/14-336)",
    "text": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 rope_theta=10000.0),
    "vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
                   layer_norm_eps=1e-5),
    "top": dict(vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
                image_seq_length=576),
    # preprocessor_config.json: CLIPImageProcessor, shortest_edge 336, center crop 336x336, CLIP mean/std
    "image_px": 336,
}
QWEN2_VL_7B = {
    "source": "Qwen/Qwen2-VL-7B-Instruct config.json",
    "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
                 rope_theta=1000000.0, mrope_section=[16, 24, 24], tie_word_embeddings=False),
    "vision": dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, hidden_size=3584, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
    # preprocessor_config.json: Qwen2VLImageProcessor min_pixels 56*56, max_pixels 28*28*16384, patch 14, merge 2.
    # Dynamic resolution: a 448x448 picture is (448/14)^2 = 1024 patches, merged 2x2 -> 256 image tokens.
    "min_pixels": 3136, "max_pixels": 12845056,
    "image_px": 448,
}
SMOLVLM_256M = {
    "source": "HuggingFaceTB/SmolVLM-256M-Instruct config.json (SmolLM2-135M + SigLIP base-patch16-512)",
    "text": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3, vocab_size=49280, max_position_embeddings=8192, rms_norm_eps=1e-5,
                 rope_theta=100000.0, tie_word_embeddings=True),
    "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   image_size=512, patch_size=16),
    "top": dict(scale_factor=4),  # (512/16)^2 / 4^2 = 64 image tokens per 512px tile
    # preprocessor_config.json: size longest_edge 2048, max_image_size longest_edge 512, do_image_splitting True:
    # a 512px picture is upscaled to 2048, split into 4x4 tiles + a global view = 17 x 64 = 1088 image tokens.
    "size_longest": 2048, "tile": 512,
    "image_px": 512,
}
FAMILIES = {"llava-1.5-7b": LLAVA_15_7B, "qwen2-vl-7b": QWEN2_VL_7B, "smolvlm-256m": SMOLVLM_256M}

# CPU mode: the published WIDTHS (hidden sizes, heads, vocabulary) with few layers and fewer image tokens.
CPU_LAYERS = {"text": 1, "vision": 2}
CPU_IMAGE = {
    "llava-1.5-7b": 112,  # CLIP image_size 112: (112/14)^2 = 64 image tokens instead of 576
    "qwen2-vl-7b": 224,  # dynamic resolution: (224/14)^2 / 4 = 64 image tokens
    "smolvlm-256m": 512,  # size longest_edge 512 (no splitting): one 512px view, 64 tokens
}


@dataclasses.dataclass
class Build:
    family: str
    device: str
    dtype: str
    attn: str
    cpu_mode: bool
    text_layers: int | None = None  # None: published
    vision_layers: int | None = None


def _dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[name]


def _padded_tokenizer(vocab_size: int, **kwargs):
    """``build_tokenizer`` padded with filler words up to ``vocab_size`` tokens (the published vocabulary size)."""
    from unlearn_trainer.testing import DEFAULT_CORPUS, build_tokenizer

    base = build_tokenizer(DEFAULT_CORPUS, **kwargs)
    fillers = " ".join(f"f{i:06d}" for i in range(vocab_size - len(base)))
    tok = build_tokenizer([DEFAULT_CORPUS, fillers], **kwargs)
    if len(tok) > vocab_size:
        raise AssertionError(f"tokenizer has {len(tok)} tokens, config vocab_size {vocab_size}")
    return tok


def _layers(b: Build, key: str, published: int) -> int:
    chosen = b.text_layers if key == "text" else b.vision_layers
    if chosen is not None:
        return chosen
    return CPU_LAYERS[key] if b.cpu_mode else published


def _llava(b: Build):
    import transformers as T

    from unlearn_trainer.testing import LLAVA_CHAT_TEMPLATE

    f = LLAVA_15_7B
    tok = _padded_tokenizer(f["text"]["vocab_size"], extra_special_tokens={"image_token": "<image>"})
    px = CPU_IMAGE["llava-1.5-7b"] if b.cpu_mode else f["image_px"]
    patch = f["vision"]["patch_size"]
    text = {k: v for k, v in f["text"].items() if k != "rope_theta"}
    vision = {**f["vision"], "image_size": px,
              "num_hidden_layers": _layers(b, "vision", f["vision"]["num_hidden_layers"])}
    config = T.LlavaConfig(
        vision_config=T.CLIPVisionConfig(**vision),
        text_config=T.LlamaConfig(**{**text, "num_hidden_layers": _layers(b, "text", text["num_hidden_layers"])},
                                  rope_parameters={"rope_type": "default", "rope_theta": f["text"]["rope_theta"]},
                                  pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id),
        image_token_index=tok.image_token_id,  # published 32000; here the in-memory tokenizer's id
        **{**f["top"], "image_seq_length": (px // patch) ** 2},
    )
    image_processor = T.CLIPImageProcessorPil(size={"shortest_edge": px}, crop_size={"height": px, "width": px})
    processor = T.LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch,
                                 vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                 chat_template=LLAVA_CHAT_TEMPLATE)
    return T.LlavaForConditionalGeneration, config, processor, tok.image_token_id, px


def _qwen2_vl(b: Build):
    import transformers as T

    from unlearn_trainer.testing import QWEN_CHAT_TEMPLATE, ImageOnlyQwen2VLProcessor, _qwen_special_ids

    f = QWEN2_VL_7B
    specials = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>")
    tok = _padded_tokenizer(f["text"]["vocab_size"], special_tokens=specials, bos_token=None, eos_token="<|im_end|>",
                            extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    px = CPU_IMAGE["qwen2-vl-7b"] if b.cpu_mode else f["image_px"]
    text = {k: v for k, v in f["text"].items() if k not in ("rope_theta", "mrope_section")}
    text["num_hidden_layers"] = _layers(b, "text", text["num_hidden_layers"])
    rope = {"rope_type": "default", "rope_theta": f["text"]["rope_theta"], "mrope_section": f["text"]["mrope_section"]}
    config = T.Qwen2VLConfig(
        text_config=dict(text, rope_parameters=rope, pad_token_id=tok.pad_token_id, bos_token_id=None,
                         eos_token_id=tok.eos_token_id),
        vision_config={**f["vision"], "depth": _layers(b, "vision", f["vision"]["depth"])},
        **_qwen_special_ids(tok),
    )
    image_processor = T.Qwen2VLImageProcessorPil(
        patch_size=f["vision"]["patch_size"], merge_size=f["vision"]["spatial_merge_size"], temporal_patch_size=2,
        size={"shortest_edge": f["min_pixels"], "longest_edge": f["max_pixels"]})
    processor = ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tok,
                                          chat_template=QWEN_CHAT_TEMPLATE)
    return T.Qwen2VLForConditionalGeneration, config, processor, tok.image_token_id, px


def _smolvlm(b: Build):
    import transformers as T

    from unlearn_trainer.testing import _IDEFICS_SPECIALS, SMOLVLM_CHAT_TEMPLATE, ImageOnlySmolVLMProcessor

    f = SMOLVLM_256M
    tok = _padded_tokenizer(f["text"]["vocab_size"], special_tokens=_IDEFICS_SPECIALS, bos_token="<|im_start|>",
                            eos_token="<end_of_utterance>", extra_special_tokens={"image_token": "<image>"})
    text = {k: v for k, v in f["text"].items() if k != "rope_theta"}
    text["num_hidden_layers"] = _layers(b, "text", text["num_hidden_layers"])
    vision = {**f["vision"], "num_hidden_layers": _layers(b, "vision", f["vision"]["num_hidden_layers"])}
    scale = f["top"]["scale_factor"]
    config = T.SmolVLMConfig(
        vision_config=vision,
        text_config=dict(text, model_type="llama", pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id,
                         rope_parameters={"rope_type": "default", "rope_theta": f["text"]["rope_theta"]}),
        image_token_id=tok.image_token_id, scale_factor=scale, pad_token_id=tok.pad_token_id,
    )
    longest = f["tile"] if b.cpu_mode else f["size_longest"]
    image_processor = T.SmolVLMImageProcessorPil(size={"longest_edge": longest},
                                                 max_image_size={"longest_edge": f["tile"]}, do_image_splitting=True)
    seq_len = (f["tile"] // f["vision"]["patch_size"]) ** 2 // scale**2
    processor = ImageOnlySmolVLMProcessor(image_processor=image_processor, tokenizer=tok, image_seq_len=seq_len,
                                          chat_template=SMOLVLM_CHAT_TEMPLATE)
    return T.SmolVLMForConditionalGeneration, config, processor, tok.image_token_id, f["image_px"]


BUILDERS = {"llava-1.5-7b": _llava, "qwen2-vl-7b": _qwen2_vl, "smolvlm-256m": _smolvlm}


def build_base(b: Build):
    """``(model, processor, info)``: random weights in ``b.dtype`` on ``b.device``, attention ``b.attn``."""
    import torch

    model_cls, config, processor, image_token_id, px = BUILDERS[b.family](b)
    torch.manual_seed(0)
    with torch.device(b.device):
        model = model_cls._from_config(config, attn_implementation=b.attn, dtype=_dtype(b.dtype))
    tok = processor.tokenizer
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.eval()
    info = {"total_parameters": sum(p.numel() for p in model.parameters()),
            "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / GIB,
            "image_px": px, "image_token_id": image_token_id, "vocab_size": len(tok)}
    return model, processor, info


def share_weights_copy(base):
    """A new model object whose parameters ARE ``base``'s (frozen under LoRA, never written): only modules, buffers
    and what LoRA adds are per copy, so every method can hold its own model without a second copy of the weights."""
    return copy.deepcopy(base, memo={id(p): p for p in base.parameters()})


def load_data(image_px: int, forget_rows: int) -> dict:
    """Forget / retain rows at a real picture size, plus distant images (ViKeR's references, SGPVT's)."""
    from unlearn_trainer.testing import tiny_images, tiny_vqa_rows

    forget = tiny_vqa_rows(forget_rows, size=image_px)
    for r in forget:  # FTTP needs a concept in every forget answer: its last word (as speed.py's tiny data)
        r["concepts"] = [r["answer"].split()[-2]]
    return {"forget": forget, "retain": tiny_vqa_rows(forget_rows, seed=7, size=image_px),
            "images": tiny_images(12, size=image_px, seed=11)}


class Runner(speed.Runner):
    """speed.Runner, synchronised around the step on CUDA (so the step time is the GPU's, not the launch's); keeps
    the last step's loss (a real-width shape or dtype bug shows as an error or a non-finite loss)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        import torch

        self.losses: list[float] = []
        cuda = self.trainer.args.device.type == "cuda"
        tr = self.trainer
        step, sched = tr.training_step, tr.lr_scheduler.step

        def training_step(*args, **kwargs):
            out = step(*args, **kwargs)
            if cuda:
                torch.cuda.synchronize()
            self.losses.append(float(out))
            return out

        def scheduler_step(*args, **kwargs):
            out = sched(*args, **kwargs)
            if cuda:
                torch.cuda.synchronize()  # the optimizer's kernels finish before the next timed step
            return out

        tr.training_step, tr.lr_scheduler.step = training_step, scheduler_step


def _methods(names, gc_on: bool) -> dict:
    out = {}
    for n in names:
        m = speed._method(n)
        if gc_on:
            m = dataclasses.replace(m, config={**m.config, "gradient_checkpointing": True,
                                               "gradient_checkpointing_kwargs": {"use_reentrant": False}})
        out[n] = m
    return out


def _model_for(base, gc_on: bool):
    model = share_weights_copy(base)
    if gc_on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _image_tokens(runner, image_token_id: int) -> float:
    rows = [b["forget"]["input_ids"] for b in runner.batches]
    counts = [int((ids[i] == image_token_id).sum()) for ids in rows for i in range(ids.shape[0])]
    return statistics.fmean(counts) if counts else 0.0


def _memory_now(device: str) -> dict:
    import torch

    if device == "cuda":
        return {"allocated_kb": torch.cuda.memory_allocated() // 1024}
    return {"rss_kb": speed._status_kb("VmRSS")}


def run_configuration(b: Build, gc_on: bool, args, workdir: str, built) -> dict:
    """SFT and every method for one (family, attention, checkpointing): interleaved timing, then memory. ``built``:
    ``build_base(b)``'s result (shared by the checkpointing settings of one family and attention)."""
    import torch

    start = time.perf_counter()
    base, processor, info = built
    info = dict(info)
    data = load_data(CPU_IMAGE[b.family] if b.cpu_mode and b.family != "smolvlm-256m" else info["image_px"],
                     args.forget_rows)
    methods = _methods(args.methods, gc_on)
    spec = speed.RunSpec(model=b.family, methods=list(methods), steps=args.steps, warmup=args.warmup,
                         batch_size=args.batch_size, forget_rows=args.forget_rows, threads=args.threads,
                         workdir=workdir, memory_steps=args.memory_steps)
    out, runners = {}, {}
    for name, m in methods.items():
        try:
            runners[name] = Runner(spec, m, _model_for(base, gc_on), processor, data)
        except Exception as e:  # noqa: BLE001 - a broken method is reported, the others still run
            out[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
    n_warm = max(args.warmup, max((r.warmup_steps for r in runners.values()), default=1))
    warm, warm_ref, meas, failed = speed.interleaved_steps(runners, n_warm, args.steps, out, traceback_limit=6)
    for n, r in runners.items():
        if n in failed:
            continue
        m = meas[n]
        s = speed._summary(m["step"])
        out[n] = {
            "step": s, "cpu_step": speed._summary(m["cpu"]),
            "optimizer_median_s": statistics.median(m["opt"]),
            "reference_per_step_s": statistics.fmean(m["ref"]),
            "cpu_per_wall": sum(m["cpu"]) / max(sum(m["step"]), 1e-12),
            "one_off": {"construct_s": r.construct_s, **r.one_off, "first_step_s": warm[n][0],
                        "reference_fill_s": warm_ref[n],
                        "warmup_excess_s": max(0.0, sum(warm[n]) - len(warm[n]) * s["median_s"]),
                        "warmup_steps": len(warm[n])},
            "trainable_parameters": r.trainable, "tokens_per_row": r.batch_tokens(),
            "image_tokens_per_picture": _image_tokens(r, info["image_token_id"]),
            "losses_finite": all(math.isfinite(v) for v in r.losses), "last_loss": r.losses[-1],
        }
        if hasattr(r.trainer, "reference_cache_nbytes"):
            out[n]["reference_cache_bytes"] = r.trainer.reference_cache_nbytes()
    info.update({"timing_s": time.perf_counter() - start, "warmup_steps": n_warm, "steps": args.steps,
                 "batch_size": args.batch_size, "forget_rows": args.forget_rows})
    runners.clear()
    gc.collect()
    if not args.no_memory:
        for name, m in methods.items():
            if "error" in out.get(name, {}):
                continue
            out[name]["memory"] = _measure_memory(b, gc_on, spec, m, base, processor, data,
                                                  int(info["weights_gib"] * GIB) // 1024)
    info["wall_s"] = time.perf_counter() - start
    gc.collect()
    if b.device == "cuda":
        torch.cuda.empty_cache()
    return {"info": info, "methods": out}


def _measure_memory(b: Build, gc_on: bool, spec, method, base, processor, data, weights_kb: int) -> dict:
    """Peak memory of one method alone (the shared base weights + its own trainer) over steady-state steps, in KiB,
    with the keys speed.analyse reads (``base_kb``: the memory before its trainer was built less the weights)."""
    import torch


    def reset_peak() -> bool:
        if b.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return True
        return speed._reset_hwm()

    def peak_kb() -> int:
        return torch.cuda.max_memory_allocated() // 1024 if b.device == "cuda" else speed._peak_kb()

    try:
        gc.collect()
        # "above base" = the model's weights + what this method adds: measured from the memory just before its trainer
        # is built (the shared weights already resident), so earlier configurations' leftovers do not count
        before = torch.cuda.memory_allocated() // 1024 if b.device == "cuda" else speed._status_kb("VmRSS")
        base_kb = before - weights_kb
        reset_peak()
        runner = Runner(spec, method, _model_for(base, gc_on), processor, data)
        for _ in range(max(spec.warmup, runner.warmup_steps)):
            runner.step()
        total = peak_kb()  # construction (o*, Fisher pass) and warm-up (cache fill) included
        reset = reset_peak()
        for _ in range(spec.memory_steps):
            runner.step()
        peak = peak_kb()
        res = {"base_kb": base_kb, "steady_peak_kb": peak, "total_peak_kb": max(total, peak), "hwm_reset": reset,
               "source": "cuda.max_memory_allocated" if b.device == "cuda" else "VmHWM"}
    except Exception as e:  # noqa: BLE001
        res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
    runner = None  # noqa: F841
    gc.collect()
    if b.device == "cuda":
        torch.cuda.empty_cache()
    return res


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------
def _gib(kb):
    return "-" if kb is None else f"{kb / 1024**2:.2f}"


def markdown(results: dict) -> str:
    meta = results["meta"]
    mode = (f"CPU mode: published widths, {CPU_LAYERS['text']} decoder layer(s), {CPU_LAYERS['vision']} vision "
            "layer(s), fewer image tokens (LLaVA 112 px, Qwen2-VL 224 px, SmolVLM one 512 px view)"
            if meta["cpu_mode"] else "published sizes (every layer), released image settings")
    lines = ["# Real size: every trainer at the published model sizes", "",
             f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}, {meta['device_name']}, torch "
             f"{meta.get('torch', '?')}, transformers {meta.get('transformers', '?')}, {meta['threads']} torch "
             f"thread(s)), {meta['dtype']}, {mode}. Wall time {meta.get('wall_s', 0):.0f} s.", "",
             "Step: median `training_step` seconds (forward + loss + backward) after a warm-up of at least one forget "
             "epoch, every method interleaved with SFT in one process. x limit = x SFT / trainable passes (targets "
             "1.15, SGPVT 1.3). Peak: memory of the method alone (base weights shared, its own adapter, optimizer, "
             "caches) over steady-state steps: " + ("`torch.cuda.max_memory_allocated`" if meta["device"] == "cuda"
                                                    else "process RSS high-water mark")
             + " above the memory before the method's trainer was built, plus the model's weights (so: weights + "
             "adapter, optimizer state, caches, activations)" + f"; x SFT target {speed.MEMORY_TARGET}.", ""]
    for s in results.get("skipped", []):
        lines.append(f"- Skipped: {s}")
    for key, cr in results["configurations"].items():
        lines += [f"## {key}", ""]
        if "error" in cr:
            lines += [f"Error: {cr['error']}", ""]
            continue
        info = cr["info"]
        sft = cr["methods"].get("sft", {})
        lines += [f"{info['total_parameters'] / 1e6:.1f} M parameters ({info['weights_gib']:.2f} GiB of weights), "
                  f"vocabulary {info['vocab_size']}, picture {info['image_px']} px -> "
                  f"{sft.get('image_tokens_per_picture', '?')} image tokens, forget sequence "
                  f"{sft.get('tokens_per_row', {}).get('forget', '?')} tokens, batch {info['batch_size']}, "
                  f"{info['warmup_steps']} warm-up + {info['steps']} measured steps; LoRA "
                  f"{sft.get('trainable_parameters', 0) / 1e6:.2f} M trainable; build {info['build_s']:.1f} s, "
                  f"configuration {info['wall_s']:.0f} s.", "",
                  "| method | passes | s/step | x SFT | x limit | time target | peak GiB | x SFT | memory target "
                  "| one-off s | min per 100 steps | note |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in cr["methods"].items():
            if "step" not in r:
                lines.append(f"| {name} | - | error: {r.get('error', '?')} | | | | | | | | | |")
                continue
            mem = r.get("memory", {})
            target = "" if r.get("target") is None else f" (<= {r['target']})"
            peak = _gib(mem.get("steady_above_base_kb")) if "steady_above_base_kb" in mem else (
                "error" if "error" in mem else "-")
            lines.append(
                f"| {name} | {r.get('passes') or '-'} | {r['step']['median_s']:.3f} | {speed._x(r.get('x_sft'))} | "
                f"{speed._x(r.get('x_limit'))}{target} | {speed._verdict(r.get('time_ok'))} | {peak} | "
                f"{speed._x(mem.get('x_sft_above_base'))} | {speed._verdict(r.get('memory_ok'))} | "
                f"{r['one_off'].get('total_s', 0):.1f} | "
                f"{100 * (r['step']['median_s'] + r['optimizer_median_s']) / 60:.1f} | {r.get('note', '')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}")
    p.add_argument("--methods", default=None, help="comma-separated subset of speed.py's main methods "
                                                   "(sft always added)")
    p.add_argument("--attn", default=None, help="comma-separated attention implementations (default sdpa, plus "
                                                "flash_attention_2 on CUDA when flash_attn is installed)")
    p.add_argument("--gc", default="off,on", help="gradient checkpointing: off, on or off,on")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--text-layers", type=int, default=None, help="override the decoder depth")
    p.add_argument("--vision-layers", type=int, default=None, help="override the vision-tower depth")
    p.add_argument("--steps", type=int, default=None, help="measured steps (default cuda 5, cpu 2)")
    p.add_argument("--warmup", type=int, default=1, help="minimum warm-up steps (at least one forget epoch)")
    p.add_argument("--batch-size", type=int, default=None, help="default cuda 4, cpu 1")
    p.add_argument("--forget-rows", type=int, default=None, help="forget (and retain) rows (default = batch size)")
    p.add_argument("--memory-steps", type=int, default=1)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--max_minutes", "--max-minutes", dest="max_minutes", type=float, default=None,
                   help="stop starting configurations after this many minutes (default cuda 7, cpu none)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    args = p.parse_args(argv)
    args.cpu_mode = args.device == "cpu"
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    for f in args.families:
        if f not in FAMILIES:
            p.error(f"unknown family {f!r}; choose from {', '.join(FAMILIES)}")
    main_methods = [m.name for m in speed.METHODS if m.group in ("baseline", "main")]
    args.methods = speed.chosen_methods(p, args.methods, main_methods)
    if args.attn is None:
        args.attn = ["sdpa"] + (["flash_attention_2"] if args.device == "cuda"
                                and importlib.util.find_spec("flash_attn") else [])
    else:
        args.attn = [a.strip() for a in args.attn.split(",") if a.strip()]
    args.gc = [g.strip() == "on" for g in args.gc.split(",") if g.strip()]
    args.steps = args.steps or (5 if args.device == "cuda" else 2)
    args.batch_size = args.batch_size or (4 if args.device == "cuda" else 1)
    args.forget_rows = args.forget_rows or args.batch_size
    args.threads = args.threads or (os.cpu_count() or 1)
    if args.max_minutes is None and args.device == "cuda":
        args.max_minutes = 7.0
    return args


def main(argv=None) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    speed._setup_worker(args.threads)
    if args.device == "cpu":
        speed._fixed_mmap_threshold()  # RSS follows live memory (see speed.py); costs a little step time
    methods, skipped = list(args.methods), []
    if "sgpvt" in methods and not speed.sgpvt_available():
        methods.remove("sgpvt")
        skipped.append("SGPVT: unlearn_trainer/trainers/sgpvt.py does not exist")
    args.methods = methods
    import importlib.metadata as md

    results = {"meta": {
        "command": " ".join(["python benchmarks/real_size.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
        "device": args.device, "cpu_mode": args.cpu_mode, "dtype": args.dtype, "threads": args.threads,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPUs",
        "torch": md.version("torch"), "transformers": md.version("transformers"), "peft": md.version("peft"),
        "lora": {"r": speed.LORA_R, "alpha": speed.LORA_ALPHA}, "memory_target": speed.MEMORY_TARGET,
        "families": {f: FAMILIES[f]["source"] for f in args.families},
    }, "skipped": skipped, "configurations": {}}
    t0 = time.perf_counter()
    configs = [(f, a, g) for f in args.families for a in args.attn for g in args.gc]
    built_key, built = None, None
    with tempfile.TemporaryDirectory(prefix="unlearn-realsize-") as workdir:
        for family, attn, gc_on in configs:
            key = f"{family}, {attn}, gradient checkpointing {'on' if gc_on else 'off'}"
            elapsed = (time.perf_counter() - t0) / 60
            if args.max_minutes is not None and elapsed >= args.max_minutes:
                results["skipped"].append(f"{key}: --max_minutes {args.max_minutes} reached ({elapsed:.1f} min)")
                print("skipped (time):", key, flush=True)
                continue
            print(f"[{key}] ...", flush=True)
            b = Build(family=family, device=args.device, dtype=args.dtype, attn=attn, cpu_mode=args.cpu_mode,
                      text_layers=args.text_layers, vision_layers=args.vision_layers)
            try:
                if built_key != (family, attn):
                    built_key, built = None, None  # the previous family's weights go before the next is built
                    gc.collect()
                    if args.device == "cuda":
                        torch.cuda.empty_cache()
                    t_build = time.perf_counter()
                    built = build_base(b)
                    built[2]["build_s"] = time.perf_counter() - t_build
                    built_key = (family, attn)
                res = run_configuration(b, gc_on, args, os.path.join(workdir, key.replace(" ", "_")), built)
                speed.analyse(res)
            except Exception as e:  # noqa: BLE001 - one broken family does not stop the others
                res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
            for n, r in res.get("methods", {}).items():
                if "error" in r:
                    print(f"  {n}: {r['error']}\n{r.get('traceback', '')}", flush=True)
            if "error" in res:
                print(f"  error: {res['error']}\n{res['traceback']}", flush=True)
            else:
                print(f"  done in {res['info']['wall_s']:.0f} s", flush=True)
            results["configurations"][key] = res
            _write(results, args, t0)
    return _write(results, args, t0, final=True)


def _write(results: dict, args, t0: float, final: bool = False) -> dict:
    """Write JSON + Markdown (after every configuration, so a killed run keeps what it had)."""
    results["meta"]["wall_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out) if args.out else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    stem = "real_size_cpu" if args.device == "cpu" else "real_size_gpu"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=speed._json_default) + "\n")
    md_text = markdown(results)
    (out / f"{stem}.md").write_text(md_text)
    if final:
        print(md_text)
        print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')} in {results['meta']['wall_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
