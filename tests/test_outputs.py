"""Logs and outputs people read: unlearning metrics reach the trainer's loggers, labelled progress bars, the headline
table, and plots with drawn panels for every dataset."""

import math
import warnings

import pytest
from conftest import train_args
from test_benchmark_loaders import clear_root, mllmu_root  # noqa: F401  (fixtures: the benchmarks' Hub layouts)
from transformers import TrainerCallback

from unlearn_trainer import GAConfig, GATrainer
from unlearn_trainer._progress import progress_bar
from unlearn_trainer.data.benchmarks import load_clear, load_mllmu_bench
from unlearn_trainer.evaluation import UnlearningEvalCallback, evaluate_splits, score_predictions
from unlearn_trainer.evaluation.callback import plot_tradeoff, tradeoff_figure
from unlearn_trainer.evaluation.evaluator import headline_table
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor, tiny_vqa_rows


class Recorder(TrainerCallback):
    """What a ``report_to`` integration sees: every ``on_log`` and ``on_evaluate`` payload."""

    def __init__(self):
        self.logs, self.evaluations = [], []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs)))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.evaluations.append((state.global_step, dict(metrics)))


def _splits():
    forget = tiny_vqa_rows(2)
    return forget, {"forget": [dict(r, concepts=["cat", "dog"]) for r in forget], "retain": tiny_vqa_rows(2, seed=4)}


@pytest.mark.parametrize("attach", ["constructor", "add_callback"])
def test_unlearning_metrics_reach_on_log_callbacks(tmp_path, attach):
    model, processor = tiny_model_and_processor("llava")
    forget, splits = _splits()
    cb = UnlearningEvalCallback(processor, splits, eval_steps=2, max_new_tokens=4, plot=False)
    recorder = Recorder()
    callbacks = [cb, recorder] if attach == "constructor" else [recorder]
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, max_steps=4), forget_dataset=forget,
                        processing_class=processor, peft_config=lora_config_for(model), callbacks=callbacks)
    if attach == "add_callback":
        trainer.add_callback(cb)
    trainer.train()
    logged = [(step, logs) for step, logs in recorder.logs if "eval_forget_rougeL_f" in logs]
    assert [step for step, _ in logged] == [0, 2, 4]  # before, every 2 steps, after
    for (_, logs), h in zip(logged, cb.history):
        assert logs["eval_forget_rougeL_f"] == h["metrics"]["forget"]["rougeL_f"]
        assert logs["eval_retain_diversity_unique_words"] == h["metrics"]["retain"]["diversity_unique_words"]
        # only numbers reach a tracker: no answer, no label string
        assert all(isinstance(v, (int, float)) for v in logs.values()), logs
    answers = {a for per_label in cb.answers.values() for split in per_label.values() for a in split if a}
    assert not answers & {str(v) for _, logs in recorder.logs for v in logs.values()}
    # the trainer's own history (trainer_state.json) still names each evaluation
    labels = [h["unlearning_eval"] for h in trainer.state.log_history if "unlearning_eval" in h]
    assert labels == ["before", "step 2", "after"]


def test_evaluation_progress_bars_are_labelled(tmp_path, capsys):
    model, processor = tiny_model_and_processor("llava")
    forget, splits = _splits()
    cb = UnlearningEvalCallback(processor, splits, max_new_tokens=2, plot=False)
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, max_steps=1, disable_tqdm=False),
                        forget_dataset=forget, processing_class=processor, callbacks=[cb])
    trainer.train()
    err = capsys.readouterr().err
    assert "unlearning eval (before): forget" in err and "unlearning eval (after): retain" in err
    assert "batch" in err
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, max_steps=1, disable_tqdm=True),
                        forget_dataset=forget, processing_class=processor, callbacks=[cb])
    trainer.train()
    assert "unlearning eval" not in capsys.readouterr().err


def test_one_off_passes_show_labelled_bars(capsys):
    from unlearn_trainer import VLMUnlearningCollator
    from unlearn_trainer.data.pubg import generate_guidance_answers
    from unlearn_trainer.saliency import fisher_diagonal

    model, processor = tiny_model_and_processor("llava")
    rows = tiny_vqa_rows(2)
    generate_guidance_answers(model, processor, rows, max_new_tokens=2, concept_retries=0)
    name = next(n for n, p in model.named_parameters() if n.endswith("v_proj.weight"))
    fisher_diagonal(model, rows, VLMUnlearningCollator(processor), targets={name: model.get_parameter(name)},
                    desc="forget set")
    err = capsys.readouterr().err
    assert "PUBG guidance answers o* (reference model, once)" in err and "2/2" in err
    assert "saliency Fisher pass: forget set" in err


def test_progress_bar_only_on_the_main_process(monkeypatch):
    assert not progress_bar(range(2), desc="x").disable
    assert progress_bar(range(2), desc="x", enabled=False).disable
    monkeypatch.setenv("RANK", "1")
    assert progress_bar(range(2), desc="x").disable


def test_headline_table_first_with_goals_and_integer_counts():
    before = {"forget": {"n": 8.0, "name_recall": 0.75, "diversity_unique_words": 12.0},
              "retain": {"n": 6.0, "name_recall": 0.5, "rougeL_f": 0.4},
              "forget_cls": {"n": 4.0, "rougeL_f": 0.2, "mc_letter_acc": 0.5},
              "retain_caption": {"n": 2.0, "rougeL_f": 0.3, "caption_rougeL_r_stemmed": 0.6}}
    after = {s: {k: (v if k in ("n", "diversity_unique_words") else v / 2) for k, v in m.items()}
             for s, m in before.items()}
    assert headline_table({"before": before, "after": after}).splitlines() == [
        "| split | rows | metric | goal | before → after |",
        "|---|---|---|---|---|",
        "| forget | 8 | name_recall | ↓ | 0.750 → 0.375 |",
        "| retain | 6 | name_recall | ↑ | 0.500 → 0.250 |",
        "| forget_cls | 4 | mc_letter_acc | ↓ | 0.500 → 0.250 |",
        "| retain_caption | 2 | caption_rougeL_r_stemmed | ↑ | 0.600 → 0.300 |",
    ]
    cb = UnlearningEvalCallback(None, {"forget": []})
    cb.history = [{"step": 0, "label": "before", "metrics": before}, {"step": 4, "label": "after", "metrics": after}]
    table = cb.table()
    assert table.startswith("| split | rows | metric | goal | before → after |")
    assert "| forget | diversity_unique_words | 12 | 12 |" in table  # counts as integers
    assert "| forget | name_recall | 0.750 | 0.375 |" in table  # details below the headline


# -- plots ---------------------------------------------------------------------------------------------------------
def _toyworld():
    from unlearn_trainer.toyworld import ToyWorld
    from unlearn_trainer.toyworld.full_model import eval_splits

    world = ToyWorld()
    return eval_splits(world, 0.10), world.is_well_formed


def _history(splits, is_well_formed=None):
    """Three evaluations (before, every-N, after) of a tiny model on ``splits``, two rows each."""
    model, processor = tiny_model_and_processor("llava")
    splits = {name: list(rows)[:2] for name, rows in splits.items()}
    metrics, _ = evaluate_splits(model, processor, splits, is_well_formed, max_new_tokens=2,
                                 row_metrics=score_predictions)  # as the example scripts do
    scaled = {s: {k: (v if k == "n" else v * 0.5) for k, v in m.items()} for s, m in metrics.items()}
    return [{"step": 0, "label": "before", "metrics": metrics}, {"step": 2, "label": "step 2", "metrics": scaled},
            {"step": 4, "label": "after", "metrics": scaled}]


def _drawn(ax) -> int:
    return len(ax.lines) + len(ax.collections) + len(ax.patches)


@pytest.mark.parametrize("dataset", ["toyworld", "mllmu_bench", "clear"])
def test_plots_are_drawn_for_every_dataset(dataset, mllmu_root, clear_root, tmp_path, capsys):  # noqa: F811
    if dataset == "toyworld":
        history = _history(*_toyworld())
    elif dataset == "mllmu_bench":
        history = _history(load_mllmu_bench(str(mllmu_root), forget_ratio=10).eval_splits)
    else:
        history = _history(load_clear(str(clear_root), forget_ratio="forget10").eval_splits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "No artists with labels found to put in legend"
        fig = tradeoff_figure(history)
        path = plot_tradeoff(history, str(tmp_path / "unlearning_eval.png"))
    with capsys.disabled():
        print(f"\n{dataset}\n" + headline_table({h["label"]: h["metrics"] for h in history[::2]}))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) >= 2
    assert all(_drawn(ax) > 0 for ax in panels), [(ax.get_title(), _drawn(ax)) for ax in panels]
    titles = {ax.get_title() for ax in panels}
    expected = {"toyworld": {"forget vs retain", "name_recall", "mc_letter_acc", "rougeL_f", "coherence"},
                "mllmu_bench": {"forget vs retain", "mc_letter_acc", "rougeL_f_stemmed", "attribute_accuracy"},
                "clear": {"forget vs retain", "rougeL_r_stemmed"}}[dataset]
    assert expected == titles, titles
    # a trajectory: every panel over steps has one point per evaluation
    for ax in panels:
        if ax.get_title() != "forget vs retain":
            assert all(list(line.get_xdata()) == [0, 2, 4] for line in ax.lines)
    # labels inside the frame: texts and legends inside their panel, axis labels and titles inside the figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in panels:
        frame = ax.get_window_extent(renderer)
        for text in ax.texts:
            extent = text.get_window_extent(renderer)
            assert frame.x0 - 1 <= extent.x0 and extent.x1 <= frame.x1 + 1, text.get_text()
            assert frame.y0 - 1 <= extent.y0 and extent.y1 <= frame.y1 + 1, text.get_text()
        legend = ax.get_legend()
        if legend is not None:
            extent = legend.get_window_extent(renderer)
            assert frame.x0 - 1 <= extent.x0 and extent.x1 <= frame.x1 + 1 and frame.y0 - 1 <= extent.y0 \
                and extent.y1 <= frame.y1 + 1, ax.get_title()
        for text in (ax.xaxis.label, ax.yaxis.label, ax.title):
            extent = text.get_window_extent(renderer)
            assert fig.bbox.x0 - 1 <= extent.x0 and extent.x1 <= fig.bbox.x1 + 1, text.get_text()
            assert fig.bbox.y0 - 1 <= extent.y0 and extent.y1 <= fig.bbox.y1 + 1, text.get_text()
    assert (tmp_path / "unlearning_eval.png").stat().st_size > 1000 and path.endswith(".png")
    assert not any(math.isnan(v) for h in history for m in h["metrics"].values() for v in m.values())
