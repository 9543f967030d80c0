"""Chat-template batches for vision-language models with answer-only labels, and forget/retain pairing.

A row is a dict in one of three layouts (:data:`ROW_LAYOUTS`), with ``image`` or ``images`` (optional):

- ``question`` / ``answer`` (strings): the package's own rows;
- ``messages``: TRL's conversational language-modeling rows (SFT), a list of ``{"role", "content"}`` turns whose
  content is a string or a list of ``{"type": "image"}`` / ``{"type": "text", "text"}`` blocks. The *last
  assistant turn* is the answer (what is learned or unlearned); every turn before it (system, earlier user and
  assistant turns) is the prompt; a conversation with turns after its last assistant turn is refused;
- ``prompt`` / ``completion``: TRL's prompt-completion rows, conversational (``completion`` one assistant turn) or
  plain strings (rendered as they are, without a chat template, as TRL does; the prompt then holds the
  processor's image token(s) itself).

Other column names are renamed with ``column_mapping`` (``{"query": "question", "response": "answer"}``).
TRL conversational rows are structured and given their images by TRL's ``prepare_multimodal_messages``; every
conversation is split into prompt and answer text by TRL's ``apply_chat_template``. The collator runs the processor on the whole batch (so
image-token expansion, ``pixel_values``, ``image_grid_thw``, ``mm_token_type_ids``... are exactly what the model
expects), and sets ``labels`` to -100 everywhere except the answer tokens.

Why not TRL's ``DataCollatorForVisionLanguageModeling`` itself (on prompt-completion rows its
``completion_only_loss`` labels equal ours with ``label_end_of_turn=True``, see tests/test_trl_formats.py): it labels
everything the template renders after the answer too (the end-of-turn token and what follows it, e.g. Qwen's
newline), where unlearning scores the answer only (``label_end_of_turn`` adds the end-of-turn token alone); it
truncates to ``max_length`` (we refuse a long row, naming it); it has no ``completion_only_loss`` for ``messages``
rows (only ``assistant_only_loss``, which labels every assistant turn and needs ``{% generation %}`` markers in the
template); it tokenizes prompt and completion separately (the tokens at their boundary can differ from the whole
conversation's); and it does not check the answer tokens in the processor's output, nor refuse PaliGemma text-only
rows or control tokens in the text.

How the answer span is found (robust to image-token expansion): the answer's character span in the
rendered conversation is tokenized with offsets by the tokenizer; image placeholders are expanded by the
processor *before* the answer, so the answer's position counted from the end of the sequence is the same
in the processor's output. The located tokens are then checked id by id against the processor's output;
any mismatch raises an error naming the row.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "VLMUnlearningCollator",
    "ROW_LAYOUTS",
    "row_layout",
    "check_columns",
    "dataset_columns",
    "ForgetRetainDataset",
    "ForgetRetainCollator",
    "build_messages",
    "row_images",
    "row_name",
    "row_id_digest",
    "META_KEYS",
    "model_inputs",
    "to_device",
    "single_image",
    "END_OF_TURN_TOKENS",
]

# Keys a collator may add that are not model inputs; trainers strip them before the forward pass.
META_KEYS = {"sample_index", "concept_mask"}

END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<end_of_utterance>")


def model_inputs(batch: dict) -> dict:
    """The keys of ``batch`` that go to the model's forward (labels and collator metadata removed)."""
    return {k: v for k, v in batch.items() if k not in META_KEYS and k != "labels"}


def to_device(batch: dict, device, dtype: torch.dtype | None = None) -> dict:
    """``batch`` with its tensors on ``device``; with a floating ``dtype`` (the model's), floating tensors
    (``pixel_values``...) are cast to it too. Other values pass through."""
    cast = dtype is not None and dtype.is_floating_point
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device)
            if cast and v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def row_id_digest(row_id) -> str:
    """An opaque short name of a row id (first 8 hex characters of its SHA-256): ids can carry a person's name
    (concept-folder datasets: ``<Name>/<n>/<file>``), so messages and logs show this instead of the id."""
    return hashlib.sha256(str(row_id).encode("utf-8")).hexdigest()[:8]


def row_name(row: dict, index: int | None = None) -> str:
    """How errors and logs name a row: its position in its set, and the :func:`row_id_digest` of its ``id`` if it has
    one; never the id itself, a question or an answer (all may be forget-set data)."""
    digest = None
    if isinstance(row, dict) and row.get("id") not in (None, ""):
        digest = row_id_digest(row["id"])
    if index is not None:
        return f"row #{index}" + (f" (id digest {digest})" if digest else "")
    return f"row with id digest {digest}" if digest else "row"


def row_images(row: dict) -> list:
    """The images of a row, from ``images`` (a list) or ``image`` (one image or None)."""
    images = row.get("images")
    if images is None:
        image = row.get("image")
        images = [] if image is None else [image]
    return [im for im in images if im is not None]


def single_image(entry: Any, index: int, image_column: str | None = None, what: str = "Reference"):
    """The one image of a pool entry (ViKeR's reference images, SGPVT's distant images): an image itself, or a row
    (dict) with exactly one image in ``image``/``images`` or in ``image_column``. ``what`` names the pool in errors."""
    if isinstance(entry, dict):
        if image_column is not None:
            if image_column not in entry:
                raise ValueError(f"{what} {row_name(entry, index)} has no {image_column!r} column.")
            images = entry[image_column]
            images = [im for im in (images if isinstance(images, (list, tuple)) else [images]) if im is not None]
        else:
            images = row_images(entry)
        if len(images) != 1:
            raise ValueError(
                f"{what} {row_name(entry, index)} has {len(images)} images; each {what.lower()} entry must hold "
                f"exactly one image (in 'image', 'images' or the given image column)."
            )
        return images[0]
    if entry is None:
        raise ValueError(f"{what} image #{index} is None.")
    return entry


#: The row layouts a :class:`VLMUnlearningCollator` accepts: name -> the columns that identify it.
ROW_LAYOUTS = {
    "question/answer": ("question", "answer"),
    "messages (TRL conversational)": ("messages",),
    "prompt/completion (TRL prompt-completion)": ("prompt", "completion"),
}


def row_layout(columns) -> str | None:
    """The :data:`ROW_LAYOUTS` name of rows with these columns, or None if none fits."""
    present = set(columns)
    return next((name for name, needed in ROW_LAYOUTS.items() if set(needed) <= present), None)


def _renamed(columns, column_mapping: dict | None) -> list[str]:
    return [(column_mapping or {}).get(c, c) for c in columns]


def check_columns(columns, column_mapping: dict | None = None, what: str = "The dataset") -> str:
    """The layout of rows with ``columns`` (after ``column_mapping``); an error listing the columns found and the
    accepted layouts when none fits. Column names only: no cell of the dataset is read into the message."""
    columns = list(columns)
    layout = row_layout(_renamed(columns, column_mapping))
    if layout is None:
        accepted = "; ".join(f"{name}: {', '.join(map(repr, cols))}" for name, cols in ROW_LAYOUTS.items())
        mapped = f" (after column_mapping={column_mapping!r})" if column_mapping else ""
        raise ValueError(
            f"{what} has columns {sorted(columns)}{mapped}, which fit none of the accepted row layouts ({accepted}; "
            f"each with optional 'image' or 'images'). Rename its columns, e.g. column_mapping={{'query': 'question', "
            f"'response': 'answer'}} on the trainer or the collator."
        )
    return layout


def dataset_columns(dataset) -> list[str] | None:
    """Column names of a ``datasets.Dataset`` (its features), or the keys of the first row of a list / torch dataset
    of dicts; None if they cannot be read without guessing."""
    names = getattr(dataset, "column_names", None)
    if isinstance(names, list):
        return names
    try:
        first = dataset[0]
    except Exception:  # an iterable or an unusual dataset: leave the check to the first batch
        return None
    return list(first) if isinstance(first, dict) else None


def _text_of(message: dict, where: str) -> str:
    """The text of a message whose content is a string or text blocks only."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(isinstance(b, dict) and b.get("type") == "text" for b in content):
        texts = [b.get("text") for b in content]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
    raise ValueError(f"{where}: the answer turn must hold text only (a string or text blocks).")


def _trl_row(row: dict, layout: str, index) -> dict:
    """A TRL-layout row as the collator's internal row: ``prompt_messages`` (structured by TRL's
    ``prepare_multimodal_messages``, images in their blocks) or ``prompt_text`` (plain prompt-completion), the
    ``answer`` string and the ``images`` in prompt order. Other keys pass through."""
    name = row_name(row, index)
    rest = {k: v for k, v in row.items() if k not in ("messages", "prompt", "completion", "image", "images")}
    images = row_images(row)
    if layout.startswith("prompt/") and isinstance(row["prompt"], str):
        if not isinstance(row["completion"], str):
            raise ValueError(f"{name}: 'prompt' is a string but 'completion' is not; give both as strings or both as "
                             f"lists of turns.")
        return {**rest, "prompt_text": row["prompt"], "answer": row["completion"], "images": images}
    if layout.startswith("messages"):
        turns = row["messages"]
        if not isinstance(turns, list) or not all(isinstance(t, dict) and "role" in t for t in turns):
            raise ValueError(f"{name}: 'messages' must be a list of {{'role', 'content'}} turns.")
        last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
        if last is None:
            raise ValueError(f"{name}: its messages have no assistant turn; the last assistant turn is the answer.")
        if last != len(turns) - 1:
            raise ValueError(f"{name}: its messages continue after the last assistant turn (the answer) with "
                             f"{len(turns) - 1 - last} turn(s); end each conversation with the answer.")
        prompt, answer_turn = turns[:last], turns[last]
    else:
        prompt, completion = row["prompt"], row["completion"]
        if not isinstance(prompt, list) or not isinstance(completion, list):
            raise ValueError(f"{name}: 'prompt' and 'completion' must both be lists of turns or both strings.")
        if len(completion) != 1 or not isinstance(completion[0], dict) or completion[0].get("role") != "assistant":
            raise ValueError(f"{name}: its completion must be exactly one assistant turn (the answer), got "
                             f"{len(completion)} turn(s).")
        answer_turn = completion[0]
    if not prompt:
        raise ValueError(f"{name}: no prompt turn before the answer.")
    from trl.data_utils import prepare_multimodal_messages

    try:
        structured = prepare_multimodal_messages(prompt, images=images)
    except ValueError as err:  # TRL's message counts images and placeholders; it names no row
        raise ValueError(f"{name}: {err}") from err
    images = [b["image"] for m in structured if isinstance(m.get("content"), list) for b in m["content"]
              if isinstance(b, dict) and b.get("type") == "image" and b.get("image") is not None]
    return {**rest, "prompt_messages": structured, "answer": _text_of(answer_turn, name), "images": images}


def _image_token(processor) -> str | None:
    tok = getattr(processor, "image_token", None)
    if tok is None:
        tok = getattr(getattr(processor, "tokenizer", None), "image_token", None)
    return tok


def build_messages(row: dict, processor=None, include_answer: bool = True, answer: str | None = None, index=None):
    """Chat messages for a row: a user turn (images, then the question) and optionally the assistant answer.

    If the question itself contains the processor's image token (e.g. ``"<image>"``), those places mark where
    the images go; their count must equal the number of images. A TRL-layout row (normalized by the collator) has
    its prompt turns as ``prompt_messages``.
    """
    if "prompt_messages" in row:
        if include_answer and not isinstance(row.get("answer") if answer is None else answer, str):
            raise ValueError(f"{row_name(row, index)} has no string answer.")
        text = row.get("answer") if answer is None else answer
        return list(row["prompt_messages"]) + (
            [{"role": "assistant", "content": [{"type": "text", "text": text}]}] if include_answer else [])
    for key in ("question",) + (("answer",) if include_answer and answer is None else ()):
        if not isinstance(row.get(key), str):
            raise ValueError(f"{row_name(row, index)} has no string {key!r} field; every row needs 'question' and 'answer'.")
    images = row_images(row)
    question = row["question"]
    token = _image_token(processor) if processor is not None else None
    content: list[dict] = []
    if token and token in question:
        parts = question.split(token)
        if len(parts) - 1 != len(images):
            raise ValueError(
                f"{row_name(row, index)}: the question contains {len(parts) - 1} image placeholder(s) {token!r} but the row "
                f"has {len(images)} image(s). Give one image per placeholder, or remove the placeholders and let the "
                f"collator place the images."
            )
        for i, part in enumerate(parts):
            if part.strip():
                content.append({"type": "text", "text": part.strip()})
            if i < len(images):
                content.append({"type": "image"})
    else:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    if include_answer:
        text = row["answer"] if answer is None else answer
        messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
    return messages


@dataclass
class RowSpan:
    """Where a row's answer sits: token positions [start, end) in the batch and each answer token's char offsets."""

    start: int
    end: int
    char_offsets: list[tuple[int, int]] = field(default_factory=list)  # relative to the answer string
    answer: str = ""


class VLMUnlearningCollator:
    """Turn rows into the processor's full model input with ``labels`` on the answer tokens only.

    Args:
        processor: a Hugging Face processor with a chat template (or a tokenizer, for text-only models).
        label_end_of_turn: also supervise the end-of-turn token after the answer (useful for fine-tuning, so
            generation learns to stop; off by default for unlearning, where only the answer is scored).
        max_length: raise an error naming the row if a sequence is longer (no silent truncation that could
            cut image tokens or the answer).
        return_index: add ``sample_index`` (from the row's ``__index__``) so trainers can cache per-sample values.
        max_positions: the model's position limit (its text config's ``max_position_embeddings``; the trainers fill
            it from the model): a longer row raises an error naming it instead of training past the positions.
        column_mapping: ``{dataset column: our column}``, applied to every row before collating, e.g.
            ``{"query": "question", "response": "answer"}`` (the CLI's ``--question_column`` / ``--answer_column``).

    A question or answer that contains a control token of the tokenizer as text (``"<|im_end|>"``, ``"</s>"``, ...)
    raises an error naming the row: the tokenizer would encode it as that token, not as text.
    """

    def __init__(self, processor, label_end_of_turn: bool = False, max_length: int | None = None, return_index=True,
                 max_positions: int | None = None, column_mapping: dict[str, str] | None = None):
        self.processor = processor
        self.column_mapping = dict(column_mapping) if column_mapping else None
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if getattr(processor, "chat_template", None) is None and getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError("The processor has no chat template; set `processor.chat_template` before collating.")
        self.label_end_of_turn = label_end_of_turn
        self.max_length = max_length
        self.return_index = return_index
        self.max_positions = max_positions
        ids = {self.tokenizer.eos_token_id}
        for t in END_OF_TURN_TOKENS:
            tid = self.tokenizer.convert_tokens_to_ids(t)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        self.end_of_turn_ids = {i for i in ids if i is not None}

    # -- rows ----------------------------------------------------------------------------------------------
    def check_columns(self, columns, what: str = "The dataset") -> str:
        """The layout of rows with ``columns`` after this collator's ``column_mapping`` (:func:`check_columns`)."""
        return check_columns(columns, self.column_mapping, what)

    def normalize(self, row: dict, index=None) -> dict:
        """``row`` as the collator reads it: columns renamed by ``column_mapping``; a TRL ``messages`` or
        ``prompt``/``completion`` row turned into prompt turns (or plain prompt text) and an ``answer`` string. A
        question/answer row without mapped columns is returned as it is."""
        if not isinstance(row, dict):
            return row
        if self.column_mapping:
            row = {self.column_mapping.get(k, k): v for k, v in row.items()}
        if "prompt_messages" in row or "prompt_text" in row:  # already normalized
            return row
        layout = row_layout(row)
        if layout is None or layout.startswith("question/"):
            return row  # build_messages names the missing field
        return _trl_row(row, layout, row.get("__index__", index))

    def _normalized(self, rows: Sequence[dict]) -> list[dict]:
        return [self.normalize(r, i) for i, r in enumerate(rows)]

    # -- rendering -----------------------------------------------------------------------------------------
    def render(self, row: dict, include_answer: bool = True, index=None, answer: str | None = None) -> str:
        if "prompt_text" in row:  # plain prompt-completion: the text as it is, as TRL does
            return row["prompt_text"] + ((row["answer"] if answer is None else answer) if include_answer else "")
        messages = build_messages(row, self.processor, include_answer=include_answer, answer=answer, index=index)
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=not include_answer
        )

    def _render_pair(self, row: dict, index) -> tuple[str, str]:
        """The rendered conversation with the answer and its prompt part, by TRL's ``apply_chat_template`` (the
        prompt with the generation prompt, cut to the part the full conversation shares)."""
        if "prompt_text" in row:
            return self.render(row, True, index), row["prompt_text"]
        from trl.data_utils import apply_chat_template

        messages = build_messages(row, self.processor, include_answer=True, index=index)
        try:
            out = apply_chat_template({"prompt": messages[:-1], "completion": messages[-1:]}, self.processor)
        except (KeyError, ValueError) as err:  # e.g. a prompt ending with a system turn
            raise ValueError(f"{row_name(row, index)}: its conversation cannot be split into prompt and answer by "
                             f"the chat template ({err}).") from err
        return out["prompt"] + out["completion"], out["prompt"]

    def _answer_char_span(self, row, full: str, prompt: str, answer: str, index) -> tuple[int, int]:
        common = 0
        for a, b in zip(full, prompt):
            if a != b:
                break
            common += 1
        target = answer.strip()
        if not target:
            raise ValueError(f"{row_name(row, index)} has an empty answer; nothing to learn or unlearn.")
        start = full.find(target, max(0, common - len(target)))
        if start < 0:
            raise ValueError(
                f"{row_name(row, index)}: the answer ({len(target)} characters) does not appear in the chat-template "
                f"rendering of the conversation; the template must keep the answer text verbatim."
            )
        return start, start + len(target)

    def _locate(self, row: dict, full: str, prompt: str, answer: str, index) -> tuple[list[int], int, list]:
        """Token ids of the answer, number of tokens after it, and answer-relative char offsets."""
        a_start, a_end = self._answer_char_span(row, full, prompt, answer, index)
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        answer_ids, rel, n_after = [], [], 0
        for tid, (s, e) in zip(ids, offsets):
            if s >= a_end and e > s:
                n_after += 1
            elif e > a_start and s < a_end:
                answer_ids.append(tid)
                rel.append((max(s, a_start) - a_start, min(e, a_end) - a_start))
            elif s >= a_end:  # zero-width token after the answer
                n_after += 1
        if not answer_ids:
            raise ValueError(f"{row_name(row, index)}: the answer span could not be located in the tokenized text.")
        return answer_ids, n_after, rel

    # -- collation -----------------------------------------------------------------------------------------
    def encode(self, rows: Sequence[dict]) -> tuple[dict, list[RowSpan]]:
        """Collate rows; also return each row's answer span (used by concept-token masks)."""
        if len(rows) == 0:
            raise ValueError("Cannot collate an empty list of rows.")
        rows = self._normalized(rows)
        texts, images, located = [], [], []
        for i, row in enumerate(rows):
            index = row.get("__index__", i) if isinstance(row, dict) else i
            if not isinstance(row, dict):
                raise TypeError(f"row #{i} is a {type(row).__name__}, expected a dict with question/answer.")
            self._check_control_tokens(row, index)
            full, prompt = self._render_pair(row, index)
            located.append(self._locate(row, full, prompt, row["answer"], index))
            texts.append(full)
            images.extend(row_images(row))
        batch = self._run_processor(rows, texts, images)
        self._check_positions(rows, batch)
        input_ids = batch["input_ids"]
        labels = torch.full_like(input_ids, -100)
        spans = []
        for i, (row, (answer_ids, n_after, rel)) in enumerate(zip(rows, located)):
            real = batch["attention_mask"][i].nonzero().flatten()
            stop = int(real[-1]) + 1
            end = stop - n_after
            start = end - len(answer_ids)
            got = input_ids[i, start:end].tolist() if start >= 0 else []
            if got != answer_ids:
                raise ValueError(
                    f"{row_name(row, row.get('__index__', i))}: the answer span could not be located in the processor's "
                    f"output (template or processor changed the answer tokens). Check the chat template."
                )
            labels[i, start:end] = input_ids[i, start:end]
            if self.label_end_of_turn and end < stop and int(input_ids[i, end]) in self.end_of_turn_ids:
                labels[i, end] = input_ids[i, end]
            spans.append(RowSpan(start, end, rel, row["answer"].strip()))
        self._check_images(rows, batch)
        batch["labels"] = labels
        if self.return_index and all("__index__" in r for r in rows):
            batch["sample_index"] = torch.tensor([int(r["__index__"]) for r in rows], dtype=torch.long)
        return batch, spans

    def __call__(self, rows: Sequence[dict]) -> dict:
        return self.encode(rows)[0]

    def encode_prompts(self, rows: Sequence[dict]) -> dict:
        """The processor's input for each row's prompt (chat template with the generation prompt, no answer), with
        the images passed per row exactly as for training: what ``generate`` takes."""
        if len(rows) == 0:
            raise ValueError("Cannot collate an empty list of rows.")
        rows = self._normalized(rows)
        texts = [self.render(r, include_answer=False, index=r.get("__index__", i)) for i, r in enumerate(rows)]
        batch = self._run_processor(rows, texts, [im for r in rows for im in row_images(r)], prompts_only=True)
        self._check_images(rows, batch)
        batch.pop("labels", None)  # PaliGemma's processor adds prompt labels (all -100): not a generation input
        return batch

    def _run_processor(self, rows, texts, images, prompts_only: bool = False) -> dict:
        kwargs: dict[str, Any] = dict(text=texts, return_tensors="pt", padding=True)
        if images:
            # One list of images per row (possibly empty): Gemma 3, SmolVLM and Mllama reject a flat list for a
            # batch of several texts; every other supported processor accepts the nested form too.
            kwargs["images"] = [row_images(r) for r in rows]
        from transformers import PaliGemmaProcessor

        self._check_text_only_rows(rows)
        if isinstance(self.processor, PaliGemmaProcessor) and not prompts_only:
            # PaliGemma is a prefix-LM: token_type_ids 0 (the prefix: image + prompt) attend bidirectionally, so the
            # answer must go in as the processor's `suffix` (token_type_ids 1, causal; the processor appends eos).
            # Passed inside `text` it would be prefix and every answer token would see the next one.
            eos = self.tokenizer.eos_token
            prefixes, suffixes = [], []
            for i, (row, full) in enumerate(zip(rows, texts)):
                index = row.get("__index__", i)
                prompt = self.render(row, include_answer=False, index=index)
                if not (full.startswith(prompt) and full.endswith(eos)):
                    raise ValueError(
                        f"{row_name(row, index)}: PaliGemma takes the answer as `suffix` followed by eos; the chat "
                        f"template must render the prompt, then the answer and {eos!r} and nothing else."
                    )
                prefixes.append(prompt)
                suffixes.append(full[len(prompt) : len(full) - len(eos)])
            kwargs["text"], kwargs["suffix"] = prefixes, suffixes
        try:
            out = self.processor(**kwargs)
        except Exception as err:  # name the rows; the processor's own message says what it found
            names = ", ".join(row_name(r, r.get("__index__", i)) for i, r in enumerate(rows))
            raise ValueError(f"The processor failed on the batch with {names}: {err}") from err
        batch = dict(out)
        if self.max_length is not None and batch["input_ids"].shape[1] > self.max_length:
            lengths = batch["attention_mask"].sum(1).tolist()
            long = [row_name(r, r.get("__index__", i)) for i, (r, n) in enumerate(zip(rows, lengths)) if n > self.max_length]
            raise ValueError(
                f"{', '.join(long)} exceed max_length={self.max_length} tokens (image tokens included); shorten them or "
                f"raise max_length. Sequences are never truncated silently."
            )
        return batch

    @functools.cached_property
    def _control_tokens(self) -> list[str]:
        """The tokenizer's special tokens and added tokens marked special, longest first (read once: every row of
        every batch is checked against them)."""
        tokens = set(getattr(self.tokenizer, "all_special_tokens", None) or [])
        added = getattr(self.tokenizer, "added_tokens_decoder", None) or {}
        tokens.update(str(t) for t in added.values() if getattr(t, "special", False))
        return sorted((t for t in tokens if t and t.strip()), key=len, reverse=True)

    def _check_control_tokens(self, row: dict, index) -> None:
        tokens = self._control_tokens
        image_token = _image_token(self.processor)
        texts = [("question", row.get("question")), ("answer", row.get("answer"))]
        # a plain prompt-completion prompt is written with the template's own tokens: only its answer is text
        texts += [("prompt", b.get("text")) for m in row.get("prompt_messages", ()) if isinstance(m.get("content"), list)
                  for b in m["content"] if isinstance(b, dict) and b.get("type") == "text"]
        for key, text in texts:
            if not isinstance(text, str):
                continue
            # the image token is how a question places its images (build_messages); nowhere else is it text
            found = next((t for t in tokens if t in text and not (key == "question" and t == image_token)), None)
            if found is not None:
                raise ValueError(
                    f"{row_name(row, index)}: its {key} contains the control token {found!r} of the tokenizer as "
                    f"text; it would be encoded as that token (not as text) and trained as such. Remove or escape it "
                    f"in that row."
                )

    def _check_positions(self, rows, batch) -> None:
        if self.max_positions is None:
            return
        lengths = batch["attention_mask"].sum(1).tolist()
        long = [f"{row_name(r, r.get('__index__', i))} ({int(n)} tokens)" for i, (r, n) in enumerate(zip(rows, lengths))
                if n > self.max_positions]
        if long:
            raise ValueError(
                f"Longer than the model's {self.max_positions} positions (max_position_embeddings; image tokens "
                f"included): {', '.join(long)}. Their tokens past the last position would be trained at positions the "
                f"model does not have: shorten the question or answer of these rows, or give them fewer or smaller "
                f"images."
            )

    def _check_text_only_rows(self, rows) -> None:
        """Refuse text-only rows where the family cannot encode them faithfully (instead of a wrong batch)."""
        from transformers import MllamaProcessor, PaliGemmaProcessor

        text_only = [row_name(r, r.get("__index__", i)) for i, r in enumerate(rows) if not row_images(r)]
        if not text_only:
            return
        names = ", ".join(text_only)
        if isinstance(self.processor, PaliGemmaProcessor):  # it would insert <bos> inside the question
            raise ValueError(
                f"{names}: no image. PaliGemma's processor cannot encode a text-only row (it puts <bos> after the last "
                f"image token, i.e. inside the question). Give every row an image, or drop the text-only rows."
            )
        if isinstance(self.processor, MllamaProcessor) and len(text_only) < len(rows):
            raise ValueError(
                f"{names}: no image, batched with rows that have images. Mllama's cross-attention then attends from a "
                f"text-only row to an empty image (its result would depend on the batch); collate text-only rows in "
                f"batches of their own (the evaluator does), use a batch size of 1, or give every row an image."
            )

    def _check_images(self, rows, batch) -> None:
        with_images = [i for i, r in enumerate(rows) if row_images(r)]
        if with_images and not any(k.startswith("pixel_values") and "video" not in k for k in batch):
            i = with_images[0]
            raise ValueError(
                f"{row_name(rows[i], rows[i].get('__index__', i))} has {len(row_images(rows[i]))} image(s) but the "
                f"{type(self.processor).__name__} given as the processor produced no pixel inputs (only "
                f"{sorted(batch)}): the images would be dropped silently. Pass the model's processor (e.g. "
                f"AutoProcessor.from_pretrained(<model>), a ...Processor class), not its tokenizer; AutoProcessor "
                f"returns a bare tokenizer when it cannot find the saved processor class."
            )
        image_token_id = getattr(self.processor, "image_token_id", None)
        if image_token_id is None:
            return
        n_tokens = (batch["input_ids"] == image_token_id).sum(1).tolist()
        for i, (row, n) in enumerate(zip(rows, n_tokens)):
            if (n > 0) != bool(row_images(row)):
                raise ValueError(
                    f"{row_name(row, row.get('__index__', i))} has {len(row_images(row))} image(s) but {n} image tokens "
                    f"in its prompt; images and prompt placeholders must match."
                )


class ForgetRetainDataset(torch.utils.data.Dataset):
    """Pairs each forget row with a retain row; length = the forget set's.

    Items are ``{"forget": row, "retain": row or None}``; each row gets ``__index__`` (its position in its own
    set) so trainers can cache per-sample reference quantities.

    The retain rows rotate so that training walks the whole retain set, not only |forget| of its rows: epochs are
    grouped in cycles of ``ceil(|retain| / |forget|)``; each cycle draws a permutation of the retain set (seeded by
    ``seed`` and the cycle number) and its epochs consume it |forget| rows at a time (the last epoch of a cycle wraps
    to the start of the permutation). Every retain row is paired at least once per cycle, and no retain row twice in
    one epoch unless |forget| > |retain|. The pair of forget row ``i`` is a function of (``seed``, epoch, ``i``)
    only, so 1 or N processes, gradient accumulation and a resumed run see the same pairs.

    :meth:`set_epoch` selects the epoch (0 until called): ``UnlearnTrainer`` calls it at the start of every epoch.
    DataLoader workers read their own copy of the dataset, made when they start: Trainer starts them anew each
    epoch (after ``set_epoch``), so they follow the rotation, except with ``dataloader_persistent_workers=True``,
    where they keep the epoch they started in and every epoch repeats the first epoch's pairs.
    """

    def __init__(self, forget, retain=None, seed: int = 0):
        if forget is None or len(forget) == 0:
            raise ValueError("The forget set is empty: give at least one row to unlearn (forget_dataset=...).")
        if retain is not None and len(retain) == 0:
            raise ValueError("The retain set is empty: pass retain_dataset=None to train without a retain term.")
        self.forget, self.retain = forget, retain
        self.seed = int(seed)
        self.epoch = 0
        self._cycle: tuple[int, list[int]] | None = None  # (cycle number, its permutation of the retain rows)

    def __len__(self) -> int:
        return len(self.forget)

    def set_epoch(self, epoch: int) -> None:
        """Pair the forget rows with the retain rows of ``epoch`` (see the class docstring)."""
        self.epoch = int(epoch)

    @property
    def epochs_per_cycle(self) -> int:
        """Epochs in which the pairing walks the whole retain set: ``ceil(|retain| / |forget|)``."""
        return -(-len(self.retain) // len(self.forget)) if self.retain is not None else 1

    def _permutation(self, cycle: int) -> list[int]:
        if self._cycle is None or self._cycle[0] != cycle:
            digest = hashlib.sha256(f"forget-retain pairing {self.seed} {cycle}".encode()).digest()
            g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
            self._cycle = (cycle, torch.randperm(len(self.retain), generator=g).tolist())
        return self._cycle[1]

    def retain_index(self, forget_index: int, epoch: int | None = None) -> int:
        """Position in the retain set of the row paired with forget row ``forget_index`` in ``epoch`` (default: the
        current)."""
        epoch = self.epoch if epoch is None else int(epoch)
        cycle, slot = divmod(epoch, self.epochs_per_cycle)
        return self._permutation(cycle)[(slot * len(self.forget) + forget_index) % len(self.retain)]

    @staticmethod
    def _with_index(row, index: int) -> dict:
        row = dict(row)
        row["__index__"] = index
        return row

    def __getitem__(self, i: int) -> dict:
        item = {"forget": self._with_index(self.forget[i], i), "retain": None}
        if self.retain is not None:
            j = self.retain_index(i)
            item["retain"] = self._with_index(self.retain[j], j)
        return item


class ForgetRetainCollator:
    """Collate ``ForgetRetainDataset`` items into ``{"forget": batch, "retain": batch}``."""

    def __init__(self, forget_collator, retain_collator=None):
        self.forget_collator = forget_collator
        self.retain_collator = retain_collator or forget_collator

    @staticmethod
    def forget_part(collator):
        """The collator of forget rows alone: ``collator.forget_collator`` of a ForgetRetainCollator, else
        ``collator`` itself (methods that collate a forget row on its own, e.g. with its image swapped)."""
        return collator.forget_collator if isinstance(collator, ForgetRetainCollator) else collator

    def __call__(self, items: Sequence[dict]) -> dict:
        if items and "forget" not in items[0]:  # plain rows, e.g. from an eval_dataset
            return self.forget_collator(items)
        out = {"forget": self.forget_collator([it["forget"] for it in items])}
        retain = [it["retain"] for it in items if it.get("retain") is not None]
        if retain:
            out["retain"] = self.retain_collator(retain)
        return out
