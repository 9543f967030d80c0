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


def assert_accumulation_matches_larger_batch(trainer_cls, config_cls, tmp_path, logged=(), **extra):
    """One SGD step of batch 2 == one step of 2 accumulated batches of 1 (parameters equal, some moved); every logged
    step also reports the keys in ``logged``. ``extra``: config overrides of the method."""
    from unlearn_trainer.testing import tiny_vqa_rows

    results = []
    for bs, acc in [(2, 1), (1, 2)]:
        model, processor = tiny_model_and_processor("llava", seed=0)
        args = train_args(config_cls, tmp_path, max_steps=1, per_device_train_batch_size=bs,
                          gradient_accumulation_steps=acc, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                          max_grad_norm=0.0, **extra)
        trainer = trainer_cls(model=model, args=args, forget_dataset=tiny_vqa_rows(2),
                              retain_dataset=tiny_vqa_rows(3, seed=5), processing_class=processor)
        trainer.train()
        assert all(key in h for h in trainer.state.log_history if "loss" in h for key in logged), logged
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
    base = dict(tiny_model_and_processor("llava", seed=0)[0].named_parameters())
    for name, value in results[0].items():
        torch.testing.assert_close(value, results[1][name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(not torch.equal(value, base[name]) for name, value in results[0].items())


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



# ------------------------------------------------------------------------------------ small ToyWorld models (issue 14)
# A small world with its memorizing full model and the model retrained without its forget identities, built once per
# test session in a session tmp cache. Reused by the retrained / MIA / forget-quality / attack tests.
SMALL_TOYWORLD = dict(num_identities=8, family_size=4, train_views=2, heldout_views=1, num_unseen=4, image_size=16)
SMALL_TOYWORLD_SPEC = dict(image_size=16, patch_size=4, vision_hidden_size=32, vision_layers=1, hidden_size=64,
                           intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=4, epochs=40.0,
                           batch_size=16, learning_rate=3e-3)
SMALL_TOYWORLD_RATIO = 0.25  # 2 of the 8 identities


@pytest.fixture(scope="session")
def small_toyworld(tmp_path_factory):
    """``.world``, ``.spec``, ``.ratio``, ``.full_dir``, ``.retrained_dir`` of a small ToyWorld (8 trained identities,
    4 never seen) whose full model memorizes its training views and whose retrained model lacks the 2 forget
    identities. Load them with ``load_full_model(world, spec, build=False)`` / ``load_retrained_model(world, spec,
    ratio, build=False)`` inside ``monkeypatch.setenv("UNLEARN_TRAINER_CACHE", str(small_toyworld.cache))``, or
    directly with ``from_pretrained(full_dir)``."""
    from types import SimpleNamespace

    from unlearn_trainer.toyworld import ToyWorld
    from unlearn_trainer.toyworld.full_model import FullModelSpec, build_full_model, build_retrained_model

    cache = tmp_path_factory.mktemp("toyworld_cache")
    world, spec = ToyWorld(**SMALL_TOYWORLD), FullModelSpec(**SMALL_TOYWORLD_SPEC)
    mp = pytest.MonkeyPatch()
    mp.setenv("UNLEARN_TRAINER_CACHE", str(cache))
    try:
        full_dir = build_full_model(world, spec, progress=False, verify=False)
        retrained_dir = build_retrained_model(world, spec, SMALL_TOYWORLD_RATIO, progress=False, verify=False)
    finally:
        mp.undo()
    return SimpleNamespace(world=world, spec=spec, ratio=SMALL_TOYWORLD_RATIO, cache=cache, full_dir=full_dir,
                           retrained_dir=retrained_dir)


class SavedActivations:
    """Bytes of tensors autograd holds for backward, live now and at peak (saved_tensors_hooks)."""

    def __init__(self):
        self.live = self.peak = 0

    def pack(self, tensor):
        tracker = self

        class Held:
            def __init__(self, t):
                self.t, self.n = t, t.numel() * t.element_size()
                tracker.live += self.n
                tracker.peak = max(tracker.peak, tracker.live)

            def __del__(self):
                tracker.live -= self.n

        return Held(tensor)

    @staticmethod
    def unpack(held):
        return held.t
