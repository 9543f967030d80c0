"""Unlearning on a quantized base: QLoRA (4-bit NF4) and 8-bit LoRA with bitsandbytes, on CPU.

The tiny LLaVA is saved and reloaded with ``BitsAndBytesConfig``: every linear layer but ``lm_head`` is quantized
(vision tower and projector included). Its sizes are multiples of 64: bitsandbytes' CPU 4-bit kernel packs the
weights of no-grad forwards in blocks (``in_features % 64 == 0``, ``out_features % 32 == 0``; the default tiny
model's 32-wide layers fail there). These tests need bitsandbytes (``pip install 'unlearn-trainer[bnb]'``) and fail,
not skip, without it.
"""

import importlib.util
import json

import pytest
import torch
from conftest import save_forget_retain, save_tiny_llava, train_args
from peft import PeftModel
from trl import ModelConfig

from unlearn_trainer import GAConfig, GATrainer, NPOConfig, NPOTrainer, VLMUnlearningCollator, losses
from unlearn_trainer.cli import load_model_and_processor, parse_args, run_method
from unlearn_trainer.data import model_inputs
from unlearn_trainer.testing import lora_config_for, tiny_vqa_rows

SIZES = dict(hidden_size=64, intermediate_size=128, vision_hidden_size=64)
NF4 = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
INT8 = dict(load_in_8bit=True)


def require_bitsandbytes():
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.fail("bitsandbytes is not installed: pip install 'unlearn-trainer[bnb]' (quantized training is "
                    "tested, not skipped).")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    require_bitsandbytes()
    root = tmp_path_factory.mktemp("quantized")
    save_tiny_llava(root, **SIZES)
    return root


def load(saved, quant=None, **kwargs):
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    config = BitsAndBytesConfig(**quant) if quant else None
    model = AutoModelForImageTextToText.from_pretrained(saved / "model", quantization_config=config, **kwargs)
    return model, AutoProcessor.from_pretrained(saved / "model")


def sequence_logprobs(model, processor, rows) -> torch.Tensor:
    batch = VLMUnlearningCollator(processor)(rows)
    with torch.no_grad():
        return losses.sequence_logprob(model(**model_inputs(batch)).logits, batch["labels"])


def linear_kinds(model) -> dict[str, list[str]]:
    """Names of the bitsandbytes linear layers and of the plain ``torch.nn.Linear`` ones (LoRA's own excluded)."""
    kinds = {}
    for name, module in model.named_modules():
        kind = type(module)
        if (kind.__module__.startswith("bitsandbytes") or kind is torch.nn.Linear) and ".lora_" not in name:
            kinds.setdefault(kind.__name__, []).append(name)
    return kinds


@pytest.mark.parametrize("quant,kind", [(NF4, "Linear4bit"), (INT8, "Linear8bitLt")], ids=["4bit", "8bit"])
def test_every_linear_layer_but_the_head_is_quantized(saved, quant, kind):
    model, _ = load(saved, quant)
    kinds = linear_kinds(model)
    assert kinds.get("Linear") == ["lm_head"]
    assert len(kinds[kind]) == 28  # 2 vision layers x 6, projector 2, 2 language layers x 7
    assert any("vision_tower" in n for n in kinds[kind]) and any("language_model" in n for n in kinds[kind])


def test_qlora_npo_unlearns_against_the_4bit_base(saved, tmp_path):
    """NPO on a 4-bit base: the reference is the same quantized model with the adapter disabled (no copy)."""
    model, processor = load(saved, NF4)
    forget = tiny_vqa_rows(4)
    base_logp = sequence_logprobs(model, processor, forget)
    full_logp = sequence_logprobs(load(saved)[0], processor, forget)
    assert float((base_logp - full_logp).abs().max()) > 1e-3  # quantization is visible, so the check below means it
    args = train_args(NPOConfig, tmp_path, max_steps=8, learning_rate=1e-1)
    trainer = NPOTrainer(model=model, args=args, forget_dataset=forget, processing_class=processor,
                         peft_config=lora_config_for())
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # prepare_model_for_kbit_training froze the base
    assert trainer._ref_model is None
    trainer.train()

    cached = trainer._ref_cache["npo_ref_logp"]
    assert sorted(cached) == [0, 1, 2, 3]
    torch.testing.assert_close(torch.stack([cached[i] for i in range(4)]), base_logp, atol=1e-4, rtol=0)
    with trainer.reference(trainer.model) as ref:  # still the untouched 4-bit base after training
        torch.testing.assert_close(sequence_logprobs(ref, processor, forget), base_logp, atol=1e-4, rtol=0)
    after = sequence_logprobs(trainer.model, processor, forget)
    assert after.mean() < base_logp.mean() - 0.5, (base_logp, after)
    assert all("npo_loss" in h for h in trainer.state.log_history if "loss" in h)


def test_qlora_adapter_saves_as_safetensors_and_reloads_on_a_fresh_4bit_base(saved, tmp_path):
    model, processor = load(saved, NF4)
    rows = tiny_vqa_rows(2)
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, max_steps=3, learning_rate=1e-1),
                        forget_dataset=rows, processing_class=processor, peft_config=lora_config_for())
    trainer.train()
    out = tmp_path / "adapter"
    trainer.save_model(str(out))
    assert (out / "adapter_model.safetensors").exists() and not list(out.glob("*.bin"))
    trainer.model.eval()
    expected = sequence_logprobs(trainer.model, processor, rows)
    base, _ = load(saved, NF4)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    torch.testing.assert_close(sequence_logprobs(reloaded, processor, rows), expected, atol=1e-4, rtol=0)
    assert float((expected - sequence_logprobs(load(saved, NF4)[0], processor, rows)).abs().max()) > 0.1


def test_kbit_preparation_upcasts_the_base_and_trains_through_checkpointing(saved, tmp_path):
    """As TRL does for a k-bit base (peft.prepare_model_for_kbit_training): the weights bitsandbytes left unquantized
    (norms, embeddings, head) go from bf16 to fp32, and with gradient checkpointing the adapter still learns."""
    model, processor = load(saved, NF4, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters() if type(p).__name__ != "Params4bit"} == {torch.bfloat16}
    args = train_args(NPOConfig, tmp_path, max_steps=2, learning_rate=1e-1, gradient_checkpointing=True)
    trainer = NPOTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2), processing_class=processor,
                         peft_config=lora_config_for())
    base = [p for n, p in trainer.model.named_parameters() if "lora_" not in n and type(p).__name__ != "Params4bit"]
    assert base and {p.dtype for p in base} == {torch.float32}
    lora_a = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_A" in n}
    trainer.train()
    moved = max(float((p.detach() - lora_a[n]).abs().max()) for n, p in trainer.model.named_parameters() if n in lora_a)
    assert moved > 1e-3


def test_8bit_lora_ga_unlearns(saved, tmp_path):
    model, processor = load(saved, INT8)
    forget = tiny_vqa_rows(4)
    before = sequence_logprobs(model, processor, forget).mean()
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, max_steps=8, learning_rate=1e-1),
                        forget_dataset=forget, processing_class=processor, peft_config=lora_config_for())
    assert all("lora_" in n for n, p in trainer.model.named_parameters() if p.requires_grad)
    trainer.train()
    assert sequence_logprobs(trainer.model, processor, forget).mean() < before - 0.5


def test_example_script_runs_qlora(saved, tmp_path):
    """``--load_in_4bit`` in the examples: NF4 + double quantization (QLoRA's recipe), LoRA, adapter saved."""
    save_forget_retain(tmp_path, forget_rows=2, retain_rows=2)
    out = tmp_path / "out"
    argv = ["--model_name_or_path", str(saved / "model"), "--dataset", str(tmp_path / "data"), "--forget_split",
            "forget", "--retain_split", "retain", "--load_in_4bit", "--max_steps", "2", "--learning_rate", "1e-2",
            "--per_device_train_batch_size", "2", "--output_dir", str(out), "--max_new_tokens", "3",
            "--disable_tqdm", "true"]
    trainer, _ = run_method(NPOTrainer, NPOConfig, argv=argv)
    quant = trainer.model.base_model.model.config.quantization_config
    quant = quant if isinstance(quant, dict) else quant.to_dict()
    assert quant["load_in_4bit"] and quant["bnb_4bit_quant_type"] == "nf4" and quant["bnb_4bit_use_double_quant"]
    assert len(linear_kinds(trainer.model).get("Linear4bit", [])) == 28
    assert (out / "adapter_model.safetensors").exists()
    assert json.loads((out / "results.json").read_text())["method"] == "npo"


def test_quantization_flags_are_checked():
    require_bitsandbytes()
    with pytest.raises(ValueError, match="8 bit and 4 bit"):  # TRL's ModelConfig refuses both
        parse_args(NPOConfig, argv=["--model_name_or_path", "x", "--load_in_4bit", "--load_in_8bit"])
    with pytest.raises(ValueError, match="demo model is not quantized"):
        load_model_and_processor(ModelConfig(load_in_8bit=True))


def test_shared_prompt_on_a_4bit_base_matches_full_forwards(saved):
    """IdkDPO's shared-prompt forward (the prompt once, each answer continued from its cache) through 4-bit layers and
    a LoRA adapter: the same answer log-probabilities and adapter gradients as separate full forwards."""
    from peft import get_peft_model

    from unlearn_trainer.data import ForgetRetainDataset
    from unlearn_trainer.data.refusals import RefusalCollator
    from unlearn_trainer.trainers.shared_prompt import shared_prompt_logprobs, shared_prompt_reason

    model, processor = load(saved, NF4)
    model = get_peft_model(model, lora_config_for())
    rows = tiny_vqa_rows(3)
    rows[1]["question"] = "who is this ?"
    paired = ForgetRetainDataset(rows, tiny_vqa_rows(2, seed=4))
    batch = RefusalCollator(VLMUnlearningCollator(processor), refusals=["i do not know ."], seed=0)(
        [paired[i] for i in range(3)])
    forget, refusal = batch["forget"], batch["refusal"]
    assert shared_prompt_reason(model, [refusal, forget]) is None
    trainable = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # a non-zero adapter, so its gradients flow through both LoRA matrices
        for p in trainable:
            p.add_(0.05 * torch.randn_like(p))
    shared = shared_prompt_logprobs(model, [refusal, forget])
    full = [losses.sequence_logprob(model(**model_inputs(b), use_cache=False).logits, b["labels"])
            for b in (refusal, forget)]
    for a, b in zip(full, shared):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3)
    g_shared = torch.autograd.grad((shared[0] - 2 * shared[1]).sum(), trainable)
    g_full = torch.autograd.grad((full[0] - 2 * full[1]).sum(), trainable)
    for a, b in zip(g_full, g_shared):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
