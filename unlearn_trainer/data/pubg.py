"""PUBG's guidance answers o* and the batches that carry them next to the forget batch.

For each forget image, the frozen pre-unlearning model answers the query q with the in-context prompt c
(PUBG Fig. 2: describe only what is visible, no name, profession or birthdate); that answer o* is the
behaviour-guidance target, trained *without* c in the input. The answers are generated once
(:func:`generate_guidance_answers`), optionally cached on disk (:class:`PUBGGuidanceCache`), and paired
with the forget rows by index (:class:`PUBGDataset`, :class:`PUBGCollator`, batch key ``"guidance"``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from ..fingerprint import image_digest, model_fingerprint
from .collator import (
    ForgetRetainCollator,
    ForgetRetainDataset,
    VLMUnlearningCollator,
    row_images,
    row_name,
    to_device,
)
from .concepts import find_concept_spans

__all__ = [
    "DEFAULT_INCONTEXT_PROMPT",
    "DEFAULT_QUERY",
    "PROMPT_POSITIONS",
    "PUBGCollator",
    "PUBGDataset",
    "PUBGGuidanceCache",
    "CONCEPT_POLICIES",
    "answers_naming_concepts",
    "drop_answers_naming_concepts",
    "generate_guidance_answers",
    "incontext_question",
    "build_guidance_rows",
]

#: PUBG Fig. 2, the in-context prompt c used to approximate the reference output distribution.
DEFAULT_INCONTEXT_PROMPT = (
    "Imagine you are seeing this person for the first time. Forget any prior knowledge you may have. "
    "Describe the person based only on what you can observe in the image. "
    "Do not mention any private details such as name, profession, or birthdate. "
    "Focus solely on visually identifiable characteristics. "
    "Start directly with the description without any introduction or explanation."
)
#: The open-ended query q of PUBG's task (Appendix A, Table 2).
DEFAULT_QUERY = "Tell me the specific information of this person."
#: Where c goes relative to q in the generation input: Algorithm 1 writes the input as [q, c] ("after"); "instead":
#: c alone (o* ~ p(o | I, c), not the paper's), for a model that follows one instruction at a time and was never
#: trained on a query followed by an instruction (ToyWorld's full model: given [q, c] it mixes q's answer into the
#: description). The guidance rows are trained on q in every case.
PROMPT_POSITIONS = ("after", "before", "instead")

_DROP = ("question", "answer", "__index__")
#: What to do with a forget row whose o* still names one of its concepts after the regenerations: "drop" its
#: guidance pass (its o* would train the model to say what GA removes), or "error".
CONCEPT_POLICIES = ("drop", "error")

logger = logging.getLogger(__name__)


def incontext_question(query: str, prompt: str, position: str = "after") -> str:
    """The generation-time question: the query with the in-context prompt after it ([q, c]), before it, or the
    prompt alone ("instead")."""
    if position not in PROMPT_POSITIONS:
        raise ValueError(f"prompt position must be one of {PROMPT_POSITIONS}, got {position!r}.")
    if not prompt:
        return query
    if position == "instead":
        return prompt
    return f"{query}\n{prompt}" if position == "after" else f"{prompt}\n{query}"


def _query_for(row: dict, query: str | None, index) -> str:
    if query is not None:
        return query
    if not isinstance(row.get("question"), str):
        raise ValueError(f"{row_name(row, index)} has no string 'question' and no query was given.")
    return row["question"]


def build_guidance_rows(forget_rows: Sequence[dict], answers: Sequence[str], query: str | None = DEFAULT_QUERY) -> list[dict]:
    """Guidance rows ``{image(s), question: query, answer: o*, id, ...}`` from forget rows and their o*, by index
    (``query=None`` keeps each row's own question). The in-context prompt is never part of them. An answer None
    (an o* dropped because it named a forgotten concept) gives None: that row has no guidance pass."""
    if len(forget_rows) != len(answers):
        raise ValueError(f"{len(answers)} guidance answers for {len(forget_rows)} forget rows; give one per row.")
    out = []
    for i, (row, answer) in enumerate(zip(forget_rows, answers)):
        if answer is None:
            out.append(None)
            continue
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"{row_name(row, i)}: its guidance answer o* is empty or not a string "
                             f"({type(answer).__name__}); give a non-empty text.")
        new = {k: v for k, v in row.items() if k not in _DROP}
        new["question"] = _query_for(row, query, i)
        new["answer"] = answer.strip()
        out.append(new)
    return out


def answers_naming_concepts(forget_rows: Sequence[dict], answers: Sequence[str | None],
                            concept_key: str = "concepts") -> list[int]:
    """Positions of the o* that name one of their forget row's concepts (``row[concept_key]``, a string or a list
    of aliases; the FTTP matcher: case-insensitive, NFC, whole words, by characters in unspaced scripts). Such an
    o* cancels the GA term: the guidance pass would teach the model to say what the forget pass removes."""
    found = []
    for i, (row, answer) in enumerate(zip(forget_rows, answers)):
        concepts = row.get(concept_key)
        if isinstance(concepts, str):
            concepts = [concepts]
        concepts = [c for c in (concepts or []) if isinstance(c, str) and c.strip()]
        if answer is not None and concepts and find_concept_spans(answer, concepts):
            found.append(i)
    return found


def drop_answers_naming_concepts(forget_rows: Sequence[dict], answers: list, concept_key: str = "concepts",
                                 policy: str = "drop", what: str = "guidance answer") -> list:
    """Apply ``policy`` (:data:`CONCEPT_POLICIES`) to the o* that still name their row's concept: None in their
    place (no guidance pass for those rows; a warning counts them), or an error naming the rows. Neither the
    concept nor the answer is ever part of the message."""
    if policy not in CONCEPT_POLICIES:
        raise ValueError(f"The concept policy must be one of {CONCEPT_POLICIES}, got {policy!r}.")
    leaks = answers_naming_concepts(forget_rows, answers, concept_key)
    if not leaks:
        return list(answers)
    if policy == "error":
        names = ", ".join(row_name(forget_rows[i], i) for i in leaks)
        raise ValueError(
            f"The {what} o* of {names} names the row's own {concept_key!r}: training toward it would cancel the "
            f"gradient ascent on the forget answer. Give other guidance answers, change the in-context prompt, or "
            f"let the rows go without a guidance pass (policy 'drop')."
        )
    logger.warning("PUBG: %d of %d %ss name their forget row's concept; those rows (#%s) get no guidance pass.",
                   len(leaks), len(answers), what, ", #".join(map(str, leaks)))
    answers = list(answers)
    for i in leaks:
        answers[i] = None
    return answers


# -- cache ---------------------------------------------------------------------------------------------------------
def _model_fingerprint(model) -> dict:
    """Identity of the (reference) model: name, class, config and generation config, and every base weight (the
    shared :func:`~unlearn_trainer.fingerprint.model_fingerprint`). For a PEFT model only the base weights count:
    the reference is the model with its adapter disabled."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    gen = getattr(base, "generation_config", None)
    return {
        "class": type(base).__name__,
        "name_or_path": getattr(config, "_name_or_path", None),
        "config": hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest() if config else None,
        "generation_config": hashlib.sha256(gen.to_json_string(use_diff=False).encode()).hexdigest() if gen else None,
        "weights": model_fingerprint(model, adapters=False),
    }


class PUBGGuidanceCache:
    """Guidance answers o* stored as JSON under ``directory``, keyed by a fingerprint of the model (identity,
    config, generation config, every base weight), the processor's chat template, the prompt, query and
    generation settings, and the rows (ids and image hashes). A fingerprint is a guard, not a proof: delete
    the file to force regeneration."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)

    @staticmethod
    def key(model, processor, rows: Sequence[dict], settings: dict) -> dict:
        template = getattr(processor, "chat_template", None) or getattr(
            getattr(processor, "tokenizer", None), "chat_template", None
        )
        return {
            "model": _model_fingerprint(model),
            "chat_template": hashlib.sha256(str(template).encode()).hexdigest(),
            "settings": settings,
            "rows": [
                [row.get("id"), [image_digest(im) for im in row_images(row)],
                 row.get("question") if settings.get("query") is None else None]
                for row in rows
            ],
        }

    def path(self, key: dict) -> str:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        return os.path.join(self.directory, f"pubg-reference-{digest[:24]}.json")

    def load(self, key: dict) -> list[str | None] | None:
        """The cached answers for ``key`` (None for a dropped o*), or None. A file that cannot be read (truncated,
        not JSON, wrong layout) is logged with its path and treated as missing: it is regenerated and overwritten."""
        path = self.path(key)
        if not os.path.exists(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            answers = data["answers"]
            if not isinstance(answers, list) or not all(a is None or isinstance(a, str) for a in answers):
                raise ValueError("'answers' is not a list of strings")
        except (OSError, ValueError, KeyError, TypeError) as err:  # JSONDecodeError and UnicodeDecodeError too
            logger.warning("The PUBG guidance-answer cache %s cannot be read (%s: %s); regenerating it.", path,
                           type(err).__name__, err)
            return None
        if json.loads(json.dumps(key, default=str)) != data.get("key"):
            return None
        return list(answers)

    def save(self, key: dict, answers: Sequence[str]) -> str:
        os.makedirs(self.directory, exist_ok=True)
        path = self.path(key)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"key": key, "answers": list(answers)}, f, default=str, ensure_ascii=False, indent=1)
        os.replace(tmp, path)
        return path


# -- generation ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _reference_mode(model):
    """The model as the frozen reference: eval mode, adapter disabled for PEFT models."""
    was_training = model.training
    model.eval()
    try:
        if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
            with model.disable_adapter():
                yield model
        else:
            yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _left_padding(processor):
    tok = getattr(processor, "tokenizer", processor)
    old = getattr(tok, "padding_side", None)
    tok.padding_side = "left"
    try:
        yield
    finally:
        tok.padding_side = old


def generate_guidance_answers(
    model,
    processor,
    rows: Sequence[dict],
    prompt: str = DEFAULT_INCONTEXT_PROMPT,
    query: str | None = DEFAULT_QUERY,
    max_new_tokens: int = 128,
    seed: int = 0,
    batch_size: int = 8,
    do_sample: bool = True,
    prompt_position: str = "after",
    min_new_tokens: int = 1,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    concept_key: str = "concepts",
    concept_retries: int = 2,
    concept_policy: str = "drop",
    **generate_kwargs: Any,
) -> list[dict | None]:
    """Generate PUBG's guidance answers o* once with the reference model (a PEFT model with its adapter
    disabled) and return the guidance rows ``{image(s), question: query, answer: o*, id, ...}``.

    The generation input is each forget row's image(s) and the query with the in-context ``prompt`` (paper
    Algorithm 1: ``o* ~ p(o | I, [q, c])``; ``prompt_position`` "after" or "before"); the returned rows hold the
    query without it. ``query=None`` uses each row's own question. Sampling (``do_sample=True``, the paper's
    "sample o*") uses the model's generation config and is seeded per batch from ``seed`` (the global RNG is
    untouched): the same seed, rows and batch size give the same answers. ``do_sample=False`` is greedy.
    ``cache_dir``: reload answers generated before with the same fingerprint instead of regenerating.
    An o* that names its forget row's concept (``row[concept_key]``) would cancel the GA term: it is regenerated
    up to ``concept_retries`` times with other seeds, then ``concept_policy`` applies: "drop" (that row's entry is
    None: no guidance pass) or "error".
    Extra keyword arguments go to ``model.generate`` (e.g. ``temperature``, ``top_p``).
    """
    rows = [dict(r) for r in rows]
    if not rows:
        raise ValueError("No forget rows to generate guidance answers for.")
    for i, row in enumerate(rows):
        if not row_images(row):
            raise ValueError(f"{row_name(row, i)} has no image: PUBG's guidance answer describes the forget image.")
        _query_for(row, query, i)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if concept_policy not in CONCEPT_POLICIES:
        raise ValueError(f"concept_policy must be one of {CONCEPT_POLICIES}, got {concept_policy!r}.")
    if concept_retries < 0:
        raise ValueError(f"concept_retries must be >= 0, got {concept_retries}.")
    settings = dict(prompt=prompt, query=query, prompt_position=prompt_position, max_new_tokens=max_new_tokens,
                    min_new_tokens=min_new_tokens, seed=seed, batch_size=batch_size, do_sample=do_sample,
                    concept_key=concept_key, concept_retries=concept_retries, concept_policy=concept_policy,
                    generate_kwargs={k: repr(v) for k, v in sorted(generate_kwargs.items())})
    cache = key = answers = None
    if cache_dir is not None:
        cache = PUBGGuidanceCache(cache_dir)
        key = cache.key(model, processor, rows, settings)
        answers = cache.load(key)
        if answers is not None and len(answers) != len(rows):
            answers = None
    fresh = answers is None

    from .._progress import progress_bar

    renderer = VLMUnlearningCollator(processor, return_index=False)
    tokenizer = getattr(processor, "tokenizer", processor)

    def generate(indices: list[int], seed: int, desc: str) -> list[str]:
        out_answers: list[str] = []
        bar = progress_bar(total=len(indices), desc=desc, enabled=progress, unit="row")
        with _reference_mode(model) as ref, _left_padding(processor), torch.no_grad():
            device = next(ref.parameters()).device
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                texts, images = [], []
                for i in chunk:
                    row = rows[i]
                    question = incontext_question(_query_for(row, query, i), prompt, prompt_position)
                    texts.append(renderer.render({**row, "question": question}, include_answer=False, index=i))
                    images.append(row_images(row))  # one list per row, as the collator does (Gemma 3, SmolVLM)
                inputs = to_device(dict(processor(text=texts, images=images, return_tensors="pt", padding=True)),
                                   device, getattr(ref, "dtype", None))
                fork = [device.index or 0] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=fork):
                    torch.manual_seed(seed + start)
                    out = ref.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                       do_sample=do_sample, **generate_kwargs)
                new_tokens = out[:, inputs["input_ids"].shape[1] :]
                out_answers.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
                bar.update(len(chunk))
        bar.close()
        return out_answers

    if fresh:
        answers = generate(list(range(len(rows))), seed, "PUBG guidance answers o* (reference model, once)")
    for attempt in range(1, concept_retries + 1):
        leaks = answers_naming_concepts(rows, answers, concept_key)
        if not leaks:
            break
        fresh = True
        for i, answer in zip(leaks, generate(leaks, seed + 100_003 * attempt, "PUBG guidance answers naming the concept, again")):
            answers[i] = answer
    answers = drop_answers_naming_concepts(rows, answers, concept_key, concept_policy, "generated guidance answer")
    empty = [row_name(r, i) for i, (r, a) in enumerate(zip(rows, answers)) if a is not None and not a]
    if empty:
        raise ValueError(f"The reference model produced an empty answer for {', '.join(empty)}; raise "
                         f"min_new_tokens or change the prompt.")
    if cache is not None and fresh:
        cache.save(key, answers)
    return build_guidance_rows(rows, answers, query)


# -- pairing -------------------------------------------------------------------------------------------------------
class PUBGDataset(torch.utils.data.Dataset):
    """A :class:`ForgetRetainDataset` whose items also carry ``"guidance"``: the o* row of the same forget
    sample (same index, so ``sample_index`` agrees), or None for a row whose o* was dropped."""

    def __init__(self, paired: ForgetRetainDataset, guidance_rows: Sequence[dict | None]):
        if len(guidance_rows) != len(paired):
            raise ValueError(f"{len(guidance_rows)} guidance rows for {len(paired)} forget rows; give one per row.")
        self.paired, self.guidance = paired, guidance_rows

    def __len__(self) -> int:
        return len(self.paired)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.paired[i])
        guidance = self.guidance[i]
        item["guidance"] = None if guidance is None else {**guidance, "__index__": i}
        return item


class PUBGCollator(ForgetRetainCollator):
    """Collate :class:`PUBGDataset` items into ``{"forget", "retain", "guidance"}`` batches; ``guidance`` holds the
    rows that have an o* (None if no row of the batch has one)."""

    def __init__(self, forget_collator, retain_collator=None, guidance_collator=None):
        super().__init__(forget_collator, retain_collator)
        self.guidance_collator = guidance_collator or forget_collator

    def __call__(self, items: Sequence[dict]) -> dict:
        out = super().__call__(items)
        if items and "forget" in items[0] and "guidance" in items[0]:
            guidance = [it["guidance"] for it in items if it.get("guidance") is not None]
            out["guidance"] = self.guidance_collator(guidance) if guidance else None
        return out
