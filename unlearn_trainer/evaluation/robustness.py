"""Proof-of-forgetting probes: does what looks forgotten come back, or show, under pressure?

:func:`run_probes` runs, on any model + processor, the probes of :data:`PROBES` on the rows a :class:`ProbeData`
names, and returns flat, JSON-able numbers per probe:

- ``mia``: membership-inference AUC per attack, forget rows (members) vs rows the model never saw (non-members);
  with a retrained model also its AUC and MUSE's PrivLeak per attack, in percent (``privleak``: the Min-K% attack,
  MUSE's headline; 0 is ideal, negative = the forget rows are still recognised, positive = over-unlearned).
- ``paraphrase`` / ``shift``: name recall (and attribute accuracy) on reworded questions / changed images, forget
  and retain.
- ``mc``: multiple-choice accuracy by letter (the first-letter rule, as MLLMU-Bench scores) and by option
  log-likelihood, forget and retain.
- ``forget_quality``: TOFU's forget quality, the KS-test p-value between the truth ratios of the model and of a
  retrained model on the forget rows (needs ``retrained``).
- ``relearning``: recall on held-out forget rows after N fine-tuning steps on a few forget rows and unrelated retain
  rows, for the model and (the honest baseline: it learns too) the retrained model under the same attack.
- ``quantization``: forget/retain recall after 8- and 4-bit quantization (bitsandbytes).

A probe whose rows are missing is skipped with a note (``{"skipped": why}``), never a crash. Nothing here logs row
text: only probe names, counts and numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .._progress import progress_bar

__all__ = ["PROBES", "CHEAP_PROBES", "EXPENSIVE_PROBES", "NO_RETRAINED", "ProbeData", "ProbeResultCache", "run_probes",
           "robustness_table", "flat_metrics", "parse_probes"]

logger = logging.getLogger(__name__)

PROBES = ("mia", "paraphrase", "shift", "mc", "forget_quality", "relearning", "quantization")
#: Run by default by the evaluation callback: forward passes and short generations only.
CHEAP_PROBES = ("mia", "paraphrase", "mc")
#: Fine-tuning / quantizing a copy of the model.
EXPENSIVE_PROBES = ("relearning", "quantization")
#: Probes that compare with a model trained without the forget set.
NEEDS_RETRAINED = ("forget_quality",)
NO_RETRAINED = "no retrained model: pass --retrained_model (ToyWorld builds one)"

#: Per-split metrics a probe reports (those the split has).
REPORTED = ("name_recall", "attribute_accuracy", "mc_letter_acc", "mc_loglik_acc")


def parse_probes(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"cheap"`` (:data:`CHEAP_PROBES`), ``"all"``, ``"none"`` or a comma list of :data:`PROBES` names."""
    if value is None:
        return ()
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v and v.strip()]
    out: list[str] = []
    for name in names:
        expanded = {"cheap": CHEAP_PROBES, "all": PROBES, "none": ()}.get(name.lower(), (name,))
        for probe in expanded:
            if probe not in PROBES:
                raise ValueError(f"Unknown probe {probe!r} in --probes {value!r}; choose from {', '.join(PROBES)} "
                                 f"or 'cheap', 'all', 'none'.")
            if probe not in out:
                out.append(probe)
    return tuple(out)


def spread_rows(rows: Sequence[dict] | None, n: int | None) -> list[dict] | None:
    """At most ``n`` rows, evenly spaced over ``rows`` (so a cap still covers every identity / kind)."""
    if rows is None:
        return None
    rows = list(rows)
    if not n or len(rows) <= n:
        return rows
    return [rows[(i * len(rows)) // n] for i in range(n)]


def balance_retain(splits: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Each ``*retain`` split spread to as many rows as its ``*forget`` twin (ToyWorld's retain people outnumber
    the forgotten ten to one; the probe compares the two, it does not need every retain row)."""
    out = dict(splits)
    for name, rows in splits.items():
        twin = splits.get(name.replace("retain", "forget"))
        if "retain" in name and twin:
            out[name] = spread_rows(rows, len(twin))
    return out


@dataclass
class ProbeData:
    """Which rows each probe uses. A probe whose rows are ``None`` / empty is skipped with a note.

    - ``members`` / ``nonmembers``: MIA rows the model was trained on (the forget rows) / never saw.
    - ``paraphrase``: ``{"forget": rows, "retain": rows}`` with reworded questions.
    - ``shift``: ``{"<shift>_forget": rows, "<shift>_retain": rows}`` with changed images.
    - ``mc``: ``{"forget": rows, "retain": rows}`` with ``options`` and ``answer_letter``.
    - ``relearn_attack``: the rows the relearning attack fine-tunes on ((a) a few forget rows: one view per
      forgotten person or the text-only QA, plus (b) unrelated retain rows); ``relearn_eval``: ``{split: rows}`` it
      is scored on (the *held-out* forget rows, never in the attack).
    - ``truth_ratio_rows``: forget rows with ``perturbed_answers`` (and ``paraphrased_answer``, else ``answer``)
      for TOFU's truth ratio (forget quality).
    - ``quantization``: ``{"forget": rows, "retain": rows}`` scored after quantization.
    - ``notes``: why a probe has no rows (shown instead of the generic note).
    """

    members: list[dict] | None = None
    nonmembers: list[dict] | None = None
    paraphrase: dict[str, list[dict]] = field(default_factory=dict)
    shift: dict[str, list[dict]] = field(default_factory=dict)
    mc: dict[str, list[dict]] = field(default_factory=dict)
    relearn_attack: list[dict] | None = None
    relearn_eval: dict[str, list[dict]] = field(default_factory=dict)
    truth_ratio_rows: list[dict] | None = None
    quantization: dict[str, list[dict]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def capped(self, max_rows: int | None) -> ProbeData:
        """A copy with at most ``max_rows`` rows per list (evenly spaced); the attack rows are kept whole."""
        if not max_rows:
            return self

        def cap(value):
            if isinstance(value, dict):
                return {k: spread_rows(v, max_rows) for k, v in value.items()}
            return spread_rows(value, max_rows)

        return dataclasses.replace(
            self, members=cap(self.members), nonmembers=cap(self.nonmembers), paraphrase=cap(self.paraphrase),
            shift=cap(self.shift), mc=cap(self.mc), relearn_eval=cap(self.relearn_eval),
            truth_ratio_rows=cap(self.truth_ratio_rows), quantization=cap(self.quantization))

    @classmethod
    def from_rows(cls, forget: Sequence[dict], retain: Sequence[dict] | None = None,
                  nonmembers: Sequence[dict] | None = None, splits: Mapping[str, Sequence[dict]] | None = None,
                  max_rows: int | None = None) -> ProbeData:
        """Probe rows of any dataset from what it has: ``forget`` (members; every other open-answer row attacks in
        the relearning probe, the rest are held out and scored), ``retain``, ``nonmembers`` (rows the model never saw; without them no MIA), and named
        ``splits``: ``paraphrase_forget`` / ``paraphrase_retain``, ``shift_<t>_forget`` / ``shift_<t>_retain``,
        ``mc_forget`` / ``mc_retain`` (else the forget / retain rows with ``options``)."""
        forget = [dict(r) for r in forget]
        retain = None if retain is None else [dict(r) for r in retain]
        splits = dict(splits or {})
        notes = {}
        open_forget = [r for r in forget if not r.get("options")]
        mc = {}
        for part, rows in (("forget", forget), ("retain", retain)):
            named = splits.get(f"mc_{part}")
            found = list(named) if named else [r for r in rows or [] if r.get("options") and r.get("answer_letter")]
            if found:
                mc[part] = found
        paraphrase = {p: list(splits[f"paraphrase_{p}"]) for p in ("forget", "retain") if splits.get(f"paraphrase_{p}")}
        shift = {k.removeprefix("shift_"): list(v) for k, v in splits.items() if k.startswith("shift_") and v}
        if not paraphrase:
            notes["paraphrase"] = "no paraphrase_forget / paraphrase_retain split in the dataset"
        if not shift:
            notes["shift"] = "no shift_<t>_forget / shift_<t>_retain split in the dataset"
        if not nonmembers:
            notes["mia"] = "no never-seen rows (non-members) for membership inference"
        attack, heldout = None, {}
        if len(open_forget) >= 2:  # every other forget row attacks, the rest are held out and scored
            attack = open_forget[::2] + spread_rows(retain or [], len(open_forget[::2]))
            heldout = {"forget_heldout": open_forget[1::2]}
        else:
            notes["relearning"] = "fewer than 2 open-answer forget rows: nothing to attack with and hold out"
        truth = [r for r in forget if r.get("perturbed_answers") and not r.get("options")]
        if not truth:
            notes["forget_quality"] = "no forget rows with perturbed_answers (truth ratio)"
        quant = {"forget": open_forget} if open_forget else {}
        if retain:
            quant["retain"] = [r for r in retain if not r.get("options")]
        data = cls(members=open_forget or None, nonmembers=list(nonmembers) if nonmembers else None,
                   paraphrase=paraphrase, shift=shift, mc=mc, relearn_attack=attack, relearn_eval=heldout,
                   truth_ratio_rows=truth or None, quantization=quant, notes=notes)
        return data.capped(max_rows)


class ProbeResultCache(dict):
    """``run_probes``'s ``retrained_cache`` kept in a JSON file: the retrained model's numbers (its MIA AUCs, truth
    ratios, its recovery under the relearning attack) depend only on that model and the probe rows, so a run whose
    retrained model, rows and settings are the same as an earlier run's reads them instead of recomputing them
    (the quality benchmark probes 3 seeds x 13 methods against one retrained model). The file name carries a digest
    of the rows and settings (:meth:`for_data`); a change of either is another file. Numbers only, never text."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = os.fspath(path)
        try:
            with open(self.path) as f:
                self.update(json.load(f))
        except (OSError, ValueError):  # missing or damaged: recomputed and rewritten
            pass

    @classmethod
    def for_data(cls, folder: str | os.PathLike, data: ProbeData, **settings) -> ProbeResultCache:
        """The cache file in ``folder`` for these probe rows (their ids, in order) and ``settings``."""
        ids = {name: _row_ids(getattr(data, name)) for name in ("members", "nonmembers", "truth_ratio_rows",
                                                                "relearn_attack", "relearn_eval")}
        blob = json.dumps({"rows": ids, "settings": settings}, sort_keys=True, default=str).encode()
        return cls(os.path.join(os.fspath(folder), f"probe_cache-{hashlib.sha256(blob).hexdigest()[:16]}.json"))

    @staticmethod
    def _key(key) -> str:
        """JSON object keys are strings: a tuple key (the relearning settings) is stored as its JSON text."""
        return key if isinstance(key, str) else json.dumps(key, default=str)

    def __contains__(self, key) -> bool:
        return super().__contains__(self._key(key))

    def __getitem__(self, key):
        return super().__getitem__(self._key(key))

    def get(self, key, default=None):
        return super().get(self._key(key), default)

    def __setitem__(self, key, value) -> None:
        super().__setitem__(self._key(key), value)
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".partial")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(dict(self), f)
            os.replace(tmp, self.path)  # atomic: a reader never sees half a file
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def _row_ids(rows) -> list:
    """Per row, a digest of its id and texts (a changed question or perturbed answer is another cache file); the
    digest only names the file, no text is stored."""
    if isinstance(rows, Mapping):
        return {k: _row_ids(v) for k, v in sorted(rows.items())}
    keys = ("id", "question", "answer", "paraphrased_answer", "perturbed_answers")
    return [hashlib.sha256(json.dumps([r.get(k) for k in keys], default=str).encode()).hexdigest()[:16]
            for r in rows or []]


# -- running -----------------------------------------------------------------------------------------------------
def flat_metrics(split_metrics: Mapping[str, Mapping[str, float]], prefix: str = "",
                 keep: Sequence[str] = REPORTED) -> dict[str, float]:
    """``{split: {metric: v}}`` -> ``{"<prefix><split>_<metric>": v}`` for the metrics in ``keep`` (a split with
    none of them: its headline metric, e.g. ROUGE-L for rows without names)."""
    from .evaluator import headline_metric

    out = {}
    for split, m in split_metrics.items():
        names = [k for k in m if k in keep] or [headline_metric(m)]
        out.update({f"{prefix}{split}_{k}": float(m[k]) for k in names
                    if isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)})
    return out


def _rows_present(value) -> bool:
    if isinstance(value, dict):
        return any(value.values())
    return bool(value)


def _headline_attack(attacks: Sequence[str]) -> str | None:
    """MUSE's headline attack, Min-K% (not Min-K%++); else the first."""
    plain = [a for a in attacks if "min" in a.lower() and not any(s in a.lower() for s in ("++", "plus", "pp"))]
    return plain[0] if plain else (attacks[0] if attacks else None)


def run_probes(
    model,
    processor,
    data: ProbeData,
    probes: Sequence[str] = CHEAP_PROBES,
    retrained: tuple | None = None,
    is_well_formed: Callable[[str], bool] | None = None,
    relearn_steps: Sequence[int] = (0, 5, 10, 20),
    progress: bool = True,
    max_eval_rows: int | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    label: str = "",
    retrained_cache: dict | None = None,
    relearn_kwargs: dict | None = None,
    mia_kwargs: dict | None = None,
) -> dict[str, dict]:
    """Run ``probes`` (names from :data:`PROBES`) on ``model``; returns ``{probe: {metric: number}}``, or
    ``{probe: {"skipped": why}}`` for a probe that cannot run (rows missing, no ``retrained`` model).

    ``retrained``: ``(model, processor)`` of a model trained without the forget set (forget quality, PrivLeak,
    the relearning baseline). ``retrained_cache``: a dict reused across calls for the retrained model's numbers,
    which do not change (the callback probes before and after training). ``max_eval_rows`` caps every row list.
    """
    probes = parse_probes(probes)
    data = data.capped(max_eval_rows)
    cache = retrained_cache if retrained_cache is not None else {}
    gen = dict(max_new_tokens=max_new_tokens, batch_size=batch_size)
    tag = f"robustness{f' ({label})' if label else ''}"
    results: dict[str, dict] = {}
    bar = progress_bar(list(probes), desc=tag, enabled=progress, unit="probe")
    for probe in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(probe)
        runner = _RUNNERS[probe]
        needs = _needs_rows(probe, data)
        if needs:
            results[probe] = {"skipped": data.notes.get(probe, needs)}
            continue
        if probe in NEEDS_RETRAINED and retrained is None:
            results[probe] = {"skipped": NO_RETRAINED}
            continue
        ctx = _Context(model, processor, data, retrained, is_well_formed, tuple(relearn_steps), progress,
                       f"{tag} {probe}", gen, cache, dict(relearn_kwargs or {}), dict(mia_kwargs or {}))
        results[probe] = runner(ctx)
        logger.info("%s: %s done (%d numbers)", tag, probe, sum(isinstance(v, float) for v in results[probe].values()))
    return results


@dataclass
class _Context:
    model: object
    processor: object
    data: ProbeData
    retrained: tuple | None
    is_well_formed: Callable | None
    relearn_steps: tuple
    progress: bool
    desc: str
    gen: dict
    cache: dict
    relearn_kwargs: dict
    mia_kwargs: dict


def _needs_rows(probe: str, data: ProbeData) -> str | None:
    """Why ``probe`` cannot run on ``data`` (None: it can)."""
    if probe == "mia":
        if not data.members or not data.nonmembers:
            return "no forget rows (members) or no never-seen rows (non-members)"
    elif probe == "relearning":
        if not data.relearn_attack or not _rows_present(data.relearn_eval):
            return "no relearning attack rows or no held-out forget rows"
    elif probe == "forget_quality":
        if not data.truth_ratio_rows:
            return "no forget rows with perturbed_answers"
    elif not _rows_present(getattr(data, probe)):
        return f"no {probe} rows"
    return None


def _evaluate(ctx: _Context, model, splits: Mapping[str, Sequence[dict]], desc: str) -> dict[str, dict]:
    from .evaluator import evaluate_splits

    splits = {k: v for k, v in splits.items() if v}
    metrics, _answers = evaluate_splits(model, ctx.processor, splits, ctx.is_well_formed, progress=ctx.progress,
                                        desc=desc, **ctx.gen)  # answers are dropped: they may name the forgotten
    return metrics


def _probe_mia(ctx: _Context) -> dict:
    from .mia import MIA_ATTACKS, mia_auc, privleak

    kw = {"attacks": MIA_ATTACKS, "batch_size": ctx.gen["batch_size"], "progress": ctx.progress, **ctx.mia_kwargs}
    aucs = mia_auc(ctx.model, ctx.processor, ctx.data.members, ctx.data.nonmembers, **kw)
    out = {"n_members": float(len(ctx.data.members)), "n_nonmembers": float(len(ctx.data.nonmembers))}
    out.update({f"auc_{a}": float(v) for a, v in aucs.items()})
    if ctx.retrained is None:
        out["note"] = f"PrivLeak skipped: {NO_RETRAINED}"
        return out
    if "mia" not in ctx.cache:
        model, processor = ctx.retrained
        ctx.cache["mia"] = {a: float(v) for a, v in
                            mia_auc(model, processor, ctx.data.members, ctx.data.nonmembers, **kw).items()}
    reference = ctx.cache["mia"]
    out.update({f"retrained_auc_{a}": v for a, v in reference.items()})
    leaks = {}
    for a in aucs:
        if a not in reference:
            continue
        if reference[a] >= 1.0:  # PrivLeak normalises by 1 - the retrained AUC
            out[f"privleak_{a}_note"] = "undefined: the retrained model's AUC is 1.0 (check it lacks the forget rows)"
            continue
        leaks[a] = float(privleak(aucs[a], reference[a]))
    out.update({f"privleak_{a}": v for a, v in leaks.items()})
    headline = _headline_attack(list(leaks))
    if headline is not None:
        out["privleak"] = leaks[headline]
    return out


def _probe_splits(ctx: _Context, attr: str) -> dict:
    metrics = _evaluate(ctx, ctx.model, getattr(ctx.data, attr), ctx.desc)
    out = flat_metrics(metrics)
    out.update({f"n_{k}": float(m["n"]) for k, m in metrics.items() if "n" in m})
    return out


def _probe_mc(ctx: _Context) -> dict:
    metrics = _evaluate(ctx, ctx.model, ctx.data.mc, ctx.desc)
    out = {}
    for split, m in metrics.items():
        if "mc_letter_acc" in m:
            out[f"{split}_letter_acc"] = float(m["mc_letter_acc"])
            out[f"{split}_loglik_acc"] = float(m["mc_loglik_acc"])
            out[f"n_{split}"] = float(m["n"])
    if not out:
        out["skipped"] = "no rows with options and answer_letter"
    return out


def _probe_forget_quality(ctx: _Context) -> dict:
    from .forget_quality import forget_quality, truth_ratios

    rows = ctx.data.truth_ratio_rows
    ours = truth_ratios(ctx.model, ctx.processor, rows, batch_size=ctx.gen["batch_size"], progress=ctx.progress)
    if "truth_ratios" not in ctx.cache:
        model, processor = ctx.retrained
        ctx.cache["truth_ratios"] = list(truth_ratios(model, processor, rows, batch_size=ctx.gen["batch_size"],
                                                      progress=ctx.progress))
    reference = ctx.cache["truth_ratios"]
    finite = [v for v in ours if math.isfinite(v)]
    return {"forget_quality": float(forget_quality(ours, reference)), "n_rows": float(len(rows)),
            "truth_ratio_mean": sum(finite) / len(finite) if finite else float("nan"),
            "retrained_truth_ratio_mean": sum(reference) / len(reference) if reference else float("nan")}


def _probe_relearning(ctx: _Context) -> dict:
    from .attacks import relearning_attack

    kw = dict(steps=ctx.relearn_steps, is_well_formed=ctx.is_well_formed, progress=ctx.progress,
              max_new_tokens=ctx.gen["max_new_tokens"], **ctx.relearn_kwargs)
    splits = {k: v for k, v in ctx.data.relearn_eval.items() if v}
    curve = relearning_attack(ctx.model, ctx.processor, ctx.data.relearn_attack, splits, **kw)
    out = {"n_attack_rows": float(len(ctx.data.relearn_attack))}
    for step, metrics in sorted(curve.items()):
        out.update(flat_metrics(metrics, prefix=f"step{step}_"))
    if ctx.retrained is None:
        out["note"] = f"no baseline curve: {NO_RETRAINED}"
        return out
    key = ("relearning", ctx.relearn_steps)
    if key not in ctx.cache:
        model, processor = ctx.retrained
        reference = relearning_attack(model, processor, ctx.data.relearn_attack, splits, **kw)
        ctx.cache[key] = {k: v for step, metrics in sorted(reference.items())
                          for k, v in flat_metrics(metrics, prefix=f"retrained_step{step}_").items()}
    out.update(ctx.cache[key])
    return out


def _probe_quantization(ctx: _Context) -> dict:
    from .attacks import quantization_attack

    splits = {k: v for k, v in ctx.data.quantization.items() if v}
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return {"skipped": "bitsandbytes is not installed: pip install 'unlearn-trainer[bnb]'"}
    result = quantization_attack(ctx.model, ctx.processor, splits, is_well_formed=ctx.is_well_formed,
                                 progress=ctx.progress, **ctx.gen)
    out = {}
    for bits, metrics in result.items():
        if isinstance(metrics, dict) and all(isinstance(m, dict) for m in metrics.values()):
            out.update(flat_metrics(metrics, prefix=f"{bits}_"))
        elif isinstance(metrics, str):  # a bit width the attack could not run (its reason)
            out[f"{bits}_note"] = metrics
    return out


_RUNNERS = {"mia": _probe_mia, "paraphrase": lambda ctx: _probe_splits(ctx, "paraphrase"),
            "shift": lambda ctx: _probe_splits(ctx, "shift"), "mc": _probe_mc,
            "forget_quality": _probe_forget_quality, "relearning": _probe_relearning,
            "quantization": _probe_quantization}


# -- reporting ---------------------------------------------------------------------------------------------------
def numbers(results: Mapping[str, Mapping], prefix: str = "robustness_") -> dict[str, float]:
    """Every number of :func:`run_probes` results, flat: ``{"<prefix><probe>_<metric>": value}`` (no text)."""
    return {f"{prefix}{probe}_{k}": float(v) for probe, m in results.items() for k, v in m.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("n_")}


def _is_single(results: Mapping) -> bool:
    return bool(results) and set(results) <= set(PROBES)


def robustness_table(results: Mapping) -> str:
    """Markdown table of :func:`run_probes` results: one row per (probe, metric), one column per evaluation
    (``results`` is one run's results, or ``{label: results}`` such as ``{"before": ..., "after": ...}``). Skipped
    probes get their note. Only probe names, metric names and numbers: never row text."""
    columns = {"value": results} if _is_single(results) else dict(results)
    if not columns:
        return ""
    probes = [p for p in PROBES if any(p in c for c in columns.values())]
    labels = list(columns)
    lines = ["| probe | metric | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    notes: dict[tuple[str, str, str], list[str]] = {}  # (probe, key, text) -> labels
    for probe in probes:
        keys = list(dict.fromkeys(k for c in columns.values() for k, v in c.get(probe, {}).items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and not k.startswith("n_")))
        for key in keys:
            cells = []
            for c in columns.values():
                v = c.get(probe, {}).get(key)
                cells.append("" if v is None else ("nan" if not math.isfinite(float(v)) else f"{float(v):.3f}"))
            lines.append(f"| {probe} | {key} | " + " | ".join(cells) + " |")
        for label, c in columns.items():
            for k, v in c.get(probe, {}).items():
                if isinstance(v, str):
                    notes.setdefault((probe, k.replace("_", " "), v.replace("|", "/").replace("\n", " ")),
                                     []).append(label)
    lines = ["\n".join(lines)]
    if notes:
        lines.append("")
        for (probe, key, text), found in notes.items():
            where = "" if len(found) == len(columns) else f" ({', '.join(found)})"
            lines.append(f"- {probe}{where}: {key}: {text}")
    return "\n".join(lines)
