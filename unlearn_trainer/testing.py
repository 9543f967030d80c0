"""Tiny, deterministic, offline vision-language models for tests, demos and users' own test suites.

Every model is built from a config with seeded random weights (no download), with a matching processor
whose tokenizer is built in memory and whose chat template mimics the family's real one::

    from unlearn_trainer.testing import tiny_model_and_processor
    model, processor = tiny_model_and_processor("llava", seed=0)

The tokenizer is a lower-casing WordPiece tokenizer: every word of ``corpus`` is one token, except the words
listed in ``subword_words`` (e.g. invented names), which are split into several pieces, so multi-token
concepts exist as they do in real tokenizers. Single letters are always in the vocabulary, so no word maps
to the unknown token.

Families (``TINY_FAMILIES``; each uses the family's real processor class and a ``...ImageProcessorPil``, since
torchvision is not required):

- ``llava``, ``llava_next`` (one 2x2 any-resolution grid: base view + 4 crops, ``image_sizes``), ``idefics3``
  (images split into 2x2 tiles + a global view, ``pixel_attention_mask``), ``gemma3`` (``token_type_ids``),
  ``paligemma``, ``mllama`` (cross-attention; ``aspect_ratio_ids``/``aspect_ratio_mask``/``cross_attention_mask``,
  up to 2 tiles): the real processor classes as they are.
- ``qwen2_vl``, ``qwen2_5_vl``, ``internvl``, ``smolvlm``: image-only subclasses of the real processors
  (``ImageOnly...Processor``). Their ``__init__`` requires a video processor, whose classes import torchvision;
  SmolVLM's also requires the ``num2words`` package, used only to write video prompts. Image processing, the
  image-token expansion and the chat template are the real classes' code.
- ``paligemma`` has no chat template in reality (it is prompted with ``"<image>" * n + prefix`` and trained with
  the answer as the processor's ``suffix``). Its template here renders images, question, then answer + eos;
  ``VLMUnlearningCollator`` passes the answer to the processor as ``suffix`` so that ``token_type_ids`` mark it
  as the causal part (in the prefix it would attend to its own next tokens).
- ``gemma3`` initialises its image projection to zeros (every visual embedding 0: the model would be blind to
  images); the tiny builder gives it random weights. ``mllama`` likewise initialises its cross-attention gates to
  zero; the tiny builder sets them to 1.
- The image-only processors are registered with ``AutoProcessor``, so a saved tiny processor reloads as its own
  class with ``AutoProcessor.from_pretrained`` in any process that imported ``unlearn_trainer.testing``.
- Chat templates mimic llava-1.5 (llava), llava-v1.6-mistral (llava_next), ChatML (qwen2_vl, qwen2_5_vl,
  internvl), Idefics3/SmolVLM, Gemma 3 and Llama 3.2 Vision (mllama); end-of-turn tokens are the tokenizers' eos.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import (
    AutoProcessor,
    InternVLProcessor,
    PreTrainedConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
    SmolVLMProcessor,
)
from transformers.processing_utils import ProcessorMixin

from .vision.adapters import language_model_lora_targets

__all__ = [
    "TINY_FAMILIES",
    "TinyModelConfig",
    "build_tokenizer",
    "tiny_model_and_processor",
    "tiny_images",
    "tiny_vqa_rows",
    "lora_config_for",
]

DEFAULT_CORPUS = (
    "what is in this image ? who is this person ? describe the picture . a cat sits on the mat . "
    "the dog is red . the sky is blue . this is a photo of a person . i do not know . yes no "
    "hello world user assistant system answer question the a an of in on is are was name job city"
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
        text_config=LlamaConfig(**_text_config(cfg, tok)),
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


# -- image-only processors -----------------------------------------------------------------------------------
# The real Qwen-VL, SmolVLM and InternVL processors insist on a video processor, whose classes import torchvision.
# These subclasses drop it. They are module-level classes registered with AutoProcessor (under private config
# classes, so no real model's mapping changes): AutoProcessor.from_pretrained finds a saved processor's class by the
# name in processor_config.json, among transformers' classes and registered ones, and without the registration
# returned a bare tokenizer for a saved tiny processor. Import unlearn_trainer.testing before reloading one.


def _register_with_auto_processor(cls):
    key = type(f"_{cls.__name__}Config", (PreTrainedConfig,), {"model_type": f"unlearn_trainer_{cls.__name__.lower()}"})
    AutoProcessor.register(key, cls)
    return cls


def _qwen_image_only_init(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
    self.image_token, self.video_token = tokenizer.image_token, tokenizer.video_token
    self.image_token_id, self.video_token_id = tokenizer.image_token_id, tokenizer.video_token_id
    ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


@_register_with_auto_processor
class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor without the video processor."""

    __init__ = _qwen_image_only_init


@_register_with_auto_processor
class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2_5_VLProcessor without the video processor."""

    __init__ = _qwen_image_only_init


@_register_with_auto_processor
class ImageOnlySmolVLMProcessor(SmolVLMProcessor):
    """SmolVLM processor without the video processor and without `num2words` (used only to write video prompts)."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None, **kw):
        self.fake_image_token = "<fake_token_around_image>"
        self.image_token = tokenizer.image_token
        self.image_token_id = tokenizer.image_token_id
        self.end_of_utterance_token = "<end_of_utterance>"
        self.global_image_token = "<global-img>"
        self.image_seq_len = image_seq_len
        self.video_token = "<video>"
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        # the parent reads video_processor.num_frames/fps; images only here
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


@_register_with_auto_processor
class ImageOnlyInternVLProcessor(InternVLProcessor):
    """InternVL processor without the video processor."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None, **kw):
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
        self.image_seq_length = image_seq_length
        self.start_image_token, self.end_image_token = tokenizer.start_image_token, tokenizer.end_image_token
        self.start_image_token_id = tokenizer.start_image_token_id
        self.end_image_token_id = tokenizer.end_image_token_id
        self.image_token, self.image_token_id = tokenizer.context_image_token, tokenizer.context_image_token_id
        self.video_token = tokenizer.video_token
        self.multimodal_pattern = re.compile(
            f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})"
        )


def _qwen_tokenizer(cfg: TinyModelConfig):
    specials = (
        "<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
        "<|image_pad|>", "<|video_pad|>",
    )  # fmt: skip
    return build_tokenizer(
        cfg.corpus,
        cfg.subword_words,
        special_tokens=specials,
        bos_token=None,
        eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )


def _mrope_section(cfg: TinyModelConfig) -> list[int]:
    """M-RoPE sections (temporal, height, width) summing to head_dim / 2."""
    quarter = cfg.hidden_size // cfg.num_heads // 4
    return [cfg.hidden_size // cfg.num_heads // 2 - 2 * quarter, quarter, quarter]


def _qwen_special_ids(tok) -> dict:
    """The image/video token ids every Qwen-VL config takes."""
    return dict(
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )


def _qwen_processor(cfg: TinyModelConfig, tok, merge: int, processor_class=ImageOnlyQwen2VLProcessor):
    """The family's image-only processor, one fixed resolution (``image_size`` squared pixels)."""
    from transformers import Qwen2VLImageProcessorPil

    pixels = cfg.image_size * cfg.image_size
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=cfg.patch_size,
        merge_size=merge,
        temporal_patch_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels},
    )
    return processor_class(
        image_processor=image_processor, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE
    )


def _qwen_rope(cfg: TinyModelConfig) -> dict:
    return {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(cfg)}


def _qwen2_vl(cfg: TinyModelConfig):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok = _qwen_tokenizer(cfg)
    config = Qwen2VLConfig(
        text_config=_text_config(cfg, tok, rope_parameters=_qwen_rope(cfg), bos_token_id=None),
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
        **_qwen_special_ids(tok),
    )
    return Qwen2VLForConditionalGeneration(config), _qwen_processor(cfg, tok, merge=2)


# -- more families ------------------------------------------------------------------------------------------
# Each builder below uses the family's real processor class (image-only subclasses where the real class
# insists on a video processor, which needs torchvision) and a chat template that mimics the real one.


def _text_config(cfg: TinyModelConfig, tok, **extra) -> dict:
    """Language-model sizes shared by every family (a dict: nested configs accept it)."""
    out = dict(
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
    )
    out.update(extra)
    return out


def _vision_sizes(cfg: TinyModelConfig, heads_key: str = "num_attention_heads", **extra) -> dict:
    out = {
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "hidden_size": cfg.vision_hidden_size,
        "intermediate_size": cfg.vision_hidden_size * 2,
        "num_hidden_layers": cfg.vision_layers,
        heads_key: 4,
    }
    out.update(extra)
    return out


def _content_loop(image: str, text: str = "{{ c['text'] }}") -> str:
    """Jinja for a message's content: images rendered as ``image``, text parts as ``text``."""
    return (
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
        f"{{% if c['type'] == 'image' %}}{image}{{% elif c['type'] == 'text' %}}{text}{{% endif %}}"
        "{% endfor %}{% endif %}"
    )


# llava-v1.6-mistral: "[INST] <image>\nQ [/INST] A</s>"
LLAVA_NEXT_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] " + _content_loop("<image>\n") + " [/INST]"
    "{% elif m['role'] == 'assistant' %} " + _content_loop("") + "{{ eos_token }}{% endif %}{% endfor %}"
)

# Idefics3 (Llama-3 based): "<|begin_of_text|>User:<image>Q<end_of_utterance>\nAssistant: A<end_of_utterance>\n"
_IDEFICS_TURNS = (
    "{% for m in messages %}{{ m['role'] | capitalize }}"
    "{% if m['content'] is not string and m['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    + _content_loop("<image>")
    + "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
IDEFICS3_CHAT_TEMPLATE = "<|begin_of_text|>" + _IDEFICS_TURNS
# SmolVLM: the same turns after "<|im_start|>"
SMOLVLM_CHAT_TEMPLATE = "<|im_start|>" + _IDEFICS_TURNS

# Gemma 3: "<bos><start_of_turn>user\n<start_of_image>Q<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    + _content_loop("<start_of_image>")
    + "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# PaliGemma has no chat template in reality: it is prompted "<image>" * n + prefix, and trained with the answer as
# the processor's `suffix` (causal part, token_type_ids 1) followed by eos. This template renders exactly that
# layout (images, question, then answer + eos); the collator hands the answer to the processor as `suffix`.
PALIGEMMA_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}"
    "{% for c in m['content'] if c['type'] == 'image' %}<image>{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}"
    "{% elif m['role'] == 'assistant' %}{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}"
    "{% endfor %}{{ eos_token }}{% endif %}{% endfor %}"
)

# InternVL 2.5/3 (Qwen2.5 LM): ChatML with "<IMG_CONTEXT>\n" per image, expanded by the processor
INTERNVL_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n" + _content_loop("<IMG_CONTEXT>\n")
    + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Llama 3.2 Vision: "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>Q<|eot_id|>..."
MLLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    + _content_loop("<|image|>")
    + "<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _llava_next(cfg: TinyModelConfig):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    tok = build_tokenizer(
        cfg.corpus,
        cfg.subword_words,
        special_tokens=("<pad>", "<unk>", "<s>", "</s>", "<image>", "[INST]", "[/INST]"),
        extra_special_tokens={"image_token": "<image>"},
    )
    # one any-resolution grid (2x2 crops of the base size) keeps the sequence short but exercises the crops,
    # the unpadding and the image_newline tokens
    pinpoints = [[2 * cfg.image_size, 2 * cfg.image_size]]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_vision_sizes(cfg), projection_dim=cfg.vision_hidden_size),
        text_config=LlamaConfig(**_text_config(cfg, tok)),
        image_token_index=tok.image_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped by the "default" strategy
        chat_template=LLAVA_NEXT_CHAT_TEMPLATE,
    )
    return model, processor


def _qwen2_5_vl(cfg: TinyModelConfig):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = _qwen_tokenizer(cfg)
    merge = 2
    config = Qwen2_5_VLConfig(
        text_config=_text_config(cfg, tok, rope_parameters=_qwen_rope(cfg)),
        vision_config=dict(
            depth=cfg.vision_layers,
            hidden_size=cfg.vision_hidden_size,
            intermediate_size=cfg.vision_hidden_size * 2,
            num_heads=4,
            out_hidden_size=cfg.hidden_size,
            patch_size=cfg.patch_size,
            spatial_merge_size=merge,
            temporal_patch_size=2,
            # windows of 2x2 merged tokens: images larger than 2 * merge * patch pixels are split into windows
            window_size=2 * merge * cfg.patch_size,
            fullatt_block_indexes=[cfg.vision_layers - 1],
        ),
        **_qwen_special_ids(tok),
    )
    return Qwen2_5_VLForConditionalGeneration(config), _qwen_processor(cfg, tok, merge, ImageOnlyQwen2_5_VLProcessor)


_IDEFICS_SPECIALS = ("<pad>", "<unk>", "<|begin_of_text|>", "<|im_start|>", "<end_of_utterance>",
                     "<fake_token_around_image>", "<image>", "<global-img>") + tuple(
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
)


def _idefics_like(cfg: TinyModelConfig, smol: bool):
    import transformers as T

    bos = "<|im_start|>" if smol else "<|begin_of_text|>"
    tok = build_tokenizer(
        cfg.corpus,
        cfg.subword_words,
        special_tokens=_IDEFICS_SPECIALS,
        bos_token=bos,
        eos_token="<end_of_utterance>",
        extra_special_tokens={"image_token": "<image>"},
    )
    scale = 2
    seq_len = (cfg.image_size // cfg.patch_size) ** 2 // scale**2
    config_cls = T.SmolVLMConfig if smol else T.Idefics3Config
    model_cls = T.SmolVLMForConditionalGeneration if smol else T.Idefics3ForConditionalGeneration
    config = config_cls(
        vision_config=_vision_sizes(cfg),
        text_config=_text_config(cfg, tok, model_type="llama"),
        image_token_id=tok.image_token_id,
        scale_factor=scale,
        pad_token_id=tok.pad_token_id,
    )
    model = model_cls(config)
    # images are resized to 2x the tile size and split into 2x2 tiles plus a global view (5 tiles per image)
    ip_cls = T.SmolVLMImageProcessorPil if smol else T.Idefics3ImageProcessorPil
    image_processor = ip_cls(
        size={"longest_edge": 2 * cfg.image_size},
        max_image_size={"longest_edge": cfg.image_size},
        do_image_splitting=True,
    )
    if smol:
        processor = ImageOnlySmolVLMProcessor(
            image_processor=image_processor, tokenizer=tok, image_seq_len=seq_len, chat_template=SMOLVLM_CHAT_TEMPLATE
        )
    else:
        processor = T.Idefics3Processor(
            image_processor=image_processor, tokenizer=tok, image_seq_len=seq_len, chat_template=IDEFICS3_CHAT_TEMPLATE
        )
    return model, processor


def _idefics3(cfg: TinyModelConfig):
    return _idefics_like(cfg, smol=False)


def _smolvlm(cfg: TinyModelConfig):
    return _idefics_like(cfg, smol=True)


def _gemma3(cfg: TinyModelConfig):
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    corpus = [cfg.corpus] if isinstance(cfg.corpus, str) else list(cfg.corpus)
    tok = build_tokenizer(
        corpus + ["model"],  # Gemma's assistant role name
        cfg.subword_words,
        special_tokens=("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                        "<start_of_image>", "<end_of_image>", "<image_soft_token>"),
        bos_token="<bos>",
        eos_token="<end_of_turn>",  # the chat end of turn, as in Gemma 3's generation config
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
    )  # fmt: skip
    per_side = 2  # 4x4 patches average-pooled to 2x2 = 4 soft tokens per image
    head_dim = cfg.hidden_size // cfg.num_heads
    config = Gemma3Config(
        text_config=Gemma3TextConfig(
            **_text_config(cfg, tok), head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=64
        ),
        vision_config=SiglipVisionConfig(**_vision_sizes(cfg)),
        mm_tokens_per_image=per_side**2,
        image_token_index=tok.image_token_id,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
    )
    model = Gemma3ForConditionalGeneration(config)
    # Gemma 3 initialises its projection to zeros (visual embeddings all 0: a blind model); give it random weights
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.02)
    image_processor = Gemma3ImageProcessorPil(
        size={"height": cfg.image_size, "width": cfg.image_size}, do_pan_and_scan=False
    )
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=per_side**2,
    )
    return model, processor


def _paligemma(cfg: TinyModelConfig):
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
    )

    tok = build_tokenizer(
        cfg.corpus,
        cfg.subword_words,
        special_tokens=("<pad>", "<eos>", "<bos>", "<unk>", "<image>"),
        bos_token="<bos>",
        eos_token="<eos>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = SiglipImageProcessorPil(size={"height": cfg.image_size, "width": cfg.image_size})
    image_processor.image_seq_length = (cfg.image_size // cfg.patch_size) ** 2  # what PaliGemmaProcessor reads
    # the processor adds PaliGemma's 1024 <locXXXX> and 128 <segXXX> tokens to the tokenizer: build it first
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=PALIGEMMA_CHAT_TEMPLATE)
    head_dim = cfg.hidden_size // cfg.num_heads
    config = PaliGemmaConfig(
        text_config=GemmaConfig(**_text_config(cfg, tok), head_dim=head_dim),
        vision_config=SiglipVisionConfig(**_vision_sizes(cfg)),
        image_token_index=tok.image_token_id,
        projection_dim=cfg.hidden_size,
        vocab_size=len(tok),
    )
    model = PaliGemmaForConditionalGeneration(config)
    return model, processor


def _internvl(cfg: TinyModelConfig):
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration

    tok = build_tokenizer(
        cfg.corpus,
        cfg.subword_words,
        special_tokens=("<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"),
        bos_token=None,
        eos_token="<|im_end|>",
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    )  # fmt: skip
    downsample = 0.5  # pixel shuffle: 4x4 patches -> 2x2 tokens of 4x the width
    seq_len = int((cfg.image_size // cfg.patch_size) ** 2 * downsample**2)
    config = InternVLConfig(
        vision_config=_vision_sizes(cfg),
        text_config=_text_config(cfg, tok, model_type="qwen2"),
        image_token_id=tok.context_image_token_id,
        image_seq_length=seq_len,
        downsample_ratio=downsample,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = InternVLForConditionalGeneration(config)
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": cfg.image_size, "width": cfg.image_size}, crop_to_patches=False
    )
    processor = ImageOnlyInternVLProcessor(
        image_processor=image_processor, tokenizer=tok, image_seq_length=seq_len, chat_template=INTERNVL_CHAT_TEMPLATE
    )
    return model, processor


def _mllama(cfg: TinyModelConfig):
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessorPil, MllamaProcessor

    tok = build_tokenizer(
        cfg.corpus,
        cfg.subword_words,
        special_tokens=("<pad>", "<unk>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                        "<|end_header_id|>", "<|image|>", "<|python_tag|>"),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        extra_special_tokens={"image_token": "<|image|>"},
    )  # fmt: skip
    max_tiles = 2
    config = MllamaConfig(
        vision_config=dict(
            _vision_sizes(cfg, heads_key="attention_heads"),
            num_global_layers=1,
            intermediate_layers_indices=[0],  # output = last hidden state ++ layer-0 hidden state
            vision_output_dim=2 * cfg.vision_hidden_size,
            max_num_tiles=max_tiles,
            supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],  # what MllamaImageProcessor derives for 2 tiles
        ),
        text_config=_text_config(cfg, tok, cross_attention_layers=[cfg.num_layers - 1]),
        image_token_index=tok.image_token_id,
    )
    model = MllamaForConditionalGeneration(config)
    # Mllama initialises its cross-attention gates to zero (tanh(0) = 0: the language model would be blind to images)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                param.fill_(1.0)
    image_processor = MllamaImageProcessorPil(
        size={"height": cfg.image_size, "width": cfg.image_size}, max_image_tiles=max_tiles
    )
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=MLLAMA_CHAT_TEMPLATE)
    return model, processor


TINY_FAMILIES = {
    "llava": _llava,
    "qwen2_vl": _qwen2_vl,
    "llava_next": _llava_next,
    "qwen2_5_vl": _qwen2_5_vl,
    "idefics3": _idefics3,
    "smolvlm": _smolvlm,
    "gemma3": _gemma3,
    "paligemma": _paligemma,
    "internvl": _internvl,
    "mllama": _mllama,
}


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


def tiny_images(count: int, size: int = 16, seed: int = 0):
    """``count`` deterministic RGB PIL images of ``size`` x ``size`` (random colour blocks)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        base = rng.integers(0, 256, size=(1, 1, 3))
        noise = rng.integers(-40, 40, size=(size, size, 3))
        out.append(Image.fromarray(np.clip(base + noise, 0, 255).astype("uint8"), "RGB"))
    return out


def tiny_vqa_rows(count: int = 4, with_images: bool = True, seed: int = 0, size: int = 16) -> list[dict]:
    """``count`` simple VQA rows in the package's row format, for smoke tests."""
    answers = ["a cat sits on the mat .", "the dog is red .", "the sky is blue .", "this is a photo of a person ."]
    images = tiny_images(count, size=size, seed=seed) if with_images else [None] * count
    return [
        {
            "id": f"row-{i}",
            "image": images[i],
            "question": "what is in this image ?" if with_images else "describe the picture .",
            "answer": answers[i % len(answers)],
        }
        for i in range(count)
    ]


def lora_config_for(model=None, r: int = 8, alpha: int = 16, dropout: float = 0.0, **kwargs):
    """A PEFT ``LoraConfig`` on the language model's attention and MLP projections (vision tower frozen)."""
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=language_model_lora_targets(), **kwargs
    )
