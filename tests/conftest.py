import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from peft import get_peft_model  # noqa: E402

from unlearn_trainer import VLMUnlearningCollator, losses  # noqa: E402
from unlearn_trainer.data import model_inputs  # noqa: E402
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor  # noqa: E402

# tiny models gain nothing from intra-op threads, and spinning threads hurt on a busy 2-core machine
torch.set_num_threads(1)

FAMILIES = ["llava", "qwen2_vl"]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def train_args(config_cls, tmp_path, **overrides):
    """Fast, quiet, deterministic training arguments for tests."""
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_pin_memory=False,
    )
    kwargs.update(overrides)
    return config_cls(**kwargs)


def tiny_model(family, lora=False):
    """A tiny model of ``family`` and its processor, with a fresh LoRA adapter on the language model if ``lora``."""
    model, processor = tiny_model_and_processor(family)
    if lora:
        model = get_peft_model(model, lora_config_for(model))
    return model, processor


def answer_logprob(model, processor, rows) -> float:
    """Mean over ``rows`` of the answer's log-probability under ``model`` (images passed)."""
    batch = VLMUnlearningCollator(processor)(rows)
    with torch.no_grad():
        return losses.sequence_logprob(model(**model_inputs(batch)).logits, batch["labels"]).mean().item()


def save_tiny_llava(root, **sizes):
    """Save the tiny LLaVA and its processor under ``root / "model"`` (a local checkpoint for from_pretrained)."""
    model, processor = tiny_model_and_processor("llava", **sizes)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root / "model"


def save_forget_retain(root, forget_rows: int, retain_rows: int):
    """Save a ``datasets.DatasetDict`` with "forget" and "retain" VQA splits under ``root / "data"``."""
    import datasets

    from unlearn_trainer.testing import tiny_vqa_rows

    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "question": datasets.Value("string"), "answer": datasets.Value("string")})
    datasets.DatasetDict({
        "forget": datasets.Dataset.from_list(tiny_vqa_rows(forget_rows), features=features),
        "retain": datasets.Dataset.from_list(tiny_vqa_rows(retain_rows, seed=2), features=features),
    }).save_to_disk(str(root / "data"))
    return root / "data"

