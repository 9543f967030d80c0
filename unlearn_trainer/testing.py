"""Tiny, deterministic, offline vision-language models for tests, demos and users' own test suites.

Every model is built from a config with seeded random weights (no download), with a matching processor
whose tokenizer is built in memory and whose chat template mimics the family's real one::

    from unlearn_trainer.testing import tiny_model_and_processor
    model, processor = tiny_model_and_processor("llava", seed=0)

The tokenizer is a lower-casing WordPiece tokenizer: every word of ``corpus`` is one token, except the words
listed in ``subword_words`` (e.g. invented names), which are split into several pieces, so multi-token
concepts exist as they do in real tokenizers. Single letters are always in the vocabulary, so no word maps
to the unknown token.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "TINY_FAMILIES",
    "TinyModelConfig",
    "build_tokenizer",
    "tiny_model_and_processor",
    "tiny_images",
    "tiny_vqa_rows",
    "lora_config_for",
    "LANGUAGE_MODEL_LORA_TARGETS",
]

DEFAULT_CORPUS = (
    "what is in this image ? who is this person ? describe the picture . a cat sits on the mat . "
    "the dog is red . the sky is blue . this is a photo of a person . i do not know . yes no "
    "hello world user assistant system answer question the a an of in on is are was name job city"
)

# LoRA on the language model only: "q_proj" alone would also adapt the vision tower in most families.
LANGUAGE_MODEL_LORA_TARGETS = (
    r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)

_WORD_RE = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")


def _words(texts: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for text in texts:
        for w in _WORD_RE.findall(text.lower()):
            seen.setdefault(w, None)
    return list(seen)


def _pieces(word: str, size: int = 3) -> list[str]:
    chunks = [word[i : i + size] for i in range(0, len(word), size)]
    return [chunks[0]] + ["##" + c for c in chunks[1:]]


def build_tokenizer(
    corpus: Iterable[str] | str = DEFAULT_CORPUS,
    subword_words: Iterable[str] = (),
    special_tokens: Sequence[str] = ("<pad>", "<unk>", "<s>", "</s>", "<image>"),
    bos_token: str | None = "<s>",
    eos_token: str = "</s>",
    pad_token: str = "<pad>",
    unk_token: str = "<unk>",
    extra_special_tokens: dict | None = None,
):
    """Build a deterministic WordPiece ``PreTrainedTokenizerFast`` in memory.

    Words of ``corpus`` become whole-word tokens; words in ``subword_words`` are split into 3-letter pieces
    (``"vorana" -> "vor", "##ana"``) so that they tokenize to several tokens.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if isinstance(corpus, str):
        corpus = [corpus]
    split = {w.lower() for w in subword_words}
    vocab: dict[str, int] = {}

    def add(tok: str) -> None:
        vocab.setdefault(tok, len(vocab))

    for tok in special_tokens:
        add(tok)
    for ch in string.ascii_lowercase + string.digits:
        add(ch)
        add("##" + ch)
    for ch in string.punctuation:
        add(ch)
    for w in _words(list(corpus) + [DEFAULT_CORPUS]):
        if w in split:
            for p in _pieces(w):
                add(p)
        else:
            add(w)
    for w in sorted(split):
        for p in _pieces(w):
            add(p)

    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=unk_token, max_input_chars_per_word=100))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    kwargs = dict(eos_token=eos_token, pad_token=pad_token, unk_token=unk_token)
    if bos_token is not None:
        kwargs["bos_token"] = bos_token
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, extra_special_tokens=dict(extra_special_tokens or {}), **kwargs
    )
    hf.add_special_tokens({"additional_special_tokens": [t for t in special_tokens if t not in kwargs.values()]})
    return hf


LLAVA_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if m['role'] == 'assistant' %} {{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)

QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class TinyModelConfig:
    """Sizes of a tiny model. Defaults give a ~100K-parameter model that runs a step in tens of ms."""

    image_size: int = 16
    patch_size: int = 4
    vision_hidden_size: int = 32
    vision_layers: int = 2
    hidden_size: int = 32
    intermediate_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 512
    corpus: Sequence[str] | str = DEFAULT_CORPUS
    subword_words: Sequence[str] = field(default_factory=tuple)


def _llava(cfg: TinyModelConfig):
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = build_tokenizer(cfg.corpus, cfg.subword_words, extra_special_tokens={"image_token": "<image>"})
    n_patches = (cfg.image_size // cfg.patch_size) ** 2
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            hidden_size=cfg.vision_hidden_size,
            intermediate_size=cfg.vision_hidden_size * 2,
            num_hidden_layers=cfg.vision_layers,
            num_attention_heads=4,
            projection_dim=cfg.vision_hidden_size,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tok),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        ),
        image_token_index=tok.image_token_id,
        image_seq_length=n_patches,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": cfg.image_size}, crop_size={"height": cfg.image_size, "width": cfg.image_size}
    )
    # num_additional_image_tokens=1: CLIP's CLS token, dropped by the "default" strategy (else 15 tokens for 16).
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


def _image_only_qwen_processor_class():
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        """Qwen2-VL processor without the video processor (which needs torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = tokenizer.image_token, tokenizer.video_token
            self.image_token_id, self.video_token_id = tokenizer.image_token_id, tokenizer.video_token_id
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2VLProcessor


def _qwen2_vl(cfg: TinyModelConfig):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    specials = (
        "<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
        "<|image_pad|>", "<|video_pad|>",
    )  # fmt: skip
    tok = build_tokenizer(
        cfg.corpus,
        cfg.subword_words,
        special_tokens=specials,
        bos_token=None,
        eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    head_dim = cfg.hidden_size // cfg.num_heads
    quarter = head_dim // 4
    mrope = [head_dim // 2 - 2 * quarter, quarter, quarter]  # sums to head_dim / 2
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=None,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            depth=cfg.vision_layers,
            embed_dim=cfg.vision_hidden_size,
            num_heads=4,
            mlp_ratio=2,
            hidden_size=cfg.hidden_size,
            patch_size=cfg.patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )
    model = Qwen2VLForConditionalGeneration(config)
    pixels = cfg.image_size * cfg.image_size
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=cfg.patch_size,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels},
    )
    processor = _image_only_qwen_processor_class()(
        image_processor=image_processor, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE
    )
    return model, processor


TINY_FAMILIES = {"llava": _llava, "qwen2_vl": _qwen2_vl}


def tiny_model_and_processor(family: str = "llava", seed: int = 0, config: TinyModelConfig | None = None, **sizes):
    """Return ``(model, processor)`` for a tiny, seeded, randomly initialised model of ``family``.

    ``sizes`` override fields of :class:`TinyModelConfig` (e.g. ``hidden_size=64``). The model is in
    ``eval()`` mode with generation set to stop at the tokenizer's end-of-turn token.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(f"Unknown tiny family {family!r}; available: {sorted(TINY_FAMILIES)}.")
    cfg = config or TinyModelConfig()
    for k, v in sizes.items():
        if not hasattr(cfg, k):
            raise TypeError(f"TinyModelConfig has no field {k!r}")
        setattr(cfg, k, v)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = TINY_FAMILIES[family](cfg)
    tok = processor.tokenizer
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.eval()
    return model, processor


def tiny_images(n: int, size: int = 16, seed: int = 0):
    """``n`` deterministic RGB PIL images of ``size`` x ``size`` (random colour blocks)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, 256, size=(1, 1, 3))
        noise = rng.integers(-40, 40, size=(size, size, 3))
        out.append(Image.fromarray(np.clip(base + noise, 0, 255).astype("uint8"), "RGB"))
    return out


def tiny_vqa_rows(n: int = 4, with_images: bool = True, seed: int = 0, size: int = 16) -> list[dict]:
    """``n`` simple VQA rows in the package's row format, for smoke tests."""
    answers = ["a cat sits on the mat .", "the dog is red .", "the sky is blue .", "this is a photo of a person ."]
    images = tiny_images(n, size=size, seed=seed) if with_images else [None] * n
    return [
        {
            "id": f"row-{i}",
            "image": images[i],
            "question": "what is in this image ?" if with_images else "describe the picture .",
            "answer": answers[i % len(answers)],
        }
        for i in range(n)
    ]


def lora_config_for(model=None, r: int = 8, alpha: int = 16, dropout: float = 0.0, **kwargs):
    """A PEFT ``LoraConfig`` on the language model's attention and MLP projections (vision tower frozen)."""
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LANGUAGE_MODEL_LORA_TARGETS, **kwargs
    )
