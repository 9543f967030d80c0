"""Pure text metrics for unlearning evaluation (no model needed).

Every function takes plain Python lists (one entry per evaluated example) and returns a float or a dict of
floats. The rules below are the contract; papers report these metrics inconsistently, so the names and keys
here say exactly which variant is computed.

General rules
    * Empty input (no rows) raises ``ValueError``; no function silently returns NaN.
    * Paired inputs (predictions and their targets) must have the same length, otherwise ``ValueError``.
    * Passing a bare string where a list of strings is expected raises ``TypeError`` (iterating over its
      characters would give a silently wrong score); so does a non-string prediction (e.g. ``None``).
    * Fractions are ``hits / rows`` in [0, 1].

Normalisation (:func:`normalize`)
    Lower-case, then collapse every run of whitespace to one space and strip both ends. Nothing else
    (punctuation is kept).

Phrase matching (:func:`contains_phrase`, used by :func:`name_recall`, :func:`attribute_accuracy`,
:func:`privacy_leak`)
    Text and phrase are lower-cased and split into *word tokens*: maximal runs of letters and digits
    (Unicode aware; everything else - whitespace, punctuation, underscores - is a separator). The phrase
    matches if its tokens occur as a contiguous run of the text's tokens. Hence matching is case-insensitive,
    whole-word, and ignores extra whitespace and punctuation: ``"Vorana  Kell ,"`` and ``"vorana kell."``
    contain ``"vorana kell"``, ``"xvorana kell"`` does not. Consequences: punctuation inside a phrase is also
    a separator (``"New-York"`` matches ``"new york"``), and a phrase without any letter or digit raises
    ``ValueError``.

ROUGE-L (:func:`rouge_l`, :func:`rouge_l_f`)
    Sentence-level ROUGE-L (longest common subsequence, *not* the summary-level ``rougeLsum``) from
    ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemmed)``, one reference per prediction,
    averaged over rows (macro mean, not a corpus-level pooled score). Per row: ``P = LCS / len(prediction)``,
    ``R = LCS / len(reference)``, ``F = 2PR / (P + R)`` (F1, beta = 1). Tokenisation is rouge_score's: lower-case,
    every character outside ``[a-z0-9]`` is a separator (so non-ASCII letters are dropped), no stemming by
    default. A row in which either side has no tokens scores 0 (even if both are empty). Keys: ``rougeL_f``,
    ``rougeL_p``, ``rougeL_r``; with ``stemmed=True`` (Porter stemmer, as MLLMU-Bench's and CLEAR's scripts)
    ``rougeL_f_stemmed``, ``rougeL_p_stemmed``, ``rougeL_r_stemmed``.

BLEU (:func:`bleu`)
    Corpus-level BLEU (Papineni et al. 2002) computed by ``sacrebleu`` (``tokenize="none"`` on the normalised
    text, ``smooth_method="add-k"`` with k = 1, or ``"none"``), with one reference per prediction, in [0, 1]
    (sacrebleu's score / 100). Tokens
    are the whitespace-separated tokens of the normalised text (punctuation stays attached: ``"kell."`` is not
    ``"kell"``). For each order n = 1..max_order, clipped n-gram matches and candidate n-gram counts are summed
    over the corpus before dividing (pooled, not an average of sentence scores). Score =
    ``BP * exp(mean_n log p_n)`` (uniform weights). Brevity penalty uses the pooled lengths: with c the total
    prediction length and r the total reference length, ``BP = 1`` if ``c > r`` else ``exp(1 - r / c)``.
    Smoothing (``smooth=True``, the default): add-one on the precisions of orders n > 1,
    ``p_n = (m_n + 1) / (t_n + 1)`` (Lin & Och 2004 "smoothing 1", applied here to the pooled counts); p_1 is
    never smoothed. Without smoothing, any zero p_n (including an order with no candidate n-grams, i.e. all
    predictions shorter than n tokens) gives 0. If the predictions have no tokens at all, BLEU is 0.

Diversity (:func:`diversity`)
    Words are the whitespace tokens of the normalised predictions (as in BLEU). ``unique_words`` is the
    number of distinct words over all predictions (an integer count), ``unique_word_ratio`` is distinct / total
    words, 0.0 if there are no words.

Multiple choice
    :func:`first_letter_choice` (MLLMU-Bench-style first-letter rule): repeatedly strip, from the start,
    whitespace, opening brackets ``( [ { <``, quotes (straight and typographic, backticks), and the
    case-insensitive whole-word prefixes ``option`` and ``answer`` (each with an optional ``:``). Then the
    first character is the choice if it is one of ``letters`` and is followed by the end of the text or by a
    non-letter: ``"a)"``, ``"b."``, ``"c"``, ``"(d) foo"``, ``"Answer: B"`` parse; ``"apple"`` and ``""`` give
    ``None``. Case-insensitive; the result is lower-case. :func:`mc_accuracy_by_letter` counts unparseable
    predictions as wrong. :func:`mc_accuracy_by_loglik` takes the argmax of each row's option scores (e.g.
    summed log-likelihoods); ties go to the lowest index; NaN scores raise ``ValueError``.

Aggregation (:func:`summarize`)
    ``mean`` and ``std`` over seeds, std being the *population* standard deviation (ddof=0), so a single
    value has std 0.0. NaN or infinite values raise ``ValueError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from rouge_score import rouge_scorer

__all__ = [
    "normalize",
    "contains_phrase",
    "name_recall",
    "attribute_accuracy",
    "privacy_leak",
    "rouge_l",
    "rouge_l_f",
    "bleu",
    "diversity",
    "first_letter_choice",
    "mc_accuracy_by_letter",
    "mc_accuracy_by_loglik",
    "coherence",
    "summarize",
]

_WHITESPACE_RE = re.compile(r"\s+")
# Letters and digits (Unicode); "_" is a word character for \w, so exclude it explicitly.
_WORD_RE = re.compile(r"[^\W_]+")
_OPEN_CHARS = "([{<\"'`\u201c\u201d\u2018\u2019\u00ab\u201e"
_PREFIX_RE = re.compile(r"(?:option|answer)\b\s*:?", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------


def _check_rows(name: str, rows) -> None:
    if isinstance(rows, str):
        raise TypeError(f"{name} must be a list with one entry per example, got a single string")
    if len(rows) == 0:
        raise ValueError(f"{name} is empty: cannot compute a metric over zero examples")


def _check_strings(name: str, rows) -> None:
    _check_rows(name, rows)
    for i, row in enumerate(rows):
        if not isinstance(row, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(row).__name__}")


def _check_same_length(name_a: str, rows_a, name_b: str, rows_b) -> None:
    if isinstance(rows_b, str):
        raise TypeError(f"{name_b} must be a list with one entry per example, got a single string")
    if len(rows_a) != len(rows_b):
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {len(rows_a)} and {len(rows_b)}")


def _phrases(name: str, value) -> list[str]:
    """A phrase or a list of alternative phrases -> non-empty list of phrases."""
    if isinstance(value, str):
        return [value]
    phrases = list(value)
    if not phrases:
        raise ValueError(f"{name} is an empty list of phrases")
    for phrase in phrases:
        if not isinstance(phrase, str):
            raise TypeError(f"{name} must contain strings, got {type(phrase).__name__}")
    return phrases


def _fraction(hits: int, total: int) -> float:
    return hits / total


# --------------------------------------------------------------------------------------------------------------
# Normalisation and phrase matching
# --------------------------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lower-case ``text`` and collapse whitespace (runs become one space, ends stripped)."""
    return _WHITESPACE_RE.sub(" ", text.lower()).strip()


def _word_tokens(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words, ignoring case, whitespace and punctuation.

    Raises ``ValueError`` if ``phrase`` has no letter or digit.
    """
    needle = _word_tokens(phrase)
    if not needle:
        raise ValueError(f"phrase {phrase!r} contains no letter or digit, so it cannot be matched")
    haystack = _word_tokens(text)
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def _contains_any(text: str, phrases: list[str]) -> bool:
    return any(contains_phrase(text, phrase) for phrase in phrases)


def name_recall(predictions: Sequence[str], names: Sequence[str | Sequence[str]]) -> float:
    """Fraction of predictions that mention their row's name (a string, or a list of aliases: any alias hits)."""
    _check_strings("predictions", predictions)
    _check_same_length("predictions", predictions, "names", names)
    hits = sum(_contains_any(p, _phrases(f"names[{i}]", n)) for i, (p, n) in enumerate(zip(predictions, names)))
    return _fraction(hits, len(predictions))


def attribute_accuracy(predictions: Sequence[str], expected: Sequence[str | Sequence[str]]) -> float:
    """Fraction of predictions that contain their row's expected value phrase (or any of a list of aliases)."""
    _check_strings("predictions", predictions)
    _check_same_length("predictions", predictions, "expected", expected)
    hits = sum(_contains_any(p, _phrases(f"expected[{i}]", e)) for i, (p, e) in enumerate(zip(predictions, expected)))
    return _fraction(hits, len(predictions))


def privacy_leak(predictions: Sequence[str], private_values: Sequence[Sequence[str]]) -> float:
    """Fraction of predictions that mention at least one of their row's private phrases (name, attributes)."""
    _check_strings("predictions", predictions)
    _check_same_length("predictions", predictions, "private_values", private_values)
    hits = sum(
        _contains_any(p, _phrases(f"private_values[{i}]", v))
        for i, (p, v) in enumerate(zip(predictions, private_values))
    )
    return _fraction(hits, len(predictions))


# --------------------------------------------------------------------------------------------------------------
# ROUGE-L
# --------------------------------------------------------------------------------------------------------------

_ROUGE_SCORERS: dict[bool, rouge_scorer.RougeScorer] = {}


def _rouge_scorer(stemmed: bool) -> rouge_scorer.RougeScorer:
    if stemmed not in _ROUGE_SCORERS:
        _ROUGE_SCORERS[stemmed] = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemmed)
    return _ROUGE_SCORERS[stemmed]


def rouge_l(predictions: Sequence[str], references: Sequence[str], stemmed: bool = False) -> dict[str, float]:
    """Mean sentence-level ROUGE-L: ``{"rougeL_f", "rougeL_p", "rougeL_r"}`` (one reference per prediction);
    with ``stemmed=True`` (Porter stemmer) the keys end in ``_stemmed``."""
    _check_strings("predictions", predictions)
    _check_same_length("predictions", predictions, "references", references)
    _check_strings("references", references)
    scorer = _rouge_scorer(bool(stemmed))
    f_sum = p_sum = r_sum = 0.0
    for prediction, reference in zip(predictions, references):
        score = scorer.score(reference, prediction)["rougeL"]  # rouge_score's order is (target, prediction)
        f_sum += score.fmeasure
        p_sum += score.precision
        r_sum += score.recall
    n, suffix = len(predictions), "_stemmed" if stemmed else ""
    return {f"rougeL_f{suffix}": f_sum / n, f"rougeL_p{suffix}": p_sum / n, f"rougeL_r{suffix}": r_sum / n}


def rouge_l_f(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean sentence-level ROUGE-L F-measure (F1)."""
    return rouge_l(predictions, references)["rougeL_f"]


# --------------------------------------------------------------------------------------------------------------
# BLEU
# --------------------------------------------------------------------------------------------------------------


def bleu(predictions: Sequence[str], references: Sequence[str], max_order: int = 4, smooth: bool = True) -> float:
    """Corpus BLEU in [0, 1] by sacrebleu on whitespace tokens of normalised text (see the module docstring)."""
    _check_strings("predictions", predictions)
    _check_same_length("predictions", predictions, "references", references)
    _check_strings("references", references)
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1:
        raise ValueError(f"max_order must be a positive integer, got {max_order!r}")
    from sacrebleu.metrics import BLEU

    metric = BLEU(tokenize="none", smooth_method="add-k" if smooth else "none", smooth_value=1,
                  max_ngram_order=max_order, force=True)
    score = metric.corpus_score([normalize(p) for p in predictions], [[normalize(r) for r in references]])
    return score.score / 100


# --------------------------------------------------------------------------------------------------------------
# Diversity
# --------------------------------------------------------------------------------------------------------------


def diversity(predictions: Sequence[str]) -> dict[str, float]:
    """``{"unique_words": distinct words (int), "unique_word_ratio": distinct / total words (0.0 if none)}``."""
    _check_strings("predictions", predictions)
    words = [word for prediction in predictions for word in normalize(prediction).split()]
    unique = len(set(words))
    return {"unique_words": unique, "unique_word_ratio": unique / len(words) if words else 0.0}


# --------------------------------------------------------------------------------------------------------------
# Multiple choice
# --------------------------------------------------------------------------------------------------------------


def _check_letters(letters: str) -> str:
    if not isinstance(letters, str) or not letters:
        raise ValueError("letters must be a non-empty string of option letters, e.g. 'abcd'")
    letters = letters.lower()
    if not all(ch.isalpha() for ch in letters):
        raise ValueError(f"letters must contain only letters, got {letters!r}")
    return letters


def first_letter_choice(text: str, letters: str = "abcd") -> str | None:
    """The option letter a free-form answer starts with (lower-case), or ``None`` if it starts with none.

    Strips leading whitespace, opening brackets, quotes and ``option`` / ``answer:`` prefixes, then accepts the
    first character if it is in ``letters`` and followed by the end of the text or a non-letter.
    """
    letters = _check_letters(letters)
    rest = text
    while True:
        stripped = rest.lstrip().lstrip(_OPEN_CHARS)
        prefix = _PREFIX_RE.match(stripped)
        if prefix:
            stripped = stripped[prefix.end() :]
        if stripped == rest:
            break
        rest = stripped
    if not rest:
        return None
    first = rest[0].lower()
    if first not in letters:
        return None
    if len(rest) > 1 and rest[1].isalpha():
        return None
    return first


def mc_accuracy_by_letter(predictions: Sequence[str], gold_letters: Sequence[str], letters: str = "abcd") -> float:
    """Fraction of predictions whose :func:`first_letter_choice` equals the gold letter (unparseable = wrong)."""
    _check_strings("predictions", predictions)
    _check_same_length("predictions", predictions, "gold_letters", gold_letters)
    _check_strings("gold_letters", gold_letters)
    letters = _check_letters(letters)
    hits = 0
    for i, (prediction, gold) in enumerate(zip(predictions, gold_letters)):
        gold = gold.strip().lower()
        if len(gold) != 1 or gold not in letters:
            raise ValueError(f"gold_letters[{i}] = {gold_letters[i]!r} is not one of {letters!r}")
        hits += first_letter_choice(prediction, letters) == gold
    return _fraction(hits, len(predictions))


def _argmax_lowest(scores: list[float]) -> int:
    best = 0
    for i in range(1, len(scores)):
        if scores[i] > scores[best]:
            best = i
    return best


def mc_accuracy_by_loglik(option_scores: Sequence[Sequence[float]], gold_indices: Sequence[int]) -> float:
    """Fraction of rows whose highest-scoring option is the gold one (ties go to the lowest index)."""
    _check_rows("option_scores", option_scores)
    _check_same_length("option_scores", option_scores, "gold_indices", gold_indices)
    hits = 0
    for i, (row, gold) in enumerate(zip(option_scores, gold_indices)):
        scores = [float(s) for s in row]
        if not scores:
            raise ValueError(f"option_scores[{i}] is empty")
        if any(math.isnan(s) for s in scores):
            raise ValueError(f"option_scores[{i}] contains NaN")
        gold = int(gold)
        if not 0 <= gold < len(scores):
            raise ValueError(f"gold_indices[{i}] = {gold} is out of range for {len(scores)} options")
        hits += _argmax_lowest(scores) == gold
    return _fraction(hits, len(option_scores))


# --------------------------------------------------------------------------------------------------------------
# Coherence and aggregation
# --------------------------------------------------------------------------------------------------------------


def coherence(predictions: Sequence[str], is_well_formed: Callable[[str], bool]) -> float:
    """Fraction of predictions for which ``is_well_formed(prediction)`` is truthy."""
    _check_strings("predictions", predictions)
    if not callable(is_well_formed):
        raise TypeError("is_well_formed must be a callable taking a prediction and returning a bool")
    hits = sum(bool(is_well_formed(prediction)) for prediction in predictions)
    return _fraction(hits, len(predictions))


def summarize(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std"}`` of per-seed values; std is the population standard deviation (ddof=0)."""
    _check_rows("values", values)
    floats = [float(v) for v in values]
    if not all(math.isfinite(v) for v in floats):
        raise ValueError(f"values must be finite numbers, got {floats}")
    mean = math.fsum(floats) / len(floats)
    variance = math.fsum((v - mean) ** 2 for v in floats) / len(floats)
    return {"mean": mean, "std": math.sqrt(variance)}
