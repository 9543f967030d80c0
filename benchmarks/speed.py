#!/usr/bin/env python
"""Speed and memory of every unlearning trainer, as ratios against a plain fine-tuning (SFT) step.

    python benchmarks/speed.py                    # demo-world model + a ~40M-parameter LLaVA; writes results/
    python benchmarks/speed.py --quick            # a few steps per method: a smoke run
    python benchmarks/speed.py --models tiny      # the ~100K-parameter test model (no ToyWorld build)

What is measured, per model, for every method with the same model, batch size, forget batches and LoRA setup:

- Step time: ``time.perf_counter`` around ``trainer.training_step`` (forward + loss + backward; the optimizer step
  is timed apart), median over ``--steps`` steps after a warm-up that covers one epoch of the forget set (SCRUB:
  every batch in each phase), so per-sample caches (NPO, ViKeR, RMU, SCRUB) are full. Every method and SFT run in ONE process, interleaved step by step in
  a shuffled order each round, so machine load drifts hit all of them alike; torch threads are fixed.
  The limit of a method is (trainable forward+backward passes of its objective) x the SFT step.
- Peak memory: each (model, method) runs in a fresh process forked from a clean, pre-imported server
  (multiprocessing "forkserver": isolated like a new interpreter, without paying the imports each time). The
  process reads its resident-set high-water mark (``VmHWM`` in ``/proc/self/status``), reset through
  ``/proc/self/clear_refs`` after the warm-up, so the steady-state peak excludes one-off work; the peak of the
  whole process life (one-off work included) is reported too. Ratios are taken on the memory above the
  process's starting RSS (interpreter + libraries, identical for all), which is what grows with the model.
  glibc's mmap threshold is fixed at 64 KiB in these processes so that RSS follows live memory (reproducible).
- One-off costs: trainer construction (PUBG's o* generation, Saliency's Fisher pass inside it, timed apart),
  the reference-cache fill during the warm-up (time inside ``cached_reference``) and the first step.

Results: ``benchmarks/results/speed.json`` and ``speed.md`` (``--out`` elsewhere). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODELS = ("tiny", "demo", "large")
# Trainable LoRA rank of every configuration (SFT included): the paper setups of ViKeR / the examples.
LORA_R, LORA_ALPHA = 8, 16
LEARNING_RATE = 1e-5  # small: hundreds of GA steps must stay finite; speed does not depend on it
PUBG_MAX_NEW_TOKENS = 16  # o* length: the guidance pass then costs about what the forget pass costs


@dataclass(frozen=True)
class Method:
    """One benchmarked configuration."""

    name: str
    trainer: str  # key of _trainer_classes
    config: dict = field(default_factory=dict)
    passes: int | None = None  # trainable forward+backward passes of the objective (None: comparison only)
    target: float | None = None  # allowed factor over passes x SFT step
    group: str = "main"  # "baseline", "main", "cache" (reference recomputed each step), "k" (ViKeR k sweep),
    # "backward" (one backward of the summed loss instead of one per pass)
    retain: bool = False
    note: str = ""


METHODS = (
    Method("sft", "sft", passes=1, group="baseline", note="NLL on the forget batch (the reference step)"),
    Method("ga", "ga", {"variant": "ga"}, 1, 1.15),
    Method("ga_gd", "ga", {"variant": "ga_gd"}, 2, 1.15, retain=True, note="GA + retain NLL"),
    Method("npo", "npo", {}, 1, 1.15, note="reference log-probs cached"),
    Method("fttp", "fttp", {}, 1, 1.15),
    Method("viker", "viker", {"num_reference_images": 5}, 1, 1.15, note="k=5, R cached (top-128)"),
    Method("pubg", "pubg", {"guidance_max_new_tokens": PUBG_MAX_NEW_TOKENS}, 2, 1.15, note="forget + o* passes"),
    Method("saliency", "saliency", {}, 2, 1.15, retain=True, note="masked GA + retain NLL (Eq. 3)"),
    Method("sgpvt", "sgpvt", {}, 2, 1.30, note="2 passes + 1 teacher forward"),
    Method("simnpo", "simnpo", {}, 1, 1.15, note="no reference model"),
    Method("undial", "undial", {}, 1, 1.15, note="adjusted reference distributions cached (top-128)"),
    Method("idk_nll", "idk_nll", {}, 2, 1.15, retain=True, note="refusal NLL + retain NLL"),
    Method("idk_dpo", "idk_dpo", {}, 3, 1.15, retain=True,
           note="refusal (chosen) + forget answer (rejected) + retain NLL; image and question run once for both "
                "answers (shared-prompt cache); reference log-probs cached"),
    Method("rmu", "rmu", {}, 2, 1.15, retain=True,
           note="forget + retain passes to layer l; frozen retain activations cached"),
    Method("scrub", "scrub", {"max_cycles": None}, 1, 1.15, retain=True,
           note="1 pass (max: forget / min: retain, alternating); teacher cached (output-head inputs)"),
    Method("npo_recompute", "npo", {"cache_reference": False}, group="cache",
           note="reference log-probs recomputed every step"),
    Method("viker_recompute", "viker", {"num_reference_images": 5, "cache_reference": False}, group="cache",
           note="k=5 reference forwards every step"),
    Method("rmu_recompute", "rmu", {"cache_reference": False}, group="cache", retain=True,
           note="frozen forward to layer l every step"),
    Method("scrub_recompute", "scrub", {"max_cycles": None, "cache_reference": False}, group="cache", retain=True,
           note="teacher forward every step"),
    Method("ga_gd_sum", "ga", {"variant": "ga_gd", "backward_per_pass": False}, group="backward", retain=True,
           note="GA + retain NLL, one backward of the summed loss"),
    Method("pubg_sum", "pubg", {"guidance_max_new_tokens": PUBG_MAX_NEW_TOKENS, "backward_per_pass": False},
           group="backward", note="forget + o* passes, one backward of the summed loss"),
    Method("viker_k1", "viker", {"num_reference_images": 1}, 1, 1.15, group="k"),
    Method("viker_k2", "viker", {"num_reference_images": 2}, 1, 1.15, group="k"),
    Method("viker_k10", "viker", {"num_reference_images": 10}, 1, 1.15, group="k"),
)
MEMORY_TARGET = 1.15
CACHED_OF = {"npo_recompute": "npo", "viker_recompute": "viker", "rmu_recompute": "rmu",
             "scrub_recompute": "scrub"}
PER_PASS_OF = {"ga_gd_sum": "ga_gd", "pubg_sum": "pubg"}
K_SWEEP = (("viker_k1", 1), ("viker_k2", 2), ("viker", 5), ("viker_k10", 10))


@dataclass
class RunSpec:
    """What a worker process needs (picklable)."""

    model: str
    methods: list[str]
    steps: int
    warmup: int
    batch_size: int
    forget_rows: int
    threads: int
    workdir: str
    memory_steps: int = 3


# ----------------------------------------------------------------------------------------------------------------
# Worker side: torch and the package are imported inside the functions, so the orchestrating process stays light.
# ----------------------------------------------------------------------------------------------------------------
def _method(name: str) -> Method:
    return next(m for m in METHODS if m.name == name)


def sgpvt_available() -> bool:
    """Whether unlearn_trainer/trainers/sgpvt.py exists (SGPVT is benchmarked only then)."""
    spec = importlib.util.find_spec("unlearn_trainer")  # a top-level spec: found without importing torch
    return bool(spec and spec.submodule_search_locations) and any(
        (Path(p) / "trainers" / "sgpvt.py").is_file() for p in spec.submodule_search_locations)


def _sft_classes():
    from unlearn_trainer import losses
    from unlearn_trainer.trainers.base import UnlearnConfig, UnlearnTrainer

    class SFTTrainer(UnlearnTrainer):
        """Plain fine-tuning on the forget batch: the same plumbing as every method, one forward+backward."""

        method_name = "sft"

        def unlearning_loss(self, model, inputs):
            forget = inputs["forget"]
            nll = losses.nll_loss(self.forward_logits(model, forget), forget["labels"])
            return nll, {"nll": nll}

    return UnlearnConfig, SFTTrainer


def _trainer_classes(key: str):
    if key == "sft":
        return _sft_classes()
    if key == "sgpvt":
        import importlib

        module = importlib.import_module("unlearn_trainer.trainers.sgpvt")
        trainer = next(v for k, v in vars(module).items() if k.endswith("Trainer") and getattr(v, "method_name", "")
                       == "sgpvt")
        return trainer.config_class, trainer
    import unlearn_trainer.trainers as t

    names = {"ga": "GA", "npo": "NPO", "fttp": "FTTP", "viker": "ViKeR", "pubg": "PUBG", "saliency": "Saliency",
             "idk_nll": "IdkNLL", "idk_dpo": "IdkDPO", "rmu": "RMU", "scrub": "SCRUB", "simnpo": "SimNPO",
             "undial": "UNDIAL"}
    return getattr(t, names[key] + "Config"), getattr(t, names[key] + "Trainer")


def _large_corpus(world, extra_words: int = 3712):
    """The ToyWorld corpus plus filler words, for a ~4K vocabulary (output layer and softmax of realistic weight)."""
    return list(world.corpus()) + [" ".join(f"w{i:04d}" for i in range(extra_words))]


def load_data(name: str, forget_rows: int) -> dict:
    """Forget / retain rows (``forget_rows`` each) and distant images (ViKeR's reference pool, SGPVT's)."""
    if name == "tiny":
        from unlearn_trainer.testing import tiny_images, tiny_vqa_rows

        forget = tiny_vqa_rows(forget_rows)
        for r in forget:  # FTTP needs a concept in every forget answer: its last word
            r["concepts"] = [r["answer"].split()[-2]]
        return {"forget": forget, "retain": tiny_vqa_rows(forget_rows, seed=7), "images": tiny_images(12, seed=11)}
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose from {MODELS}.")
    from unlearn_trainer.toyworld import ToyWorld

    world = ToyWorld()
    splits = world.splits(0.10)
    return {"forget": splits["forget_train"][:forget_rows], "retain": splits["retain_train"][:forget_rows],
            "images": world.distant_images(12)}


def load_model(name: str):
    """``(model, processor)``: a fresh copy of the benchmarked model (seeded, identical in every process)."""
    if name == "tiny":
        from unlearn_trainer.testing import tiny_model_and_processor

        return tiny_model_and_processor("llava", seed=0)
    if name == "demo":
        from unlearn_trainer.toyworld.full_model import load_full_model

        return load_full_model(progress=False)
    if name == "large":
        from unlearn_trainer.testing import tiny_model_and_processor
        from unlearn_trainer.toyworld import ToyWorld

        world = ToyWorld()
        return tiny_model_and_processor(
            "llava", seed=0, image_size=32, patch_size=4, vision_hidden_size=256, vision_layers=4, hidden_size=512,
            intermediate_size=2048, num_layers=8, num_heads=8, num_kv_heads=8, corpus=_large_corpus(world),
            subword_words=world.name_words(),
        )
    raise ValueError(f"Unknown model {name!r}; choose from {MODELS}.")


class _OneOff:
    """Times named module functions (PUBG generation, the saliency mask) while a trainer is being built."""

    TARGETS = (("unlearn_trainer.trainers.pubg", "generate_guidance_answers", "pubg_generation_s"),
               ("unlearn_trainer.trainers.saliency", "compute_saliency_mask", "saliency_mask_s"))

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __enter__(self):
        import importlib

        self._saved = []
        for mod_name, fn_name, key in self.TARGETS:
            module = importlib.import_module(mod_name)
            original = getattr(module, fn_name)

            def timed(*a, _f=original, _k=key, **kw):
                t0 = time.perf_counter()
                try:
                    return _f(*a, **kw)
                finally:
                    self.seconds[_k] = self.seconds.get(_k, 0.0) + time.perf_counter() - t0

            setattr(module, fn_name, timed)
            self._saved.append((module, fn_name, original))
        return self

    def __exit__(self, *exc):
        for module, fn_name, original in self._saved:
            setattr(module, fn_name, original)


class Runner:
    """One built trainer and its pre-collated batches; ``step()`` runs and times one optimizer step."""

    def __init__(self, spec: RunSpec, method: Method, model, processor, data):
        import inspect

        import torch

        from unlearn_trainer.testing import lora_config_for

        self.method = method
        config_cls, trainer_cls = _trainer_classes(method.trainer)
        fields = getattr(config_cls, "__dataclass_fields__", {})
        # forget_loss_ceiling=20: the guard these runs always had (the configs now default to the papers' None)
        kwargs = dict(output_dir=os.path.join(spec.workdir, method.name), per_device_train_batch_size=spec.batch_size,
                      learning_rate=LEARNING_RATE, lr_scheduler_type="constant", max_steps=100_000, report_to="none",
                      save_strategy="no", disable_tqdm=True, logging_steps=100_000, seed=0,
                      dataloader_pin_memory=False, forget_loss_ceiling=20.0, **method.config)
        if "fisher_batch_size" in fields:
            kwargs["fisher_batch_size"] = spec.batch_size
        args = config_cls(**{k: v for k, v in kwargs.items() if k in fields})
        params = inspect.signature(trainer_cls.__init__).parameters
        extra = {}
        for p in params:  # method-specific inputs: reference images (ViKeR, SGPVT's distant images), preserved set
            if "image" in p and not p.endswith("_column"):
                extra[p] = data["images"]
            elif p == "preserve_dataset":
                extra[p] = data["retain"]
        torch.manual_seed(0)  # identical LoRA initialisation for every configuration
        t0 = time.perf_counter()
        with _OneOff() as one_off:
            self.trainer = trainer_cls(
                model=model, args=args, forget_dataset=data["forget"],
                retain_dataset=data["retain"] if method.retain else None, processing_class=processor,
                peft_config=lora_config_for(model, r=LORA_R, alpha=LORA_ALPHA), **extra,
            )
        self.construct_s = time.perf_counter() - t0
        self.one_off = dict(one_off.seconds)
        tr = self.trainer
        tr.create_optimizer_and_scheduler(num_training_steps=100_000)
        tr.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which this bypasses
        self.batches = list(tr.get_train_dataloader())  # one epoch, collated outside the timed region
        # warm-up: every batch once in every phase (SCRUB alternates max- and min-steps), so all caches are full
        cycle = getattr(args, "max_steps_per_cycle", 0) + getattr(args, "min_steps_per_cycle", 0)
        self.warmup_steps = len(self.batches) * max(1, cycle)
        self.i = 0
        self.ref_s = 0.0
        original = tr.cached_reference

        def timed_reference(*a, **kw):
            t = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                self.ref_s += time.perf_counter() - t

        tr.cached_reference = timed_reference
        self.trainable = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
        self.total_params = sum(p.numel() for p in tr.model.parameters())

    def step(self) -> tuple[float, float, float, float]:
        """``(training_step seconds, optimizer seconds, reference seconds, CPU seconds of the step)``."""
        tr = self.trainer
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        ref0 = self.ref_s
        c0, t0 = time.process_time(), time.perf_counter()
        tr.training_step(tr.model, batch)
        t1 = time.perf_counter()
        c1 = time.process_time()
        tr.optimizer.step()
        tr.lr_scheduler.step()
        tr.model.zero_grad(set_to_none=True)
        tr.state.global_step += 1
        return t1 - t0, time.perf_counter() - t1, self.ref_s - ref0, c1 - c0

    def batch_tokens(self) -> dict:
        """Mean sequence length (padded) of the batches' parts, e.g. forget / retain / guidance."""
        out = {}
        for part in ("forget", "retain", "guidance"):
            shapes = [b[part]["input_ids"].shape for b in self.batches if isinstance(b.get(part), dict)]
            if shapes:
                out[part] = round(sum(s[1] for s in shapes) / len(shapes), 1)
        return out


def _setup_worker(threads: int) -> None:
    import logging
    import warnings

    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("unlearn_trainer").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _fixed_mmap_threshold(nbytes: int = 64 * 1024) -> bool:
    """glibc: serve every allocation >= ``nbytes`` by mmap and return it to the OS on free (a fixed threshold, not
    glibc's adaptive one). RSS then tracks live memory: repeated runs of one configuration agree within ~1 MB instead
    of ~100 MB. Only the memory processes do this (it would slow the timed steps)."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, nbytes))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _peak_kb() -> int:
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _summary(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "p25_s": q[0], "p75_s": q[2], "mean_s": statistics.fmean(times),
            "min_s": min(times), "n": len(times)}


def interleaved_steps(runners: dict, n_warm: int, steps: int, out: dict, traceback_limit: int = 4):
    """Run ``n_warm`` warm-up then ``steps`` measured rounds; each round steps every runner once, in an order shuffled
    by a seeded RNG, so load drifts hit all methods alike. A runner that raises is reported in ``out`` and dropped.
    Returns ``(warm step times, warm-up reference seconds, measured {"step", "opt", "ref", "cpu"} lists, failed)``."""
    rng = random.Random(0)
    warm = {n: [] for n in runners}
    warm_ref = {n: 0.0 for n in runners}
    meas = {n: {"step": [], "opt": [], "ref": [], "cpu": []} for n in runners}
    failed = set()
    for phase in ["warm"] * n_warm + ["meas"] * steps:
        order = [n for n in runners if n not in failed]
        rng.shuffle(order)
        for n in order:
            try:
                step, opt, ref, cpu = runners[n].step()
            except Exception as e:  # noqa: BLE001 - a broken method is reported, the others still run
                failed.add(n)
                out[n] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=traceback_limit)}
                continue
            if phase == "warm":
                warm[n].append(step)
                warm_ref[n] += ref
            else:
                for k, v in zip(("step", "opt", "ref", "cpu"), (step, opt, ref, cpu)):
                    meas[n][k].append(v)
    return warm, warm_ref, meas, failed


def timing_worker(spec: RunSpec, conn) -> None:
    """All methods of one model in one process, interleaved step by step."""
    try:
        _setup_worker(spec.threads)
        runners, out = {}, {}
        data = load_data(spec.model, spec.forget_rows)
        model, processor = load_model(spec.model)
        info = {"total_parameters": sum(p.numel() for p in model.parameters())}
        Runner(spec, _method("sft"), model, processor, data)  # throwaway: lazy imports and first-use costs
        for name in spec.methods:
            model, processor = load_model(spec.model)
            try:
                runners[name] = Runner(spec, _method(name), model, processor, data)
            except Exception as e:  # noqa: BLE001 - a broken method is reported, the others still run
                out[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=4)}
        n_warm = max(spec.warmup, max((r.warmup_steps for r in runners.values()), default=1))
        load_start = os.getloadavg()
        warm, warm_ref, meas, failed = interleaved_steps(runners, n_warm, spec.steps, out)
        for n, r in runners.items():
            if n in failed:
                continue
            m = meas[n]
            s = _summary(m["step"])
            steady = s["median_s"]
            out[n] = {
                "step": s,
                "cpu_step": _summary(m["cpu"]),
                "optimizer_median_s": statistics.median(m["opt"]),
                "reference_per_step_s": statistics.fmean(m["ref"]),
                "cpu_per_wall": sum(m["cpu"]) / max(sum(m["step"]), 1e-12),
                "one_off": {
                    "construct_s": r.construct_s,
                    **r.one_off,
                    "first_step_s": warm[n][0],
                    "reference_fill_s": warm_ref[n],
                    "warmup_excess_s": max(0.0, sum(warm[n]) - len(warm[n]) * steady),
                    "warmup_steps": len(warm[n]),
                },
                "trainable_parameters": r.trainable,
                "tokens_per_row": r.batch_tokens(),
            }
            if hasattr(r.trainer, "reference_cache_nbytes"):
                out[n]["reference_cache_bytes"] = r.trainer.reference_cache_nbytes()
            if hasattr(r.trainer, "guidance_answers"):
                lens = [len(processor.tokenizer(g["answer"])["input_ids"]) for g in r.trainer.guidance_answers]
                out[n]["guidance_answer_tokens"] = statistics.fmean(lens)
        info.update({"forget_rows": spec.forget_rows, "batch_size": spec.batch_size, "warmup_steps": n_warm,
                     "steps": spec.steps, "threads": spec.threads, "loadavg_start": load_start,
                     "loadavg_end": os.getloadavg()})
        conn.send({"info": info, "methods": out})
    except Exception as e:  # noqa: BLE001
        conn.send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
    finally:
        conn.close()


def memory_worker(spec: RunSpec, conn) -> None:
    """One method of one model in a fresh process: RSS high-water marks (KiB)."""
    try:
        _setup_worker(spec.threads)
        fixed = _fixed_mmap_threshold()
        reset_ok = _reset_hwm()
        base = _status_kb("VmRSS")
        data = load_data(spec.model, spec.forget_rows)
        model, processor = load_model(spec.model)
        loaded = _status_kb("VmRSS")
        runner = Runner(spec, _method(spec.methods[0]), model, processor, data)
        del model
        after_construct = _peak_kb()
        for _ in range(max(spec.warmup, runner.warmup_steps)):
            runner.step()
        total_warm = _peak_kb()
        steady_reset = _reset_hwm()
        for _ in range(spec.memory_steps):
            runner.step()
        steady = _peak_kb()
        conn.send({"base_kb": base, "loaded_kb": loaded, "construct_peak_kb": after_construct,
                   "total_peak_kb": max(total_warm, steady), "steady_peak_kb": steady,
                   "hwm_reset": bool(reset_ok and steady_reset), "fixed_mmap_threshold": fixed,
                   "source": "VmHWM" if _status_kb("VmHWM") is not None else "ru_maxrss"})
    except Exception as e:  # noqa: BLE001
        conn.send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=4)})
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------------------------------
# Orchestration (no torch in this process)
# ----------------------------------------------------------------------------------------------------------------
def _context(threads: int):
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    # the server imports these once; every worker is forked from it (clean: no threads started, no model built)
    ctx.set_forkserver_preload(["torch", "transformers", "peft", "unlearn_trainer", "unlearn_trainer.trainers",
                                "unlearn_trainer.toyworld", "unlearn_trainer.testing"])
    return ctx


def _run(ctx, target, spec: RunSpec, timeout: float | None = None) -> dict:
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(spec, child))
    proc.start()
    child.close()
    result = None
    try:
        if parent.poll(timeout):
            result = parent.recv()
    except EOFError:
        result = None
    proc.join(60)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if result is None:
        result = {"error": f"worker exited with code {proc.exitcode} and no result"}
    return result


def _ratio(a, b):
    return a / b if a is not None and b else None


def analyse(model_result: dict) -> None:
    """Add ratios and verdicts to one model's results, in place."""
    methods = model_result["methods"]
    sft = methods.get("sft", {})
    sft_step = sft.get("step", {}).get("median_s")
    sft_mem = sft.get("memory", {})
    sft_above = (sft_mem["steady_peak_kb"] - sft_mem["base_kb"]) if "steady_peak_kb" in sft_mem else None
    for name, r in methods.items():
        m = _method(name)
        r["passes"], r["target"], r["group"], r["note"] = m.passes, m.target, m.group, m.note
        if "step" in r and sft_step:
            r["x_sft"] = r["step"]["median_s"] / sft_step
            r["x_sft_iqr"] = [r["step"]["p25_s"] / sft_step, r["step"]["p75_s"] / sft_step]
            oo = r["one_off"]
            oo["total_s"] = oo["construct_s"] + max(oo["warmup_excess_s"], oo["reference_fill_s"])
            oo["total_in_sft_steps"] = oo["total_s"] / sft_step
            sft_cpu = sft.get("cpu_step", {}).get("median_s")
            if sft_cpu and "cpu_step" in r:
                r["x_sft_cpu"] = r["cpu_step"]["median_s"] / sft_cpu
            if m.passes:
                r["x_limit"] = r["x_sft"] / m.passes
                if "x_sft_cpu" in r:
                    r["x_limit_cpu"] = r["x_sft_cpu"] / m.passes
                if m.target:
                    r["time_ok"] = r["x_limit"] <= m.target
        mem = r.get("memory", {})
        if "steady_peak_kb" in mem and sft_above:
            mem["steady_above_base_kb"] = mem["steady_peak_kb"] - mem["base_kb"]
            mem["x_sft_above_base"] = mem["steady_above_base_kb"] / sft_above
            mem["x_sft_absolute"] = mem["steady_peak_kb"] / sft_mem["steady_peak_kb"]
            mem["x_sft_total_above_base"] = _ratio(mem["total_peak_kb"] - mem["base_kb"],
                                                   sft_mem["total_peak_kb"] - sft_mem["base_kb"])
            if name != "sft":
                r["memory_ok"] = mem["x_sft_above_base"] <= MEMORY_TARGET
    for name, cached in CACHED_OF.items():
        if "step" in methods.get(name, {}) and "step" in methods.get(cached, {}):
            methods[name]["x_cached"] = methods[name]["step"]["median_s"] / methods[cached]["step"]["median_s"]


def _ms(s):
    return "-" if s is None else f"{1000 * s:.1f}"


def _x(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}x"


def _mb(kb):
    return "-" if kb is None else f"{kb / 1024:.0f}"


def _verdict(ok):
    return "-" if ok is None else ("met" if ok else "**missed**")


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = ["# Speed and memory of the unlearning trainers", "",
             f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}, {meta['cpus']} CPUs, torch "
             f"{meta.get('torch', '?')}, {meta['threads']} torch thread(s)). Load average at start / end: "
             f"{meta['loadavg_start']} / {meta['loadavg_end']}.", "",
             "Step: median `training_step` time (forward + loss + backward) after warm-up; x SFT: against a plain "
             "fine-tuning step (NLL on the same forget batch, same model and LoRA) timed in the same process, "
             "interleaved step by step. Limit: trainable forward+backward passes x SFT step; x limit = x SFT / passes "
             "(targets: 1.15, SGPVT 1.3); the same ratio on the process's CPU time per step is less sensitive to other "
             f"load on the machine (with 1 thread). Memory: steady-state peak RSS above the process's starting RSS, in a fresh "
             f"process per configuration; x SFT target {MEMORY_TARGET}. One-off: trainer construction (o* generation, "
             "Fisher pass) + warm-up cost (cache fill, or warm-up time beyond steady-state steps if larger), in seconds "
             "and in SFT steps.", ""]
    for s in results.get("skipped", {}).values():
        lines += [f"- Skipped: {s}"]
    if results.get("skipped"):
        lines.append("")
    for model, mr in results["models"].items():
        info = mr.get("info", {})
        lines += [f"## {model}", ""]
        if "error" in mr:
            lines += [f"Error: {mr['error']}", ""]
            continue
        lines += [f"{info.get('total_parameters', 0) / 1e6:.2f} M parameters, LoRA r={LORA_R} on the language model "
                  f"({mr['methods'].get('sft', {}).get('trainable_parameters', 0) / 1e6:.3f} M trainable), batch "
                  f"{info.get('batch_size')}, {info.get('forget_rows')} forget rows, {info.get('warmup_steps')} warm-up "
                  f"+ {info.get('steps')} measured steps per method; forget sequence length "
                  f"{mr['methods'].get('sft', {}).get('tokens_per_row', {}).get('forget', '?')} tokens. SFT step "
                  f"{_ms(mr['methods'].get('sft', {}).get('step', {}).get('median_s'))} ms. CPU/wall in measured steps "
                  f"(SFT): {mr['methods'].get('sft', {}).get('cpu_per_wall', 0):.2f} (1.00 x threads = no contention).",
                  ""]
        lines += ["| method | passes | step ms [IQR] | x SFT | x limit | x limit, CPU time | time target "
                  "| peak MB above base (abs.) | x SFT | memory target | one-off s "
                  "| one-off in SFT steps | note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in mr["methods"].items():
            if r.get("group") not in ("baseline", "main", None) and name != "sft":
                continue
            lines.append(_row(name, r))
        verdicts = [(n, r) for n, r in mr["methods"].items() if r.get("group") in ("main", "k")]
        time_missed = [n for n, r in verdicts if r.get("time_ok") is False]
        mem_missed = [n for n, r in verdicts if r.get("memory_ok") is False]
        lines += ["", f"Time target met by {sum(r.get('time_ok') is True for _, r in verdicts)} of "
                      f"{sum('time_ok' in r for _, r in verdicts)} configurations"
                      + (f" (missed: {', '.join(time_missed)})" if time_missed else "")
                      + f"; memory target by {sum(r.get('memory_ok') is True for _, r in verdicts)} of "
                      f"{sum('memory_ok' in r for _, r in verdicts)}"
                      + (f" (missed: {', '.join(mem_missed)})." if mem_missed else ".")]
        cache_rows = [(n, c) for n, c in CACHED_OF.items() if n in mr["methods"] and c in mr["methods"]]
        if cache_rows:
            lines += ["", "Reference cached vs recomputed every step (`cache_reference=False`):", "",
                      "| method | cached step ms | recomputed step ms | recomputed / cached | reference s per step "
                      "(recomputed) | x SFT (recomputed) |", "|---|---|---|---|---|---|"]
            for n, c in cache_rows:
                rn, rc = mr["methods"][n], mr["methods"][c]
                lines.append(f"| {c} | {_ms(rc.get('step', {}).get('median_s'))} | "
                             f"{_ms(rn.get('step', {}).get('median_s'))} | {_x(rn.get('x_cached'))} | "
                             f"{_ms(rn.get('reference_per_step_s'))} ms | {_x(rn.get('x_sft'))} |")
        sum_rows = [(n, p) for n, p in PER_PASS_OF.items() if n in mr["methods"] and p in mr["methods"]]
        if sum_rows:
            lines += ["", "One backward per trainable pass (default, `backward_per_pass=True`) vs one backward of the "
                      "summed loss (`backward_per_pass=False`, both passes' activations alive at once):", "",
                      "| method | per-pass step ms | summed step ms | per-pass peak MB above base (x SFT) "
                      "| summed peak MB above base (x SFT) |", "|---|---|---|---|---|"]
            for n, p in sum_rows:
                rs, rp = mr["methods"][n], mr["methods"][p]
                ms, mp = rs.get("memory", {}), rp.get("memory", {})
                lines.append(f"| {p} | {_ms(rp.get('step', {}).get('median_s'))} | "
                             f"{_ms(rs.get('step', {}).get('median_s'))} | "
                             f"{_mb(mp.get('steady_above_base_kb'))} ({_x(mp.get('x_sft_above_base'))}) | "
                             f"{_mb(ms.get('steady_above_base_kb'))} ({_x(ms.get('x_sft_above_base'))}) |")
        k_rows = [(n, k) for n, k in K_SWEEP if n in mr["methods"]]
        if k_rows:
            lines += ["", "ViKeR as k (`num_reference_images`) grows:", "",
                      "| k | step ms | x SFT | x limit | reference fill s | one-off s | cache bytes | peak MB above base |",
                      "|---|---|---|---|---|---|---|---|"]
            for n, k in k_rows:
                r = mr["methods"][n]
                if "step" not in r:
                    lines.append(f"| {k} | error: {r.get('error', '?')} | | | | | | |")
                    continue
                oo = r["one_off"]
                lines.append(f"| {k} | {_ms(r['step']['median_s'])} | {_x(r.get('x_sft'))} | {_x(r.get('x_limit'))} | "
                             f"{oo['reference_fill_s']:.2f} | {oo.get('total_s', 0):.2f} | "
                             f"{r.get('reference_cache_bytes', '-')} | "
                             f"{_mb(r.get('memory', {}).get('steady_above_base_kb'))} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _row(name: str, r: dict) -> str:
    if "step" not in r:
        return f"| {name} | {r.get('passes') or '-'} | error: {r.get('error', '?')} | | | | | | | | | | |"
    s, mem, oo = r["step"], r.get("memory", {}), r["one_off"]
    parts = [f"construct {oo['construct_s']:.2f}"]
    parts += [f"{k[:-2].replace('_', ' ')} {v:.2f}" for k, v in oo.items() if k in ("pubg_generation_s", "saliency_mask_s")]
    parts.append(f"warm-up {max(oo['warmup_excess_s'], oo['reference_fill_s']):.2f}")
    one_off = f"{oo.get('total_s', 0):.2f} ({', '.join(parts)})"
    above = mem.get("steady_above_base_kb")
    mem_cell = f"{_mb(above)} ({_mb(mem.get('steady_peak_kb'))})" if above is not None else (
        f"error: {mem['error']}" if "error" in mem else "-")
    target = "" if r.get("target") is None else f" (<= {r['target']})"
    tokens = r.get("tokens_per_row", {})
    note = r.get("note", "") + (f" (tokens: {', '.join(f'{k} {v:g}' for k, v in tokens.items())})"
                                if len(tokens) > 1 else "")
    return (f"| {name} | {r.get('passes') or '-'} | {_ms(s['median_s'])} [{_ms(s['p25_s'])}-{_ms(s['p75_s'])}] | "
            f"{_x(r.get('x_sft'))} | {_x(r.get('x_limit'))}{target} | {_x(r.get('x_limit_cpu'))} | "
            f"{_verdict(r.get('time_ok'))} | {mem_cell} | "
            f"{_x(mem.get('x_sft_above_base'))} | {_verdict(r.get('memory_ok'))} | {one_off} | "
            f"{oo.get('total_in_sft_steps', 0):.1f} | {note} |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="demo,large", help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--quick", action="store_true", help="smoke mode: 3 measured steps, 1 memory step")
    p.add_argument("--steps", type=int, default=None, help="measured steps per method (default 20; quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="minimum warm-up steps (default 2; at least one epoch)")
    p.add_argument("--batch-size", type=int, default=None, help="default 8 (tiny: 2)")
    p.add_argument("--forget-rows", type=int, default=None, help="forget (and retain) rows used (default 16; tiny 4)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads in every worker (default 1)")
    p.add_argument("--methods", default=None, help="comma-separated subset (sft is always added)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory processes")
    p.add_argument("--out", default=str(RESULTS_DIR), help="output folder for speed.json and speed.md")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    if args.steps is None:
        args.steps = 3 if args.quick else 20
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    args.methods = chosen_methods(p, args.methods, [m.name for m in METHODS])
    return args


def chosen_methods(parser, methods: str | None, known: list[str]) -> list[str]:
    """The methods of a comma-separated ``--methods`` (all ``known`` ones if empty), in ``known``'s order, SFT first
    (every ratio is to SFT); an unknown name is a parser error."""
    if not methods:
        return known
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in chosen if m not in known]
    if bad:
        parser.error(f"unknown method(s) {bad}; choose from {', '.join(known)}")
    return ["sft"] + [m for m in known if m in chosen and m != "sft"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    methods = list(args.methods)
    skipped = {}
    if "sgpvt" in methods and not sgpvt_available():
        methods.remove("sgpvt")
        skipped["sgpvt"] = "SGPVT: unlearn_trainer/trainers/sgpvt.py does not exist yet, not benchmarked."
        print("note:", skipped["sgpvt"], flush=True)
    ctx = _context(args.threads)
    results = {"meta": {
        "command": " ".join(["python benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()], "quick": args.quick,
        "lora": {"r": LORA_R, "alpha": LORA_ALPHA}, "learning_rate": LEARNING_RATE,
        "memory_target": MEMORY_TARGET,
    }, "skipped": skipped, "models": {}}
    try:
        import importlib.metadata as md

        results["meta"]["torch"] = md.version("torch")
        results["meta"]["transformers"] = md.version("transformers")
    except Exception:  # noqa: BLE001
        pass
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unlearn-speed-") as workdir:
        for model in args.models:
            tiny = model == "tiny"
            spec = RunSpec(model=model, methods=methods, steps=args.steps, warmup=args.warmup,
                           batch_size=args.batch_size or (2 if tiny else 8),
                           forget_rows=args.forget_rows or (4 if tiny else 16), threads=args.threads,
                           workdir=os.path.join(workdir, model), memory_steps=1 if args.quick else 3)
            print(f"[{model}] timing {len(methods)} configurations, interleaved ...", flush=True)
            t0 = time.perf_counter()
            res = _run(ctx, timing_worker, spec)
            print(f"[{model}] timing done in {time.perf_counter() - t0:.0f} s", flush=True)
            if "error" in res:
                print(f"[{model}] error: {res['error']}\n{res.get('traceback', '')}", flush=True)
                results["models"][model] = res
                continue
            if not args.no_memory:
                for name in methods:
                    if "error" in res["methods"].get(name, {}):
                        continue
                    t0 = time.perf_counter()
                    one = RunSpec(**{**asdict(spec), "methods": [name]})
                    mem = _run(ctx, memory_worker, one)
                    res["methods"].setdefault(name, {})["memory"] = mem
                    status = mem.get("error") or f"steady peak {mem['steady_peak_kb'] / 1024:.0f} MB"
                    print(f"[{model}] memory {name}: {status} ({time.perf_counter() - t0:.0f} s)", flush=True)
            analyse(res)
            results["models"][model] = res
    results["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["meta"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    md_text = markdown(results)
    (out / "speed.md").write_text(md_text)
    print(md_text)
    print(f"wrote {out / 'speed.json'} and {out / 'speed.md'} in {results['meta']['wall_s']:.0f} s")
    return results


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


if __name__ == "__main__":
    main()
