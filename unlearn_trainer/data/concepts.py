"""Concept-token masks for token-level unlearning (FTTP): which answer tokens spell the concept to forget.

Each row names its concept in ``row["concepts"]`` (one string or a list of aliases, e.g. ``["Donald Trump",
"Trump"]``). The concept is found in the answer text (case-insensitive, every occurrence, whole words by
default, any whitespace between the words of a multi-word name) and the character spans are mapped to
tokens through the tokenizer's offsets: an answer token is a concept token if its character span overlaps
a concept occurrence. This handles names split into several tokens and tokenizers that merge the leading
space into the token (byte-level BPE ``"Ġname"``, SentencePiece ``"▁name"``): the token covering
``" name"`` overlaps ``"name"``. A token made only of the space before the name does not overlap it.
Both sides are compared in NFC (an accent typed as a combining mark matches the precomposed letter; spans are
mapped back to the text as given), and in scripts written without spaces (Chinese, Japanese, Thai...) a name is
found by its characters, since there is no word boundary to look for.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import torch

from .collator import ForgetRetainCollator, VLMUnlearningCollator, row_name

__all__ = [
    "ConceptMaskCollator",
    "ConceptForgetRetainCollator",
    "find_concept_spans",
    "concept_token_mask",
    "MISSING_CONCEPT_OPTIONS",
]

#: What to do with a row whose answer contains none of its concepts: raise, or train it with GD only.
MISSING_CONCEPT_OPTIONS = ("error", "gd")


#: Scripts written without spaces between words (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar, Tibetan,
#: Bopomofo, Yi) and Hangul, whose particles attach to the name. Python counts their characters as ``\w``, so a word
#: boundary next to a name written in them never holds: a concept edge in these scripts is matched by characters.
_UNSPACED = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u0f00-\u0fff"  # Tibetan
    "\u1000-\u109f"  # Myanmar
    "\u1100-\u11ff"  # Hangul Jamo
    "\u1780-\u17ff"  # Khmer
    "\u2e80-\u2fdf"  # CJK radicals
    "\u3005-\u3007\u3021-\u3029\u3031-\u3035\u3038-\u303c"  # CJK iteration marks and numerals
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u31ff"  # Bopomofo, Hangul compatibility Jamo, Katakana extensions
    "\u3400-\u4dbf\u4e00-\u9fff"  # CJK unified ideographs
    "\ua000-\ua4cf"  # Yi
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0003ffff"  # CJK extensions
)
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED}]")
# Not preceded / followed by a word character of a spaced script ("Ann" not inside "Annual", but "Trump" right after
# a Chinese character is found).
_NO_WORD_BEFORE = rf"(?<![^\W{_UNSPACED}])"
_NO_WORD_AFTER = rf"(?![^\W{_UNSPACED}])"


def _pattern(concept: str, whole_words: bool) -> re.Pattern:
    words = concept.split()
    body = r"\s+".join(re.escape(w) for w in words)
    if whole_words:
        first, last = words[0][0], words[-1][-1]
        if re.match(r"\w", first) and not _UNSPACED_CHAR.match(first):
            body = _NO_WORD_BEFORE + body
        if re.match(r"\w", last) and not _UNSPACED_CHAR.match(last):
            body = body + _NO_WORD_AFTER
    return re.compile(body, re.IGNORECASE)


def _nfc(text: str) -> tuple[str, list[int], list[int]]:
    """``text`` in NFC, and for every position of the NFC text the start and the end (in ``text``) of the original
    characters it came from.

    NFC composes a letter with its combining marks ("e" + U+0301 -> one character), so positions shift. The text is
    cut into pieces that normalize on their own (a piece ends before a character that does not combine with it);
    every character of a normalized piece maps to the whole original piece.
    """
    if unicodedata.is_normalized("NFC", text):
        identity = list(range(len(text) + 1))
        return text, identity[:-1], identity[1:]
    pieces, start = [], 0
    for i in range(1, len(text)):
        head, ch = text[start:i], text[i]
        if unicodedata.combining(ch) == 0 and unicodedata.normalize("NFC", head + ch) == (
            unicodedata.normalize("NFC", head) + unicodedata.normalize("NFC", ch)
        ):
            pieces.append((start, i))
            start = i
    pieces.append((start, len(text)))
    norm, starts, ends = [], [], []
    for s, e in pieces:
        piece = unicodedata.normalize("NFC", text[s:e])
        norm.append(piece)
        starts.extend([s] * len(piece))
        ends.extend([e] * len(piece))
    return "".join(norm), starts, ends


def find_concept_spans(text: str, concepts: Iterable[str], whole_words: bool = True) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of every occurrence of any concept in ``text``, sorted and merged.

    Matching is case-insensitive, tolerant of the whitespace between a name's words, and runs on the NFC form of
    both sides (a name typed with combining accents matches its precomposed form, and back); the spans are
    positions in ``text`` as given. With ``whole_words`` a match must not continue a longer word ("Ann" does not
    match inside "Annual"; "Trump's" matches "Trump"); an edge of the name in a script written without spaces
    (Chinese, Japanese, Thai...; see ``_UNSPACED``) is matched by characters, wherever it occurs.
    """
    norm, starts, ends = _nfc(text)
    spans = []
    for concept in concepts:
        if not isinstance(concept, str) or not concept.strip():
            raise ValueError(f"Concepts must be non-empty strings, got a {type(concept).__name__} (empty or not a "
                             f"string).")
        pattern = _pattern(unicodedata.normalize("NFC", concept.strip()), whole_words)
        spans.extend((starts[m.start()], ends[m.end() - 1]) for m in pattern.finditer(norm) if m.end() > m.start())
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def concept_token_mask(char_offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """For each token's character span ``(s, e)``, whether it overlaps any concept span (zero-width tokens never do)."""
    return [e > s and any(s < ce and cs < e for cs, ce in spans) for s, e in char_offsets]


class ConceptMaskCollator(VLMUnlearningCollator):
    """:class:`VLMUnlearningCollator` that also returns ``concept_mask`` (bool ``[B, T]``, True on the answer
    tokens that spell the row's concept; aligned with ``labels``; stripped before the model forward).

    Args:
        processor: the model's processor (or a tokenizer with a chat template, for text-only rows).
        concept_key: the row field holding the concept: a string or a list of aliases.
        missing_concept: "error" (a row whose answer contains none of its concepts raises an error naming the
            row) or "gd" (that row's mask is all False: it is trained with gradient descent only; with this
            option a row may also have no concept at all, i.e. None or an empty list).
        whole_words: only match concepts that are not part of a longer word.
        **kwargs: passed to :class:`VLMUnlearningCollator`.
    """

    def __init__(self, processor, concept_key: str = "concepts", missing_concept: str = "error",
                 whole_words: bool = True, **kwargs):
        super().__init__(processor, **kwargs)
        if missing_concept not in MISSING_CONCEPT_OPTIONS:
            raise ValueError(f"missing_concept must be one of {MISSING_CONCEPT_OPTIONS}, got {missing_concept!r}.")
        self.concept_key = concept_key
        self.missing_concept = missing_concept
        self.whole_words = whole_words

    def row_concepts(self, row: dict, index=None) -> list[str]:
        """The concept strings of a row (its aliases)."""
        value = row.get(self.concept_key)
        if isinstance(value, str):
            value = [value]
        if value is None or len(value) == 0:
            if self.missing_concept == "gd" and (value is not None or self.concept_key in row):
                return []
            raise ValueError(
                f"{row_name(row, index)} has no {self.concept_key!r} field: give the concept to forget (a string or a "
                f"list of aliases) in every forget row."
            )
        if not all(isinstance(c, str) and c.strip() for c in value):
            kinds = sorted({type(c).__name__ for c in value})
            raise ValueError(f"{row_name(row, index)}: {self.concept_key!r} must be non-empty strings, got "
                             f"{len(value)} value(s) of type {kinds} (some empty or not strings).")
        return list(value)

    def encode(self, rows: Sequence[dict]) -> tuple[dict, list]:
        batch, spans = super().encode(rows)
        mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
        for i, (row, span) in enumerate(zip(rows, spans)):
            index = row.get("__index__", i)
            concepts = self.row_concepts(row, index)
            token_mask = concept_token_mask(span.char_offsets, find_concept_spans(span.answer, concepts, self.whole_words))
            if not any(token_mask):
                if self.missing_concept == "gd":
                    continue
                raise ValueError(
                    f"{row_name(row, index)}: its answer contains none of its {len(concepts)} concept(s) "
                    f"(case-insensitive, whole words; the texts are not repeated here, they are forget-set data). Fix "
                    f"the row, add an alias, or pass missing_concept='gd' to train such rows with gradient descent only."
                )
            mask[i, span.start : span.end] = torch.tensor(token_mask, dtype=torch.bool)
        batch["concept_mask"] = mask
        return batch, spans


class ConceptForgetRetainCollator(ForgetRetainCollator):
    """Forget rows through a :class:`ConceptMaskCollator`; retain rows and plain rows (e.g. an ``eval_dataset``)
    through a plain collator, so they need no concept field."""

    def __init__(self, forget_collator: ConceptMaskCollator, retain_collator: VLMUnlearningCollator | None = None):
        if retain_collator is None:
            retain_collator = VLMUnlearningCollator(
                forget_collator.processor,
                label_end_of_turn=forget_collator.label_end_of_turn,
                max_length=forget_collator.max_length,
                return_index=forget_collator.return_index,
                max_positions=forget_collator.max_positions,
            )
        super().__init__(forget_collator, retain_collator)

    def __call__(self, items: Sequence[dict]) -> dict:
        if items and "forget" not in items[0]:
            return self.retain_collator(items)
        return super().__call__(items)
