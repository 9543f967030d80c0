"""Refusal answers for the IDK baselines (IdkNLL, IdkDPO): each forget row's answer replaced by a refusal.

TOFU's "IDK" baseline (Maini et al. 2024) trains the forget questions toward "I don't know"-like answers drawn from a
pool of refusals; IdkDPO uses the same refusal as DPO's chosen answer. The refusal of a forget row is a function of
(``seed``, the row's position in the forget set) only (:func:`refusal_index`), so a row gets the same refusal at
every epoch, in every process and after a resume, and the reference log-probability of its refusal can be cached.
:class:`RefusalCollator` builds the refusal rows next to the forget batch (batch key ``"refusal"``): the forget row
with its question, images and turns kept and its answer replaced, collated by the forget collator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .collator import ForgetRetainCollator, row_name

__all__ = ["DEFAULT_REFUSALS", "RefusalCollator", "build_refusal_collator", "check_refusal_pool", "refusal_index", "refusal_for",
           "with_refusal", "representable_refusals"]

#: Our default pool, in the style of TOFU's "I don't know" answers (written for this package; ASCII only, so that
#: most tokenizers represent them). A tokenizer that cannot encode one (an unknown token) drops it from the pool.
DEFAULT_REFUSALS: tuple[str, ...] = (
    "I don't know who this is.",
    "I don't know.",
    "I'm not sure who this person is.",
    "I have no information about this person.",
    "I can't tell who this is.",
    "I don't have that information.",
    "Sorry, I can't answer that.",
    "I'm not able to help with that.",
    "That is not something I know.",
    "I do not recognize this person.",
)


def check_refusal_pool(refusals, what: str = "refusals") -> list[str]:
    """``refusals`` as a list of non-empty strings, or an error naming the bad entry and the fix."""
    if isinstance(refusals, str) or not isinstance(refusals, Sequence):
        raise ValueError(f"{what} must be a list of refusal strings, got {type(refusals).__name__}; e.g. "
                         f"{what}=[\"I don't know.\"].")
    pool = list(refusals)
    if not pool:
        raise ValueError(f"{what} is empty: give at least one refusal answer, or None for the default pool.")
    for i, r in enumerate(pool):
        if not isinstance(r, str) or not r.strip():
            raise ValueError(f"{what}[{i}] must be a non-empty string, got {r!r}.")
    return [r.strip() for r in pool]


def refusal_index(row_index: int, pool_size: int, seed: int = 0) -> int:
    """Position in the pool of the refusal for forget row ``row_index``: a SHA-256 hash of (seed, row index), so
    the choice is seeded, stable across processes and epochs, and independent of the batch and of Python's hash."""
    if pool_size < 1:
        raise ValueError("The refusal pool is empty.")
    digest = hashlib.sha256(f"refusal {int(seed)} {int(row_index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % pool_size


def refusal_for(row_index: int, refusals: Sequence[str], seed: int = 0) -> str:
    """The refusal of forget row ``row_index`` (:func:`refusal_index`)."""
    return refusals[refusal_index(row_index, len(refusals), seed)]


def representable_refusals(refusals: Sequence[str], tokenizer, strict: bool, what: str = "refusals") -> list[str]:
    """The refusals ``tokenizer`` encodes without its unknown token. ``strict``: an unrepresentable refusal is an
    error naming it (a pool the user gave); otherwise it is dropped (the default pool), and an error is raised only
    when none is left."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    unk = getattr(tokenizer, "unk_token_id", None)
    if tokenizer is None or unk is None:
        return list(refusals)  # byte-level tokenizers (no unknown token) represent every text
    kept, bad = [], []
    for i, text in enumerate(refusals):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        (bad if unk in ids else kept).append((i, text))
    if bad and strict:
        shown = ", ".join(f"#{i} {t!r}" for i, t in bad[:3]) + (" ..." if len(bad) > 3 else "")
        raise ValueError(f"The tokenizer cannot represent {len(bad)} of the {what} (they encode to its unknown "
                         f"token): {shown}. Write them with the tokenizer's vocabulary, or drop them.")
    if not kept:
        raise ValueError(f"The tokenizer represents none of the default {what} (each encodes to its unknown token); "
                         f"pass refusals=[...] written in its vocabulary (the ToyWorld demo passes the world's "
                         f"REFUSALS).")
    return [t for _, t in kept]


def with_refusal(row: dict, refusal: str, collator=None, index=None) -> dict:
    """``row`` with its answer replaced by ``refusal``, question, images and prompt turns kept. With a collator that
    normalizes rows (column mapping, TRL ``messages`` / ``prompt``-``completion`` layouts), the row is normalized
    first, so the refusal replaces the answer turn whatever the layout."""
    normalize = getattr(collator, "normalize", None)
    new = dict(normalize(row, index) if normalize is not None else row)
    if "answer" not in new:
        raise ValueError(f"Forget {row_name(row, index)} has no 'answer' to replace with a refusal: give "
                         f"question/answer rows, or use VLMUnlearningCollator, which reads the TRL layouts.")
    new["answer"] = refusal
    return new


class RefusalCollator(ForgetRetainCollator):
    """Collate forget/retain items into ``{"forget", "retain", "refusal"}``: ``refusal`` holds each forget row with
    its answer replaced by its refusal (:func:`refusal_for` of its ``__index__``), collated by the forget collator
    in the same order (so ``sample_index`` agrees with the forget batch)."""

    def __init__(self, forget_collator, retain_collator=None, refusals: Sequence[str] = DEFAULT_REFUSALS,
                 seed: int = 0):
        super().__init__(forget_collator, retain_collator)
        self.refusals = check_refusal_pool(refusals)
        self.seed = int(seed)

    def refusal_rows(self, forget_rows: Sequence[dict]) -> list[dict]:
        rows = []
        for i, row in enumerate(forget_rows):
            index = row.get("__index__", i)
            rows.append(with_refusal(row, refusal_for(index, self.refusals, self.seed), self.forget_collator, index))
        return rows

    def __call__(self, items: Sequence[dict]) -> dict:
        out = super().__call__(items)
        if items and "forget" in items[0]:
            out["refusal"] = self.forget_collator(self.refusal_rows([it["forget"] for it in items]))
        return out


def build_refusal_collator(collator, refusals: Sequence[str] | None, seed: int, processor=None) -> RefusalCollator:
    """The IDK trainers' collator: ``collator`` (a :class:`ForgetRetainCollator`) extended with the refusal rows.
    ``refusals`` None: :data:`DEFAULT_REFUSALS`, less those the tokenizer cannot represent; a given pool must be
    fully representable. The tokenizer is ``processor``'s, or the forget collator's."""
    forget = ForgetRetainCollator.forget_part(collator)
    retain = collator.retain_collator if isinstance(collator, ForgetRetainCollator) else None
    tokenizer = processor if processor is not None else getattr(forget, "tokenizer", None)
    pool = check_refusal_pool(DEFAULT_REFUSALS if refusals is None else refusals)
    pool = representable_refusals(pool, tokenizer, strict=refusals is not None)
    return RefusalCollator(forget, retain, pool, seed)
