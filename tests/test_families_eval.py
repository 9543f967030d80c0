"""Every tiny family through the evaluator with mixed batches (one image, two images, text-only rows), the
processor/model guards (a tokenizer or another model's processor as ``processing_class``), saved tiny processors
reloading as themselves, and ``max_steps=0`` refused."""

import pytest
import torch
from conftest import train_args
from transformers import AutoProcessor, AutoTokenizer, TrainingArguments

from unlearn_trainer import (
    FTTPConfig,
    FTTPTrainer,
    GAConfig,
    GATrainer,
    NPOConfig,
    NPOTrainer,
    VLMUnlearningCollator,
    evaluation,
)
from unlearn_trainer.cli import parse_args
from unlearn_trainer.data.collator import row_id_digest
from unlearn_trainer.evaluation import evaluate_rows, generate_answers, option_loglikelihoods
from unlearn_trainer.testing import TINY_FAMILIES, tiny_images, tiny_model_and_processor, tiny_vqa_rows

ALL_FAMILIES = sorted(TINY_FAMILIES)
# PaliGemma's processor cannot encode a row without an image (it would put <bos> inside the question)
NO_TEXT_ONLY_ROWS = {"paligemma"}


def _text_row():
    return {**tiny_vqa_rows(1, with_images=False)[0], "id": "text"}


def _mixed_rows(family):
    """One-image rows, a two-image row and (where the family can encode it) a text-only row, all multiple-choice."""
    one = tiny_vqa_rows(3)
    two = {**one[1], "id": "two", "image": None, "images": tiny_images(2, seed=3)}
    rows = [one[0], two, one[2]] + ([] if family in NO_TEXT_ONLY_ROWS else [_text_row()])
    return [{**r, "options": ["cat", "dog"], "answer_letter": "a"} for r in rows]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_evaluator_on_mixed_batches(family):
    """Generation and option scoring of a mixed batch give each row what it gets alone, and each row's own images
    reach the model (replacing the two-image row's second image changes that row's scores only)."""
    model, processor = tiny_model_and_processor(family)
    rows = _mixed_rows(family)
    metrics, answers = evaluate_rows(model, processor, rows, max_new_tokens=3, batch_size=len(rows))
    assert metrics["n"] == len(rows) and "mc_loglik_acc" in metrics
    assert answers == [generate_answers(model, processor, [r], max_new_tokens=3)[0] for r in rows]
    scores = option_loglikelihoods(model, processor, rows, batch_size=len(rows) * 2)
    alone = [option_loglikelihoods(model, processor, [r])[0] for r in rows]
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(alone), atol=1e-4, rtol=0)
    swapped = list(rows)
    swapped[1] = {**rows[1], "images": [rows[1]["images"][0], tiny_images(1, seed=9)[0]]}
    changed = option_loglikelihoods(model, processor, swapped, batch_size=len(rows) * 2)
    assert changed[0] == scores[0] and changed[2:] == scores[2:]
    assert not torch.allclose(torch.tensor(changed[1]), torch.tensor(scores[1]))


def test_paligemma_refuses_text_only_rows_naming_them():
    """Its processor would insert <bos> inside the question of a text-only row (and fail on a text-only batch)."""
    model, processor = tiny_model_and_processor("paligemma")
    rows = [tiny_vqa_rows(1)[0], _text_row()]
    text = rf"\(id digest {row_id_digest('text')}\): no image. PaliGemma"
    with pytest.raises(ValueError, match="row #1 " + text):  # its position in the rows given, batched apart
        generate_answers(model, processor, rows, max_new_tokens=2)
    with pytest.raises(ValueError, match="row #1 " + text):
        VLMUnlearningCollator(processor)(rows)
    with pytest.raises(ValueError, match="row #0 " + text):
        generate_answers(model, processor, [_text_row()], max_new_tokens=2)


def test_mllama_training_batch_refuses_text_only_rows_next_to_image_rows():
    """In such a batch Mllama's cross-attention attends from the text-only row to an empty image, so its loss depends
    on the batch; the evaluator batches text-only rows apart instead (test above)."""
    _, processor = tiny_model_and_processor("mllama")
    collator = VLMUnlearningCollator(processor)
    with pytest.raises(ValueError, match=rf"row #1 \(id digest {row_id_digest('text')}\): no image, batched with rows "
                                         "that have images"):
        collator([tiny_vqa_rows(1)[0], _text_row()])
    assert "pixel_values" not in collator([_text_row(), _text_row()])  # a text-only batch is fine


@pytest.mark.parametrize("family", ["qwen2_vl", "smolvlm"])
def test_tokenizer_as_processor_is_refused_naming_its_class(family, tmp_path):
    """A tokenizer ignores `images`: NPO and FTTP trained on text only without a word. Now the first batch fails."""
    model, processor = tiny_model_and_processor(family)
    processor.save_pretrained(tmp_path / "proc")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "proc")  # what AutoProcessor returned for these before
    assert tokenizer.chat_template
    rows = [{**r, "concepts": ["cat"], "answer": "a cat sits on the mat ."} for r in tiny_vqa_rows(2)]
    match = rf"row #\d \(id digest [0-9a-f]{{8}}\) has 1 image\(s\) but the {type(tokenizer).__name__} .* produced no pixel inputs"
    for trainer_cls, config_cls in [(NPOTrainer, NPOConfig), (FTTPTrainer, FTTPConfig)]:
        trainer = trainer_cls(model=model, args=train_args(config_cls, tmp_path, max_steps=1), forget_dataset=rows,
                              processing_class=tokenizer)
        with pytest.raises(ValueError, match=match):
            trainer.train()
    with pytest.raises(ValueError, match=match):
        generate_answers(model, tokenizer, rows, max_new_tokens=2)


def test_processor_of_another_model_is_refused_at_construction(tmp_path):
    rows = tiny_vqa_rows(2)
    llava, _ = tiny_model_and_processor("llava")
    _, idefics = tiny_model_and_processor("idefics3")  # used to end in an IndexError deep in the forward pass
    with pytest.raises(ValueError, match=r"Idefics3Processor \(processing_class\) has 186 tokens but the model's "
                                         r"vocabulary has 147"):
        GATrainer(model=llava, args=train_args(GAConfig, tmp_path), forget_dataset=rows, processing_class=idefics)
    gemma, _ = tiny_model_and_processor("gemma3")  # vocabulary large enough, but another image token
    _, qwen = tiny_model_and_processor("qwen2_vl")
    with pytest.raises(ValueError, match=r"writes images as \['<\|image_pad\|>'\] \(token ids \[6\]\) but the "
                                         r"Gemma3ForConditionalGeneration expects image token id 8"):
        GATrainer(model=gemma, args=train_args(GAConfig, tmp_path), forget_dataset=rows, processing_class=qwen)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_saved_tiny_processor_reloads_as_itself(family, tmp_path):
    _, processor = tiny_model_and_processor(family)
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is type(processor)
    rows = _mixed_rows(family)
    if family == "mllama":  # text-only rows go in batches of their own (see above)
        rows = rows[:-1]
    expected, got = VLMUnlearningCollator(processor)(rows), VLMUnlearningCollator(reloaded)(rows)
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_max_steps_zero_is_refused_and_points_to_evaluation(tmp_path):
    """Trainer reads max_steps=0 as one step: it trained a second adapter and wrote a new card."""
    for config_cls in (NPOConfig, GAConfig):
        with pytest.raises(ValueError, match="max_steps=0 does not mean 'evaluate only'.*evaluate_splits"):
            train_args(config_cls, tmp_path, max_steps=0)
    with pytest.raises(ValueError, match="num_train_epochs=0 does not mean 'evaluate only'"):
        train_args(NPOConfig, tmp_path, max_steps=-1, num_train_epochs=0)
    with pytest.raises(ValueError, match="max_steps=0"):  # the examples' command line
        parse_args(NPOConfig, argv=["--model_name_or_path", "m", "--max_steps", "0"])
    model, processor = tiny_model_and_processor("llava")
    with pytest.raises(ValueError, match="max_steps=0"):  # plain TrainingArguments are converted
        GATrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), max_steps=0),
                  forget_dataset=tiny_vqa_rows(1), processing_class=processor)
    for name in ("evaluate_splits", "evaluate_rows", "generate_answers"):  # the message names what exists
        assert callable(getattr(evaluation, name))
