"""Generation-based evaluation of a VLM on rows, usable with any model and processor.

Answers are generated greedily with the images always passed to ``generate`` (the prompt is the processor's
chat template with the generation prompt, batched with left padding). Seeded. Per split, the metrics are
computed from row fields when present:

- ``rougeL_f`` (ROUGE-L F-measure), ``bleu``: against the row's ``answer`` (multiple-choice rows excluded).
- ``name_recall``: rows whose reference answer mentions one of the row's ``concepts``; a hit if the generated
  answer mentions any of them.
- ``attribute_accuracy``: rows with ``expected`` (a phrase or aliases) that must appear in the answer.
- ``privacy_leak``: rows with ``private`` (phrases: name, private attributes): the answer mentions any.
- ``mc_letter_acc``: rows with ``options`` and ``answer_letter``, by the documented first-letter rule
  (:func:`~unlearn_trainer.evaluation.metrics.first_letter_choice`).
- ``mc_loglik_acc``: the same rows, by the option with the highest mean per-token log-likelihood when each
  option, rendered by ``mc_template`` (row field, default ``"{option}"``), is scored as the answer to
  ``mc_question`` (row field, default the row's question). Length-normalised so long names are not penalised.
- ``diversity_unique_words``, ``coherence`` (if an ``is_well_formed`` callable is given).
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Callable, Sequence

import torch

from .._progress import progress_bar
from ..data.collator import VLMUnlearningCollator, model_inputs, row_images, to_device
from . import metrics as M

__all__ = ["generate_answers", "option_loglikelihoods", "evaluate_rows", "evaluate_splits", "format_table",
           "headline_table", "headline_metric", "is_forget_split", "format_value"]

LETTERS = "abcdefgh"


@contextlib.contextmanager
def _eval_mode(model, processor):
    tok = getattr(processor, "tokenizer", processor)
    side, was_training = tok.padding_side, model.training
    tok.padding_side = "left"
    model.eval()
    try:
        yield
    finally:
        tok.padding_side = side
        model.train(was_training)


def _batches(rows: Sequence[dict], size: int):
    """Positions of ``rows`` in batches of at most ``size``. Rows with images and text-only rows are never batched
    together: Mllama's cross-attention would attend from a text-only row to an empty image (see
    ``VLMUnlearningCollator``), and no other family's result depends on it."""
    for has_images in (True, False):
        positions = [i for i, r in enumerate(rows) if bool(row_images(r)) == has_images]
        for i in range(0, len(positions), size):
            yield positions[i : i + size]


def _device(model):
    return next(model.parameters()).device


@torch.no_grad()
def generate_answers(
    model,
    processor,
    rows: Sequence[dict],
    max_new_tokens: int = 32,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
    desc: str = "generating",
) -> list[str]:
    """Greedy answers to each row's question, with its images passed to ``generate``."""
    collator = VLMUnlearningCollator(processor, return_index=False)
    tok = collator.tokenizer
    rows = list(rows)
    out: list[str] = [""] * len(rows)
    torch.manual_seed(seed)
    chunks = progress_bar(list(_batches(rows, batch_size)), desc=desc, enabled=progress, unit="batch", leave=False)
    with _eval_mode(model, processor):
        for positions in chunks:
            # images nested per row, as in training; errors name rows by their position in ``rows``
            batch = collator.encode_prompts([{**rows[i], "__index__": i} for i in positions])
            batch = to_device(batch, _device(model))
            gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            new = gen[:, batch["input_ids"].shape[1]:]
            for i, text in zip(positions, tok.batch_decode(new, skip_special_tokens=True)):
                out[i] = text.strip()
    return out


@torch.no_grad()
def option_loglikelihoods(model, processor, rows: Sequence[dict], batch_size: int = 32, progress: bool = False,
                          desc: str = "scoring options") -> list[list[float]]:
    """Mean per-token log-likelihood of each option of each multiple-choice row (see module docstring)."""
    from ..losses import token_logprobs

    collator = VLMUnlearningCollator(processor, return_index=False)
    flat, owners = [], []
    for i, row in enumerate(rows):
        template = row.get("mc_template") or "{option}"
        question = row.get("mc_question") or row["question"]
        for option in row["options"]:
            flat.append({**row, "question": question, "answer": template.format(option=option), "__index__": i})
            owners.append(i)
    scores: list[list[float]] = [[] for _ in rows]
    with _eval_mode(model, processor):
        chunks = progress_bar(list(_batches(flat, batch_size)), desc=desc, enabled=progress, unit="batch", leave=False)
        for positions in chunks:  # a row's options stay in order
            batch = collator([flat[p] for p in positions])
            batch = to_device(batch, _device(model))
            logps, mask = token_logprobs(model(**model_inputs(batch)).logits, batch["labels"])
            means = (logps.sum(-1) / mask.sum(-1)).tolist()
            for p, value in zip(positions, means):
                scores[owners[p]].append(value)
    return scores


def _phrases(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [v for v in value if v]


def evaluate_rows(
    model,
    processor,
    rows: Sequence[dict],
    is_well_formed: Callable[[str], bool] | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
    desc: str = "evaluating",
    row_metrics: Callable[[Sequence[dict], list[str]], dict[str, float]] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Metrics of one split (see module docstring) and the generated answers. ``row_metrics(rows, answers)``
    adds metrics of its own (e.g. a benchmark's official scoring rules)."""
    if len(rows) == 0:
        raise ValueError("Cannot evaluate an empty split.")
    # TRL layouts (messages / prompt-completion) are read as training reads them: prompt turns and an "answer"
    normalize = VLMUnlearningCollator(processor, return_index=False).normalize
    rows = [normalize(row, i) for i, row in enumerate(rows)]
    preds = generate_answers(model, processor, rows, max_new_tokens, batch_size, seed, progress, desc)
    result: dict[str, float] = {"n": float(len(rows))}
    open_rows = [i for i, r in enumerate(rows) if not r.get("options") and r.get("answer")]
    if open_rows:
        result["rougeL_f"] = M.rouge_l_f([preds[i] for i in open_rows], [rows[i]["answer"] for i in open_rows])
        result["bleu"] = M.bleu([preds[i] for i in open_rows], [rows[i]["answer"] for i in open_rows])
    named = [i for i in open_rows if any(M.contains_phrase(rows[i]["answer"], c) for c in _phrases(rows[i].get("concepts")))]
    if named:
        result["name_recall"] = M.name_recall([preds[i] for i in named], [_phrases(rows[i]["concepts"]) for i in named])
    expected = [i for i, r in enumerate(rows) if _phrases(r.get("expected"))]
    if expected:
        result["attribute_accuracy"] = M.attribute_accuracy(
            [preds[i] for i in expected], [_phrases(rows[i]["expected"]) for i in expected]
        )
    private = [i for i, r in enumerate(rows) if _phrases(r.get("private"))]
    if private:
        result["privacy_leak"] = M.privacy_leak([preds[i] for i in private], [_phrases(rows[i]["private"]) for i in private])
    mc = [i for i, r in enumerate(rows) if r.get("options")]
    if mc:
        letters = LETTERS[: max(len(rows[i]["options"]) for i in mc)]
        result["mc_letter_acc"] = M.mc_accuracy_by_letter(
            [preds[i] for i in mc], [rows[i]["answer_letter"] for i in mc], letters=letters
        )
        scores = option_loglikelihoods(model, processor, [rows[i] for i in mc], batch_size, progress,
                                       f"{desc}, options")
        gold = [LETTERS.index(rows[i]["answer_letter"].lower()) for i in mc]
        result["mc_loglik_acc"] = M.mc_accuracy_by_loglik(scores, gold)
    result["diversity_unique_words"] = float(M.diversity(preds)["unique_words"])
    if is_well_formed is not None:
        result["coherence"] = M.coherence(preds, is_well_formed)
    if row_metrics is not None:
        result.update(row_metrics(rows, preds))
    return result, preds


def evaluate_splits(
    model,
    processor,
    splits: dict[str, Sequence[dict]],
    is_well_formed: Callable[[str], bool] | None = None,
    progress: bool = False,
    desc: str = "eval",
    **kwargs,
) -> tuple[dict[str, dict[str, float]], dict[str, list[str]]]:
    """``evaluate_rows`` on every split: ``({split: metrics}, {split: answers})``. With ``progress``, one bar per
    split and pass, labelled ``"<desc> <split>"`` (e.g. ``unlearning eval (before): forget``)."""
    results, answers = {}, {}
    for name, rows in splits.items():
        results[name], answers[name] = evaluate_rows(
            model, processor, rows, is_well_formed=is_well_formed, progress=progress, desc=f"{desc} {name}", **kwargs
        )
    return results, answers


#: Metrics that count things: printed as integers.
COUNT_METRICS = frozenset({"n", "diversity_unique_words"})
#: The headline metric of a split: the first of these it has. ``*`` matches the group of a benchmark's own rule
#: (``benchmark_scoring``): CLEAR's ROUGE-L recall, MLLMU-Bench's generation ROUGE-L.
HEADLINE_METRICS = ("*_rougeL_r_stemmed", "mc_letter_acc", "*_rougeL_f_stemmed*", "name_recall", "attribute_accuracy",
                    "rougeL_f", "*_acc_*", "bleu")
#: Metrics shown in the headline next to a split's headline metric: a multiple-choice split is judged by letter (as
#: MLLMU-Bench scores it) and by option log-likelihood, which can disagree (a model that no longer prefers the
#: right name can still answer its letter).
HEADLINE_COMPANIONS = {"mc_letter_acc": ("mc_loglik_acc",)}
#: Splits whose scores unlearning should lower: about the forgotten (their names say forget; MLLMU-Bench's Test_Set
#: and ToyWorld's generalization split ask about the forget identities with other images).
FORGET_SPLITS = re.compile(r"(^|_)(forget|test|generali[sz]ation)(_|$)")


def format_value(metric: str, value: float | None) -> str:
    """A table cell: counts as integers, scores with 3 decimals, nothing for a missing value."""
    if value is None:
        return ""
    if metric in COUNT_METRICS and float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}"


def headline_metric(metrics: dict[str, float]) -> str | None:
    """The metric a split is judged by (:data:`HEADLINE_METRICS`), or its first score if it has none of them."""
    for pattern in HEADLINE_METRICS:
        found = [k for k in metrics if fnmatch.fnmatchcase(k, pattern)]
        if found:
            return found[0]
    return next((k for k in metrics if k not in COUNT_METRICS), None)


def is_forget_split(split: str) -> bool:
    """Whether unlearning should lower ``split``'s scores (:data:`FORGET_SPLITS`); otherwise they should hold."""
    return bool(FORGET_SPLITS.search(split))


def headline_table(columns: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table: one row per split and headline metric (and its :data:`HEADLINE_COMPANIONS`) with its rows,
    goal (↓ forget, ↑ keep) and first → last evaluation (e.g. before → after)."""
    names = list(columns)
    if not names:
        return ""
    first, last = columns[names[0]], columns[names[-1]]
    title = names[0] if len(names) == 1 else f"{names[0]} → {names[-1]}"
    lines = [f"| split | rows | metric | goal | {title} |", "|---|---|---|---|---|"]
    for split, metrics in first.items():
        main = headline_metric(metrics)
        if main is None:
            continue
        for metric in (main, *(m for m in HEADLINE_COMPANIONS.get(main, ()) if m in metrics)):
            before, after = metrics.get(metric), last.get(split, {}).get(metric)
            change = format_value(metric, before) if len(names) == 1 else \
                f"{format_value(metric, before)} → {format_value(metric, after)}"
            goal = "↓" if is_forget_split(split) else "↑"
            lines.append(f"| {split} | {format_value('n', metrics.get('n'))} | {metric} | {goal} | {change} |")
    return "\n".join(lines)


def format_table(columns: dict[str, dict[str, dict[str, float]]], keys: Sequence[str] | None = None) -> str:
    """Markdown table: one row per (split, metric), one column per evaluation (e.g. "before", "after")."""
    names = list(columns)
    splits = list(next(iter(columns.values())).keys()) if columns else []
    lines = ["| split | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for split in splits:
        metric_names = [k for k in columns[names[0]].get(split, {}) if k != "n" and (keys is None or k in keys)]
        for metric in metric_names:
            cells = [format_value(metric, columns[name].get(split, {}).get(metric)) for name in names]
            lines.append(f"| {split} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
