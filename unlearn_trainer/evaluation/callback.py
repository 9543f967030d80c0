"""``UnlearningEvalCallback``: evaluate before training, every N steps and at the end, and run the robustness
probes before and after; log through the trainer (so ``report_to`` integrations receive the metrics), and write
JSON, Markdown tables and (with matplotlib) plots."""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
from collections.abc import Callable, Sequence

from transformers import TrainerCallback

from .evaluator import (
    HEADLINE_METRICS,
    evaluate_splits,
    format_table,
    headline_metric,
    headline_table,
    is_forget_split,
)
from .robustness import CHEAP_PROBES, ProbeData, parse_probes, robustness_table, run_probes
from .robustness import numbers as robustness_numbers

__all__ = ["UnlearningEvalCallback", "plot_tradeoff", "tradeoff_figure", "RESUMED"]

logger = logging.getLogger(__name__)

#: Label of the first evaluation of a run resumed from a checkpoint (its weights are already partly unlearned).
RESUMED = "resumed"


def _is_sharded(model) -> bool:
    """FSDP / DeepSpeed ZeRO-3: every forward gathers parameters collectively, so every process must evaluate."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    from ..vision.adapters import is_fsdp_sharded

    return is_deepspeed_zero3_enabled() or is_fsdp_sharded(model)


class UnlearningEvalCallback(TrainerCallback):
    """Evaluate ``splits`` (``{name: rows}``) with :func:`evaluate_splits`.

    Results are kept in ``self.history`` (list of ``{"step", "label", "metrics"}``) and logged as
    ``eval_<split>_<metric>`` through the trainer's ``log``, so that every ``report_to`` integration (W&B,
    TensorBoard, ...) and ``on_log`` callback receives them; only numbers are logged, never an answer. The trainer's
    ``log_history`` entry also carries the evaluation's label (``unlearning_eval``). An :class:`UnlearnTrainer`
    attaches itself (:meth:`attach_trainer`); with a plain ``transformers.Trainer`` call
    ``callback.attach_trainer(trainer)`` (otherwise the metrics are only appended to ``state.log_history``).
    On train end, ``output_dir`` gets ``unlearning_eval.json``, ``unlearning_eval.md`` (:meth:`table`) and
    ``unlearning_eval.png`` (:func:`plot_tradeoff`, if matplotlib is installed). Each evaluation shows a labelled
    progress bar unless ``args.disable_tqdm``.

    ``probes`` (names of :data:`~unlearn_trainer.evaluation.robustness.PROBES`; default the cheap ones: MIA,
    paraphrase, MC) run before and after training only, on ``probe_data`` (a
    :class:`~unlearn_trainer.evaluation.robustness.ProbeData`; default: built from ``splits`` by
    ``ProbeData.from_rows``), with ``retrained`` (``(model, processor)`` trained without the forget set) when
    given and ``probe_kwargs`` passed to :func:`~unlearn_trainer.evaluation.robustness.run_probes`. Their numbers
    are logged as ``robustness_<probe>_<metric>`` and written to ``robustness.json`` / ``robustness.md``
    (``self.robustness``: ``{label: results}``); a sharded model (FSDP, ZeRO-3) is not probed. ``probe_before=False``
    probes after training only (sweeps that start every run from the same model). A ``retrained_cache`` in
    ``probe_kwargs`` (e.g. a :class:`~unlearn_trainer.evaluation.robustness.ProbeResultCache`) keeps the retrained
    model's numbers across runs.
    Only the main process records and writes; with a sharded model (FSDP, ZeRO-3) the other processes run the
    same generation and discard it, so the collective parameter gathers stay in step.
    """

    def __init__(
        self,
        processor,
        splits: dict[str, Sequence[dict]],
        eval_steps: int | None = None,
        output_dir: str | None = None,
        is_well_formed: Callable[[str], bool] | None = None,
        forget_split: str = "forget",
        retain_split: str = "retain",
        plot: bool = True,
        probes: Sequence[str] | str | None = CHEAP_PROBES,
        probe_data: ProbeData | None = None,
        retrained: tuple | None = None,
        probe_kwargs: dict | None = None,
        probe_before: bool = True,
        **eval_kwargs,
    ):
        if not splits:
            raise ValueError("UnlearningEvalCallback needs at least one split to evaluate.")
        self.processor, self.splits, self.eval_steps = processor, splits, eval_steps
        self.output_dir, self.is_well_formed, self.plot = output_dir, is_well_formed, plot
        self.forget_split, self.retain_split = forget_split, retain_split
        self.eval_kwargs = eval_kwargs
        self.history: list[dict] = []
        self.answers: dict[str, dict[str, list[str]]] = {}
        self.probes, self.probe_data, self.retrained = parse_probes(probes), probe_data, retrained
        self.probe_kwargs = dict(probe_kwargs or {})
        self.probe_before = probe_before
        self.robustness: dict[str, dict] = {}
        # the retrained model's numbers, reused before and after (a ProbeResultCache keeps them across runs)
        cache = self.probe_kwargs.pop("retrained_cache", None)
        self._retrained_cache: dict = {} if cache is None else cache
        self._trainer = None

    def attach_trainer(self, trainer) -> None:
        """Log through ``trainer.log`` (what ``Trainer.evaluate`` does with its metrics)."""
        self._trainer = trainer

    def _eval_kwargs(self, label: str, progress: bool) -> dict:
        return {"progress": progress, "desc": f"unlearning eval ({label}):", **self.eval_kwargs}

    def evaluate(self, model, label: str, step: int, state=None, progress: bool = False) -> dict:
        metrics, answers = evaluate_splits(model, self.processor, self.splits, self.is_well_formed,
                                           **self._eval_kwargs(label, progress))
        self.history.append({"step": step, "label": label, "metrics": metrics})
        self.answers[label] = answers
        if state is not None:
            self._log(metrics, label, state)
        return metrics

    def _probe_data(self) -> ProbeData | None:
        if self.probe_data is None and self.forget_split in self.splits:
            self.probe_data = ProbeData.from_rows(self.splits[self.forget_split], self.splits.get(self.retain_split),
                                                  splits=self.splits)
        return self.probe_data

    def probe(self, model, label: str, state=None, progress: bool = False) -> dict:
        """Run the probes on ``model`` (``self.robustness[label]``); numbers logged as ``robustness_*``."""
        data = self._probe_data() if self.probes else None
        if data is None:
            return {}
        kwargs = {"max_new_tokens": self.eval_kwargs.get("max_new_tokens", 32),
                  "batch_size": self.eval_kwargs.get("batch_size", 32), **self.probe_kwargs}
        results = run_probes(model, self.processor, data, self.probes, retrained=self.retrained,
                             is_well_formed=self.is_well_formed, progress=progress, label=label,
                             retrained_cache=self._retrained_cache, **kwargs)
        self.robustness[label] = results
        if state is not None:
            self._log_numbers(robustness_numbers(results), "robustness", label, state)
        return results

    def _log(self, metrics: dict[str, dict[str, float]], label: str, state) -> None:
        """Numbers only (no answer, no label string, which trackers reject) to the trainer's ``log``; the label is
        added to the ``log_history`` entry afterwards."""
        flat = {f"eval_{s}_{k}": float(v) for s, m in metrics.items() for k, v in m.items()
                if k != "n" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._log_numbers(flat, "unlearning_eval", label, state)

    def _log_numbers(self, flat: dict[str, float], key: str, label: str, state) -> None:
        if self._trainer is None:
            state.log_history.append({**flat, "step": state.global_step, key: label})
            return
        self._trainer.log(dict(flat))
        entry = state.log_history[-1] if state.log_history else {}
        if entry.get("step") == state.global_step and flat.keys() <= entry.keys():
            entry[key] = label

    def _evaluate_everywhere(self, args, model, label: str, state, probe: bool = False) -> None:
        if state.is_world_process_zero:
            self.evaluate(model, label, state.global_step, state, progress=not args.disable_tqdm)
        elif _is_sharded(model):
            evaluate_splits(model, self.processor, self.splits, self.is_well_formed,
                            **self._eval_kwargs(label, False))
        if probe and self.probes and state.is_world_process_zero:
            if _is_sharded(model):  # the probes run forward passes and fine-tuning on one process only
                logger.warning("Robustness probes skipped: the model is sharded (FSDP / ZeRO-3); evaluate the saved "
                               "model with `python -m unlearn_trainer.evaluate`.")
            else:
                self.probe(model, label, state, progress=not args.disable_tqdm)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # A resumed run starts from a checkpoint's weights, not the model before unlearning: label it as such.
        label = "before" if state.global_step == 0 else RESUMED
        self._evaluate_everywhere(args, model, label, state, probe=self.probe_before)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.eval_steps and state.global_step % self.eval_steps == 0 and state.global_step < state.max_steps:
            self._evaluate_everywhere(args, model, f"step {state.global_step}", state)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._evaluate_everywhere(args, model, "after", state, probe=True)
        if state.is_world_process_zero:
            self.write(self.output_dir or args.output_dir)

    def table(self) -> str:
        """The headline (one row per split: its main metric, goal ↓/↑, first → last evaluation), then every metric
        of the first and last evaluations."""
        columns = {h["label"]: h["metrics"] for h in self.history if h["label"] in ("before", RESUMED, "after")}
        columns = columns or {h["label"]: h["metrics"] for h in self.history[-1:]}  # one evaluation of a saved model
        if not columns:
            return ""
        return f"{headline_table(columns)}\n\nAll metrics:\n\n{format_table(columns)}"

    def robustness_table(self) -> str:
        """The probes' numbers, one column per probed evaluation (before, after)."""
        return robustness_table(self.robustness) if self.robustness else ""

    def write(self, output_dir: str, name: str = "unlearning_eval") -> dict[str, str]:
        """``<name>.json`` (history and generated answers: local only, never uploaded), ``<name>.md``, ``<name>.png``
        and, when probes ran, ``robustness.json`` / ``robustness.md`` (numbers and notes only)."""
        os.makedirs(output_dir, exist_ok=True)
        paths = {"json": os.path.join(output_dir, f"{name}.json"),
                 "markdown": os.path.join(output_dir, f"{name}.md")}
        with open(paths["json"], "w") as f:
            json.dump({"history": self.history, "answers": self.answers}, f, indent=1)
        with open(paths["markdown"], "w") as f:
            f.write(self.table() + "\n")
        if self.robustness:
            paths["robustness_json"] = os.path.join(output_dir, "robustness.json")
            paths["robustness_markdown"] = os.path.join(output_dir, "robustness.md")
            with open(paths["robustness_json"], "w") as f:
                json.dump(self.robustness, f, indent=1)
            with open(paths["robustness_markdown"], "w") as f:
                f.write(self.robustness_table() + "\n")
        if self.plot:
            try:
                paths["plot"] = plot_tradeoff(self.history, os.path.join(output_dir, f"{name}.png"),
                                              self.forget_split, self.retain_split)
            except ImportError:
                pass
            except ValueError as error:  # no score to plot: the JSON and the table are still written
                logger.warning("unlearning_eval.png not written: %s", error)
        return paths


def _series(history: Sequence[dict], split: str, metric: str) -> list[tuple[int, float, str]]:
    """``(step, value, label)`` of ``split``'s ``metric`` over the evaluations that have it."""
    points = []
    for h in history:
        value = h["metrics"].get(split, {}).get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            points.append((h["step"], float(value), h["label"]))
    return points


def _pair(history: Sequence[dict], forget_split: str, retain_split: str, metric: str | None):
    """``(forget split, retain split, metric)`` for the trade-off panel: the given splits if both have ``metric``
    (default: the forget split's headline metric), else the first forget split whose "retain" twin shares its
    headline metric (MLLMU-Bench ``forget_cls`` / ``retain_cls``, CLEAR ``forget_caption`` / ``retain_caption``)."""
    first = history[0]["metrics"]
    candidates = [(forget_split, retain_split)] + [(s, s.replace("forget", "retain", 1)) for s in first
                                                   if "forget" in s and s != forget_split]
    for forget, retain in candidates:
        if forget not in first or retain not in first:
            continue
        chosen = metric or headline_metric(first[forget])
        if chosen and _series(history, forget, chosen) and _series(history, retain, chosen):
            return forget, retain, chosen
    return None


def tradeoff_figure(history: Sequence[dict], forget_split: str = "forget", retain_split: str = "retain",
                    metric: str | None = None):
    """A matplotlib ``Figure`` of the evaluations, with panels chosen from the metrics present: forget vs retain
    (when a forget split and its retain twin share a metric), then one panel per headline metric
    (:func:`~unlearn_trainer.evaluation.evaluator.headline_metric`) with each split's value over the training steps
    (a trajectory when evaluation ran every N steps), then coherence if it was measured. Labels stay inside the
    frame."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        raise ImportError("Plots need matplotlib: pip install 'unlearn-trainer[plots]'") from err
    if not history:
        raise ValueError("No evaluation to plot: the history is empty.")
    first = history[0]["metrics"]
    by_metric: dict[str, list[tuple[str, str]]] = {}  # panel -> [(split, its metric)]
    for split, metrics in first.items():
        main = headline_metric(metrics)
        if main is not None and _series(history, split, main):
            by_metric.setdefault(_panel(main), []).append((split, main))
    coherence = [(s, "coherence") for s in first if _series(history, s, "coherence")]
    pair = _pair(history, forget_split, retain_split, metric)
    panels = ([("pair", pair)] if pair else []) + [("metric", m) for m in by_metric] + \
        ([("coherence", "coherence")] if coherence else [])
    if not panels:
        raise ValueError("No metric to plot: the evaluations have no score.")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (kind, what) in zip(axes, panels):
        if kind == "pair":
            _draw_pair(ax, history, *what)
            continue
        splits = coherence if kind == "coherence" else by_metric[what]
        values = []
        for split, metric_key in splits:
            points = _series(history, split, metric_key)
            values += [p[1] for p in points]
            goal = "↓" if is_forget_split(split) and kind != "coherence" else "↑"
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"{split} {goal}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("training step")
        ax.set_ylabel(what)
        ax.set_title(what, fontsize=10)
        _unit_range(ax, values, "y")
        ax.legend(fontsize=7, loc="best")
    return fig


def _draw_pair(ax, history: Sequence[dict], forget: str, retain: str, metric: str) -> None:
    """Retain vs forget ``metric`` over the evaluations, the first and last marked in the legend (inside the
    frame, unlike point labels, which overlap when the points are close)."""
    xs = {p[2]: p[1] for p in _series(history, forget, metric)}
    ys = {p[2]: p[1] for p in _series(history, retain, metric)}
    labels = [h["label"] for h in history if h["label"] in xs and h["label"] in ys]
    ax.plot([xs[k] for k in labels], [ys[k] for k in labels], "o-", color="0.5", label=metric)
    ax.plot([xs[labels[0]]], [ys[labels[0]]], "s", markersize=9, label=labels[0])
    if len(labels) > 1:
        ax.plot([xs[labels[-1]]], [ys[labels[-1]]], "*", markersize=13, label=labels[-1])
    ax.set_xlabel(f"{forget} ↓")
    ax.set_ylabel(f"{retain} ↑")
    ax.set_title("forget vs retain", fontsize=10)
    _unit_range(ax, [xs[k] for k in labels], "x")
    _unit_range(ax, [ys[k] for k in labels], "y")
    ax.legend(fontsize=7, loc="best")


def _panel(metric: str) -> str:
    """The panel of a headline metric: a benchmark rule's groups (``caption_rougeL_r_stemmed``,
    ``facerec_rougeL_r_stemmed``) share the rule's panel (``rougeL_r_stemmed``)."""
    for pattern in HEADLINE_METRICS:
        if "*" in pattern and fnmatch.fnmatchcase(metric, pattern):
            return pattern.strip("*_")
    return metric


def _unit_range(ax, values: list[float], axis: str) -> None:
    """Scores in [0, 1] get the whole [0, 1] range (with a margin), so that runs compare at a glance."""
    if values and all(0.0 <= v <= 1.0 for v in values):
        (ax.set_xlim if axis == "x" else ax.set_ylim)(-0.05, 1.05)


def plot_tradeoff(history: Sequence[dict], path: str, forget_split: str = "forget", retain_split: str = "retain",
                  metric: str | None = None) -> str:
    """:func:`tradeoff_figure` saved as a PNG at ``path``; returns ``path``."""
    fig = tradeoff_figure(history, forget_split, retain_split, metric)
    fig.savefig(path, dpi=90)
    return path
