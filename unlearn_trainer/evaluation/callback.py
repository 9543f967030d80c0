"""``UnlearningEvalCallback``: evaluate before training, every N steps and at the end; log, and write JSON,
a Markdown table and (with matplotlib) a trade-off plot."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

from transformers import TrainerCallback

from .evaluator import evaluate_splits, format_table

__all__ = ["UnlearningEvalCallback", "plot_tradeoff", "RESUMED"]

#: Label of the first evaluation of a run resumed from a checkpoint (its weights are already partly unlearned).
RESUMED = "resumed"


def _is_sharded(model) -> bool:
    """FSDP / DeepSpeed ZeRO-3: every forward gathers parameters collectively, so every process must evaluate."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return True
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # older torch without FSDP2
        return False
    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules())


class UnlearningEvalCallback(TrainerCallback):
    """Evaluate ``splits`` (``{name: rows}``) with :func:`evaluate_splits`.

    Results are kept in ``self.history`` (list of ``{"step", "label", "metrics"}``), logged as
    ``eval_<split>_<metric>``, and on train end written to ``output_dir``: ``unlearning_eval.json``,
    ``unlearning_eval.md`` (before/after table) and ``unlearning_eval.png`` (if matplotlib is installed).
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

    def evaluate(self, model, label: str, step: int, state=None) -> dict:
        metrics, answers = evaluate_splits(model, self.processor, self.splits, self.is_well_formed, **self.eval_kwargs)
        self.history.append({"step": step, "label": label, "metrics": metrics})
        self.answers[label] = answers
        if state is not None:
            flat = {f"eval_{s}_{k}": v for s, m in metrics.items() for k, v in m.items() if k != "n"}
            state.log_history.append({**flat, "step": step, "unlearning_eval": label})
        return metrics

    def _evaluate_everywhere(self, model, label: str, state) -> None:
        if state.is_world_process_zero:
            self.evaluate(model, label, state.global_step, state)
        elif _is_sharded(model):
            evaluate_splits(model, self.processor, self.splits, self.is_well_formed, **self.eval_kwargs)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # A resumed run starts from a checkpoint's weights, not the model before unlearning: label it as such.
        label = "before" if state.global_step == 0 else RESUMED
        self._evaluate_everywhere(model, label, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.eval_steps and state.global_step % self.eval_steps == 0 and state.global_step < state.max_steps:
            self._evaluate_everywhere(model, f"step {state.global_step}", state)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._evaluate_everywhere(model, "after", state)
        if state.is_world_process_zero:
            self.write(self.output_dir or args.output_dir)

    def table(self) -> str:
        return format_table({h["label"]: h["metrics"] for h in self.history if h["label"] in ("before", RESUMED, "after")})

    def write(self, output_dir: str) -> dict[str, str]:
        os.makedirs(output_dir, exist_ok=True)
        paths = {"json": os.path.join(output_dir, "unlearning_eval.json"),
                 "markdown": os.path.join(output_dir, "unlearning_eval.md")}
        with open(paths["json"], "w") as f:
            json.dump({"history": self.history, "answers": self.answers}, f, indent=1)
        with open(paths["markdown"], "w") as f:
            f.write(self.table() + "\n")
        if self.plot:
            try:
                paths["plot"] = plot_tradeoff(self.history, os.path.join(output_dir, "unlearning_eval.png"),
                                              self.forget_split, self.retain_split)
            except ImportError:
                pass
        return paths


def plot_tradeoff(history: Sequence[dict], path: str, forget_split: str = "forget", retain_split: str = "retain",
                  metric: str = "name_recall") -> str:
    """Forget vs retain ``metric`` over the evaluations (left) and coherence per split (right), as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("Plots need matplotlib: pip install 'unlearn-trainer[plots]'") from err
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [h["metrics"].get(forget_split, {}).get(metric) for h in history]
    ys = [h["metrics"].get(retain_split, {}).get(metric) for h in history]
    pts = [(x, y, h["label"]) for x, y, h in zip(xs, ys, history) if x is not None and y is not None]
    if pts:
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        for x, y, label in pts:
            ax1.annotate(label, (x, y), fontsize=8)
    ax1.set_xlabel(f"{forget_split} {metric} (lower is better)")
    ax1.set_ylabel(f"{retain_split} {metric} (higher is better)")
    ax1.set_xlim(-0.05, 1.05)
    ax1.set_ylim(-0.05, 1.05)
    ax1.set_title("forget vs retain")
    splits = list(history[0]["metrics"]) if history else []
    labels = [h["label"] for h in history]
    for split in splits:
        values = [h["metrics"].get(split, {}).get("coherence") for h in history]
        if any(v is not None for v in values):
            ax2.plot(range(len(values)), [v if v is not None else float("nan") for v in values], "o-", label=split)
    ax2.set_xticks(range(len(labels)))
    ax2.set_xticklabels(labels, rotation=30, fontsize=8)
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_title("coherence")
    if splits:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
