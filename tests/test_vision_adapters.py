"""Vision adapters on every tiny family: image-token masks, visual embeddings and their replacement, pre-projector
features, PEFT/DataParallel wrappers, unknown architectures, and hooks that never leak."""

import functools

import pytest
import torch
from peft import get_peft_model

from unlearn_trainer import VLMUnlearningCollator
from unlearn_trainer.data import model_inputs
from unlearn_trainer.testing import (
    TINY_FAMILIES,
    TinyModelConfig,
    lora_config_for,
    tiny_model_and_processor,
    tiny_vqa_rows,
)
from unlearn_trainer.vision import (
    StopForward,
    UnsupportedArchitectureError,
    capture,
    count_hooks,
    get_adapter,
    module_hook,
    register_adapter,
    run_until_captured,
    unwrap_model,
)

ALL_FAMILIES = sorted(TINY_FAMILIES)
IN_SEQUENCE = [f for f in ALL_FAMILIES if f != "mllama"]
DV = TinyModelConfig().vision_hidden_size  # 32: every tiny vision tower's width
N_ROWS = 2  # one image per row

# pre-projector features of the tiny models: (units per image, tokens per unit, feature size)
FEATURES = {
    "llava": (1, 16, DV),  # 4x4 patches, CLS dropped
    "llava_next": (1, 5 * 16, DV),  # base view + 2x2 any-resolution crops
    "qwen2_vl": (1, 16, DV),
    "qwen2_5_vl": (1, 16, DV),
    "idefics3": (5, 16, DV),  # 2x2 tiles + global view
    "smolvlm": (5, 16, DV),
    "gemma3": (1, 16, DV),
    "paligemma": (1, 16, DV),
    "internvl": (1, 16, DV),  # CLS dropped, before the pixel shuffle
    "mllama": (1, 17, 2 * DV),  # one real tile of 16 patches + CLS; last ++ intermediate layer
}


@functools.lru_cache(maxsize=None)
def _kit(family, **sizes):
    model, processor = tiny_model_and_processor(family, **sizes)
    batch = VLMUnlearningCollator(processor)(tiny_vqa_rows(N_ROWS))
    return model, processor, batch


def _logits(model, batch):
    with torch.no_grad():
        return model(**model_inputs(batch)).logits


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_image_token_mask_counts_the_visual_embeddings(family):
    model, _, batch = _kit(family)
    adapter = get_adapter(model)
    mask = adapter.image_token_mask(model, batch["input_ids"])
    with torch.no_grad():
        v = adapter.visual_embeddings(model, batch)
    assert mask.dtype == torch.bool and mask.shape == batch["input_ids"].shape
    assert v.shape[-1] == model.config.get_text_config().hidden_size
    if family == "mllama":  # one <|image|> placeholder per image; the vision states come via cross-attention
        assert mask.sum(1).tolist() == [1] * N_ROWS
        assert v.shape[0] == N_ROWS * FEATURES["mllama"][1]
    else:
        assert v.shape[0] == int(mask.sum()) > 0
        assert len(set(mask.sum(1).tolist())) == 1  # same image size in every row -> same count
    assert v.abs().sum() > 0


@pytest.mark.parametrize("family", IN_SEQUENCE)
def test_replacing_visual_embeddings(family):
    model, _, batch = _kit(family)
    adapter = get_adapter(model)
    base = _logits(model, batch)
    with torch.no_grad():
        v = adapter.visual_embeddings(model, batch)
    with adapter.replace_visual_embeddings(model, v):
        same = _logits(model, batch)
    torch.testing.assert_close(same, base, rtol=0, atol=0)
    with adapter.replace_visual_embeddings(model, lambda orig: orig):
        torch.testing.assert_close(_logits(model, batch), base, rtol=0, atol=0)
    # the replacement feeds the language model directly: the vision tower can be skipped
    no_pixels = {k: t for k, t in batch.items() if k not in ("pixel_values", "pixel_attention_mask")}
    with adapter.replace_visual_embeddings(model, v):
        torch.testing.assert_close(_logits(model, no_pixels), base, rtol=1e-5, atol=1e-6)
    answer = batch["labels"] != -100
    for other in (torch.zeros_like(v), v + torch.randn(v.shape, generator=torch.Generator().manual_seed(0))):
        with adapter.replace_visual_embeddings(model, other):
            changed = _logits(model, batch)
        assert (changed - base)[answer].abs().max() > 1e-3
    torch.testing.assert_close(_logits(model, batch), base, rtol=0, atol=0)  # nothing left behind


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3"])
def test_gradient_reaches_the_given_embeddings(family):
    model, _, batch = _kit(family)
    adapter = get_adapter(model)
    with torch.no_grad():
        v = adapter.visual_embeddings(model, batch)
    v = v.clone().requires_grad_(True)
    with adapter.replace_visual_embeddings(model, v):
        logits = model(**model_inputs(batch)).logits
    logits[batch["labels"] != -100].logsumexp(-1).sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_mllama_replacement_is_not_implemented_and_says_why():
    model, _, batch = _kit("mllama")
    with pytest.raises(NotImplementedError, match="cross-attention"):
        with get_adapter(model).replace_visual_embeddings(model, torch.zeros(1)):
            pass


def test_mllama_features_skip_padding_tiles_and_image_slots():
    from PIL import Image

    model, processor, _ = _kit("mllama")
    wide = Image.new("RGB", (32, 16), (200, 10, 10))  # aspect 1:2 -> two tiles
    rows = [
        {"id": "two-images", "images": [tiny_vqa_rows(1)[0]["image"], wide], "question": "what is in this image ?",
         "answer": "the dog is red ."},
        {"id": "one-image", "image": tiny_vqa_rows(1, seed=3)[0]["image"], "question": "what is in this image ?",
         "answer": "the sky is blue ."},
    ]
    batch = VLMUnlearningCollator(processor)(rows)
    assert batch["pixel_values"].shape[1:3] == (2, 2)  # 2 image slots x 2 tiles, partly padding
    adapter = get_adapter(model)
    with torch.no_grad():
        feats = adapter.vision_features(model, batch)
        states = adapter.visual_embeddings(model, batch)
    assert [tuple(f.shape) for f in feats] == [(17, 2 * DV), (34, 2 * DV), (17, 2 * DV)]
    assert tuple(states.shape) == (68, model.config.text_config.hidden_size)


def test_wrong_number_of_embeddings_is_a_clear_error():
    model, _, batch = _kit("llava")
    adapter = get_adapter(model)
    n = int(adapter.image_token_mask(model, batch["input_ids"]).sum())
    with pytest.raises(ValueError, match=rf"{n} image tokens of size 32; got embeddings of shape \(3, 32\)"):
        with adapter.replace_visual_embeddings(model, torch.zeros(3, 32)):
            _logits(model, batch)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_pre_projector_features_have_the_vision_width(family):
    model, _, batch = _kit(family)
    adapter = get_adapter(model)
    units, tokens, width = FEATURES[family]
    with torch.no_grad():
        feats = adapter.vision_features(model, batch)
    assert adapter.feature_size(model) == width
    assert len(feats) == units * N_ROWS
    assert all(tuple(f.shape) == (tokens, width) for f in feats), [tuple(f.shape) for f in feats]


def _projected(family, model, adapter, feats):
    """The family's own connector applied to the pre-projector features, per unit, flattened to [N, D]."""
    proj = adapter.projector(model)
    if family in ("qwen2_vl", "qwen2_5_vl", "mllama"):
        return torch.cat([proj(f) for f in feats])
    if family == "internvl":  # pixel shuffle first, as InternVLModel.get_image_features does
        out = []
        for f in feats:
            side = int(f.shape[0] ** 0.5)
            grid = model.model.pixel_shuffle(f.reshape(1, side, side, -1), scale_factor=model.config.downsample_ratio)
            out.append(proj(grid.reshape(1, -1, grid.shape[-1]))[0])
        return torch.cat(out)
    if family == "llava_next":  # the base view comes first among each image's embeddings
        return torch.cat([proj(f[:16].unsqueeze(0))[0] for f in feats])
    return torch.cat([proj(f.unsqueeze(0))[0] for f in feats])


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_projector_maps_features_to_the_visual_embeddings(family):
    sizes = {"image_size": 32} if family == "qwen2_5_vl" else {}  # 4x4 merged tokens: several attention windows
    model, _, batch = _kit(family, **sizes)
    adapter = get_adapter(model)
    with torch.no_grad():
        feats = adapter.vision_features(model, batch)
        post = adapter.visual_embeddings(model, batch)
        projected = _projected(family, model, adapter, feats)
    if family == "llava_next":
        n = post.shape[0] // N_ROWS
        post = torch.cat([post[i * n : i * n + 16] for i in range(N_ROWS)])
    if family == "qwen2_5_vl":  # the window order really differs from the processor's order here
        from transformers.vision_utils import get_vision_window_index

        vc = model.config.vision_config
        index, _ = get_vision_window_index(batch["image_grid_thw"], vc.spatial_merge_size, vc.window_size,
                                           vc.patch_size)
        assert not torch.equal(index, torch.arange(len(index)))
    torch.testing.assert_close(projected, post, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_adapter_works_through_peft_and_data_parallel(family):
    model, _, batch = _kit(family)
    base_adapter = get_adapter(model)
    with torch.no_grad():
        expected = base_adapter.vision_features(model, batch)
    peft = get_peft_model(tiny_model_and_processor(family)[0], lora_config_for())
    with torch.no_grad():  # a trained adapter: LoRA B no longer zero
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    for wrapped in (peft, torch.nn.DataParallel(peft)):
        adapter = get_adapter(wrapped)
        assert adapter is base_adapter
        assert unwrap_model(wrapped) is peft.get_base_model()
        assert adapter.language_model(wrapped) is peft.get_base_model().get_submodule(adapter.language_model_path)
        with torch.no_grad():
            feats = adapter.vision_features(wrapped, batch)
        torch.testing.assert_close(feats, expected)  # LoRA is on the language model only
    if family != "mllama":
        adapter = get_adapter(peft)
        base = _logits(peft, batch)
        with torch.no_grad():
            v = adapter.visual_embeddings(peft, batch)
        with adapter.replace_visual_embeddings(peft, v):
            torch.testing.assert_close(_logits(peft, batch), base, rtol=0, atol=0)
        with adapter.replace_visual_embeddings(peft, torch.zeros_like(v)):
            assert (_logits(peft, batch) - base).abs().max() > 1e-3
        with peft.disable_adapter():  # LoRA active in the adapter's reads: they differ from the plain model's
            assert (_logits(peft, batch) - base).abs().max() > 1e-3


def test_unknown_architecture_error_and_registration():
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    class MyLlavaConfig(LlavaConfig):
        model_type = "my_llava"

    tiny, _, batch = _kit("llava")
    values = {k: v for k, v in tiny.config.to_dict().items() if k != "model_type"}
    model = LlavaForConditionalGeneration(MyLlavaConfig(**values))
    assert model.config.model_type == "my_llava"
    with pytest.raises(UnsupportedArchitectureError, match=r"model_type='my_llava'.*register_adapter\('my_llava'"):
        get_adapter(model)
    from unlearn_trainer.vision import adapters

    try:
        register_adapter("my_llava", get_adapter(tiny))
        with pytest.raises(ValueError, match="already registered"):
            register_adapter("my_llava", get_adapter(tiny))
        with torch.no_grad():
            v = get_adapter(model).visual_embeddings(model, batch)
        assert v.shape[0] == int((batch["input_ids"] == tiny.config.image_token_id).sum())
    finally:
        adapters._REGISTRY.pop("my_llava", None)
    with pytest.raises(TypeError):
        register_adapter("x", object())


# -- hooks ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llava", "internvl", "idefics3", "mllama"])
def test_no_hook_leaks_even_on_errors(family):
    model, _, batch = _kit(family)
    adapter = get_adapter(model)
    base = _logits(model, batch)  # warm-up: transformers installs its own output-capturing hooks once
    before = count_hooks(model)
    with torch.no_grad():
        adapter.vision_features(model, batch)
        v = adapter.visual_embeddings(model, batch)
    assert count_hooks(model) == before
    if family != "mllama":
        with adapter.replace_visual_embeddings(model, v):
            assert count_hooks(model) == before + 2
        with pytest.raises(KeyError):
            with adapter.replace_visual_embeddings(model, v):
                raise KeyError("inside the block")
        assert count_hooks(model) == before
        with pytest.raises(ValueError, match="image tokens"):  # raised by the hook inside the forward pass
            with adapter.replace_visual_embeddings(model, v[:1]):
                _logits(model, batch)
        assert count_hooks(model) == before
    # a pass stopped early leaves the model as it was
    torch.testing.assert_close(_logits(model, batch), base, rtol=0, atol=0)


def test_module_hook_and_capture_clean_up():
    lin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    expected = lin[2](torch.zeros(5, 4))
    with pytest.raises(RuntimeError, match="boom"):
        with module_hook(lin[0], lambda m, a, o: o * 0), capture(lin[2], "input") as box:
            assert torch.equal(lin(x), expected)  # the hook's return value replaced the output
            assert box.calls == 1 and torch.equal(box.value, torch.zeros(5, 4))
            raise RuntimeError("boom")
    assert count_hooks(lin) == 0
    # stopping early: the last layer never runs
    calls = []
    with module_hook(lin[2], lambda m, a: calls.append(1), pre=True):
        hidden = run_until_captured(lambda: lin(x), lin[1], "output")
        assert calls == []
    torch.testing.assert_close(hidden, torch.relu(lin[0](x)))
    with pytest.raises(StopForward):
        with capture(lin[0], stop=True):
            lin(x)
    with pytest.raises(RuntimeError, match="never reached"):
        run_until_captured(lambda: lin[0](x), lin[2], "output")
    with pytest.raises(RuntimeError, match="without the keyword input 'inputs_embeds'"):
        with capture(lin[0], "input", kwarg="inputs_embeds"):
            lin(x)
    assert count_hooks(lin) == 0


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
@pytest.mark.parametrize("per_family", [True, False], ids=["with_model", "generic"])
def test_language_model_lora_targets_adapt_every_lm_layer_and_nothing_else(family, per_family):
    """``language_model_lora_targets`` (the README's LoRA targets) matches in every family (a ``language_model``-only
    regex raises PEFT's NoMatchingPeftModuleError on Idefics3's ``text_model``), adapts only language-model modules
    and at least one module in each of its layers."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer

    from unlearn_trainer import language_model_lora_targets

    model = tiny_model_and_processor(family)[0]
    adapter = get_adapter(model)
    layers = [name for name, module in model.get_submodule(adapter.language_model_path).named_children()
              if isinstance(module, torch.nn.ModuleList)]
    n_layers = sum(len(model.get_submodule(f"{adapter.language_model_path}.{name}")) for name in layers)
    assert n_layers > 0
    targets = language_model_lora_targets(model if per_family else None)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    adapted = [name.removeprefix("base_model.model.") for name, module in peft.named_modules()
               if isinstance(module, LoraLayer)]
    lm = adapter.language_model_path + "."
    assert adapted and all(name.startswith(lm) for name in adapted), [n for n in adapted if not n.startswith(lm)]
    assert not any(name.startswith((adapter.vision_tower_path + ".", adapter.projector_path + ".")) for name in adapted)
    for name in layers:
        for i in range(len(model.get_submodule(f"{adapter.language_model_path}.{name}"))):
            assert any(a.startswith(f"{lm}{name}.{i}.") for a in adapted), f"{family}: no LoRA in {lm}{name}.{i}"
