import json

import pytest
import torch
from conftest import answer_logprob, train_args
from peft import get_peft_model

from unlearn_trainer import VLMUnlearningCollator
from unlearn_trainer.data import model_inputs
from unlearn_trainer.data.collator import row_id_digest
from unlearn_trainer.data.pubg import (
    DEFAULT_INCONTEXT_PROMPT,
    DEFAULT_QUERY,
    PUBGGuidanceCache,
    generate_guidance_answers,
)
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor, tiny_vqa_rows
from unlearn_trainer.trainers.pubg import PUBGConfig, PUBGTrainer


def _norm(s):
    return "".join(s.lower().split())


def _forget(n=4):
    rows = tiny_vqa_rows(n)
    for i, r in enumerate(rows):
        r.update(id=f"ent-{i}", question="who is this person ?", answer="this is a photo of a person . name city job")
    return rows


class Spy:
    """Wraps model.generate, recording its keyword arguments."""

    def __init__(self, model):
        self.model, self.original, self.calls = model, model.generate, []
        model.generate = self

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.original(**kwargs)


def test_generation_is_seeded_uses_images_and_keeps_the_prompt_out_of_the_rows(family):
    model, processor = tiny_model_and_processor(family)
    spy = Spy(model)
    rows = _forget(3)
    out = generate_guidance_answers(model, processor, rows, max_new_tokens=6, seed=1, batch_size=2, progress=False)
    again = generate_guidance_answers(model, processor, rows, max_new_tokens=6, seed=1, batch_size=2, progress=False)
    other = generate_guidance_answers(model, processor, rows, max_new_tokens=6, seed=2, batch_size=2, progress=False)
    assert [r["answer"] for r in out] == [r["answer"] for r in again]
    assert [r["answer"] for r in out] != [r["answer"] for r in other]
    assert all(r["answer"] for r in out)
    # generation saw the images (pixel_values) and the in-context prompt, left-padded
    call = spy.calls[0]
    assert "pixel_values" in call and call["pixel_values"].shape[0] > 0 and call["do_sample"] is True
    if family == "qwen2_vl":
        assert "image_grid_thw" in call
    assert call["input_ids"].shape[0] == 2 and (call["attention_mask"][:, -1] == 1).all()
    assert (call["input_ids"] == processor.image_token_id).any(1).all()
    text = _norm(processor.tokenizer.decode(call["input_ids"][0]))
    assert _norm(DEFAULT_INCONTEXT_PROMPT) in text and _norm(DEFAULT_QUERY) in text
    assert text.index(_norm(DEFAULT_QUERY)) < text.index(_norm(DEFAULT_INCONTEXT_PROMPT))  # [q, c]
    # the training rows: same image and id, the query without the prompt
    for row, ref in zip(rows, out):
        assert ref["question"] == DEFAULT_QUERY and ref["image"] is row["image"] and ref["id"] == row["id"]
        assert "imagine" not in ref["question"].lower()
    assert processor.tokenizer.padding_side == "right"  # restored
    greedy = generate_guidance_answers(model, processor, rows[:1], max_new_tokens=4, do_sample=False, progress=False)
    assert spy.calls[-1]["do_sample"] is False and greedy[0]["answer"]
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('nope')}\) has no image") as err:
        generate_guidance_answers(model, processor, [{"id": "nope", "question": "q", "answer": "a"}], progress=False)
    assert "nope" not in str(err.value)


def test_cache_reloads_without_generating(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    spy = Spy(model)
    rows = _forget(2)
    kw = dict(max_new_tokens=5, cache_dir=tmp_path / "cache", progress=False)
    first = generate_guidance_answers(model, processor, rows, **kw)
    assert len(spy.calls) == 1
    files = list((tmp_path / "cache").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["answers"] == [r["answer"] for r in first]
    again = generate_guidance_answers(model, processor, rows, **kw)
    assert len(spy.calls) == 1 and [r["answer"] for r in again] == [r["answer"] for r in first]
    assert again[0]["image"] is rows[0]["image"]
    # any change of prompt, rows or model weights misses the cache
    generate_guidance_answers(model, processor, rows, prompt="Describe the picture.", **kw)
    assert len(spy.calls) == 2
    generate_guidance_answers(model, processor, _forget(3)[1:], **kw)  # other images
    assert len(spy.calls) == 3
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    generate_guidance_answers(model, processor, rows, **kw)
    assert len(spy.calls) == 4
    key = PUBGGuidanceCache.key(model, processor, rows, {"query": DEFAULT_QUERY})
    assert len(key["rows"]) == 2 and key["rows"][0][0] == "ent-0"


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_pubg_forgets_r_and_learns_o_star(family, lora, tmp_path):
    model, processor = tiny_model_and_processor(family)
    if lora:
        # with a frozen lm_head and final norm the tiny model's log-probs can move by ~1 nat per token at most,
        # too little to ascend r and descend o* at once in a few steps: the adapter also covers the head
        from peft import LoraConfig

        from unlearn_trainer.vision.adapters import language_model_lora_targets

        targets = f"({language_model_lora_targets()}|lm_head)"
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    forget = _forget(4)
    args = train_args(PUBGConfig, tmp_path, max_steps=8, learning_rate=1e-2 if lora else 5e-3,
                      guidance_max_new_tokens=8)
    spy = Spy(model)
    trainer = PUBGTrainer(model=model, args=args, forget_dataset=forget, processing_class=processor)
    assert len(spy.calls) == 1  # o* generated once, at init (4 rows, guidance_batch_size 8)
    guidance = trainer.guidance_answers
    assert [g["id"] for g in guidance] == [f["id"] for f in forget] and all(g["question"] == DEFAULT_QUERY for g in guidance)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in (2, 0)])
    assert batch["guidance"]["sample_index"].tolist() == batch["forget"]["sample_index"].tolist() == [2, 0]
    assert "pixel_values" in batch["guidance"]
    f0, g0 = answer_logprob(model, processor, forget), answer_logprob(model, processor, guidance)
    trainer.train()
    assert len(spy.calls) == 1
    f1, g1 = answer_logprob(model, processor, forget), answer_logprob(model, processor, guidance)
    assert f1 < f0 - 0.3, (f0, f1)
    assert g1 > g0 + 0.3, (g0, g1)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all({"forget_nll", "guidance_nll", "ga_loss", "guidance_loss"} <= set(h) for h in logged)


def test_given_guidance_answers_are_paired_and_not_generated(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    spy = Spy(model)
    forget = _forget(2)
    answers = ["a person with red hair .", "a person in a blue city ."]
    retain = tiny_vqa_rows(2, seed=7)
    trainer = PUBGTrainer(model=model, args=train_args(PUBGConfig, tmp_path, max_steps=2), forget_dataset=forget,
                          retain_dataset=retain, processing_class=processor, guidance_answers=answers)
    assert not spy.calls
    assert [g["answer"] for g in trainer.guidance_answers] == answers
    assert trainer.guidance_answers[1]["image"] is forget[1]["image"]
    trainer.train()
    assert all("retain_nll" in h and "guidance_nll" in h for h in trainer.state.log_history if "loss" in h)
    # rows without images take the forget row's image; rows in the wrong order are an error
    rows = [{"id": "ent-0", "question": "describe .", "answer": answers[0]}, {"answer": answers[1], "question": "q ?"}]
    t2 = PUBGTrainer(model=model, args=train_args(PUBGConfig, tmp_path), forget_dataset=forget,
                     processing_class=processor, guidance_answers=rows)
    assert t2.guidance_answers[0]["image"] is forget[0]["image"] and t2.guidance_answers[0]["question"] == "describe ."
    with pytest.raises(ValueError, match=rf"#0 has id digest {row_id_digest('ent-1')} but forget row #0 \(id digest "
                                         rf"{row_id_digest('ent-0')}\)") as err:
        PUBGTrainer(model=model, args=train_args(PUBGConfig, tmp_path), forget_dataset=forget,
                    processing_class=processor, guidance_answers=[rows[0] | {"id": "ent-1"}, rows[1]])
    assert "ent-0" not in str(err.value) and "ent-1" not in str(err.value)
    with pytest.raises(ValueError, match="1 guidance answers for 2"):
        PUBGTrainer(model=model, args=train_args(PUBGConfig, tmp_path), forget_dataset=forget,
                    processing_class=processor, guidance_answers=answers[:1])
    with pytest.raises(ValueError, match="prompt_position"):
        train_args(PUBGConfig, tmp_path, prompt_position="middle")


def test_reference_is_the_model_with_its_adapter_disabled(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    model = get_peft_model(model, lora_config_for(model))
    with torch.no_grad():  # a trained-looking adapter that changes the outputs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    spy = Spy(model)
    args = train_args(PUBGConfig, tmp_path, guidance_do_sample=False, guidance_max_new_tokens=6)
    trainer = PUBGTrainer(model=model, args=args, forget_dataset=_forget(2), processing_class=processor)
    inputs = spy.calls[0]
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        enabled = spy.original(**inputs)[:, n:]
        with model.disable_adapter():
            disabled = spy.original(**inputs)[:, n:]
    assert not torch.equal(enabled, disabled)
    decoded = [t.strip() for t in processor.tokenizer.batch_decode(disabled, skip_special_tokens=True)]
    assert [g["answer"] for g in trainer.guidance_answers] == decoded
    model.eval()
    batch = VLMUnlearningCollator(processor)(_forget(1))
    with torch.no_grad():
        on = model(**model_inputs(batch)).logits
        with model.disable_adapter():
            off = model(**model_inputs(batch)).logits
    assert not torch.allclose(on, off)  # the adapter is active again after generation


def test_prompt_instead_generates_from_the_prompt_alone_and_trains_on_the_query(tmp_path):
    from unlearn_trainer.data.pubg import incontext_question

    assert incontext_question("q ?", "c .", "instead") == "c ."
    model, processor = tiny_model_and_processor("llava")
    spy = Spy(model)
    rows = _forget(2)
    out = generate_guidance_answers(model, processor, rows, query="tell me about this person .",
                                    prompt="describe the picture .", prompt_position="instead", max_new_tokens=4,
                                    do_sample=False, progress=False)
    text = _norm(processor.tokenizer.decode(spy.calls[0]["input_ids"][0]))
    assert _norm("describe the picture .") in text and _norm("tell me about this person") not in text
    assert all(r["question"] == "tell me about this person ." for r in out)  # o* is trained on q
    assert train_args(PUBGConfig, tmp_path, prompt_position="instead").prompt_position == "instead"


def test_toyworld_demo_guidance_answers_describe_the_picture_and_say_nothing_private(small_toyworld, monkeypatch):
    """The ToyWorld demo's o* (its q, c, prompt position, greedy) from the world's full model: the picture's
    description, as PUBG's Fig. 2 asks, with none of the person's name, profession or city. Given [q, c], a query
    it was never trained to see followed by an instruction, the world model mixes q's answer (the person's job and
    city) into the description."""
    import runpy
    from pathlib import Path

    from unlearn_trainer.toyworld.full_model import load_full_model

    demo = runpy.run_path(str(Path(__file__).resolve().parent.parent / "examples" / "run_pubg.py"))["DEMO_DEFAULTS"]
    world = small_toyworld.world
    monkeypatch.setenv("UNLEARN_TRAINER_CACHE", str(small_toyworld.cache))
    model, processor = load_full_model(world, small_toyworld.spec, build=False)
    forget = world.splits(small_toyworld.ratio)["forget"]
    out = generate_guidance_answers(model, processor, forget, query=demo["query"], prompt=demo["incontext_prompt"],
                                    prompt_position=demo.get("prompt_position", "after"),
                                    do_sample=demo["guidance_do_sample"],
                                    max_new_tokens=demo["guidance_max_new_tokens"], progress=False)
    people = {p.id: p for p in world.identities}
    for row, guided in zip(forget, out):
        person = people[row["id"].split("/")[0]]
        assert guided is not None and guided["question"] == demo["query"]
        assert guided["answer"] == world.describe(person)
        private = {*person.name.split(), person.attributes["profession"], person.attributes["city"]}
        assert not private & set(guided["answer"].split())
