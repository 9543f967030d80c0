"""TRL's vision dataset layouts (conversational ``messages`` + ``images``, ``prompt``/``completion``) collate and train
as question/answer rows do, with the answer-only labels of TRL's own collator."""

import copy

import datasets
import pytest
import torch
from conftest import train_args
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from unlearn_trainer import NPOConfig, NPOTrainer, VLMUnlearningCollator
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows


def prompt_completion(rows):
    """TRL's conversational prompt-completion rows (the content blocks of its VLM datasets)."""
    return [{"images": [r["image"]],
             "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}],
             "completion": [{"role": "assistant", "content": [{"type": "text", "text": r["answer"]}]}]} for r in rows]


def messages(rows):
    """TRL's conversational language-modeling rows (SFT): ``messages`` with ``images``."""
    return [{"images": p["images"], "messages": p["prompt"] + p["completion"]} for p in prompt_completion(rows)]


def unpadded(batch, key, i):
    return batch[key][i][batch["attention_mask"][i].bool()].tolist()


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_labels_are_trls_completion_only_labels(family):
    _, processor = tiny_model_and_processor(family)
    rows = prompt_completion(tiny_vqa_rows(3))
    trl = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)(copy.deepcopy(rows))
    ours = VLMUnlearningCollator(processor, label_end_of_turn=True)(copy.deepcopy(rows))
    plain = VLMUnlearningCollator(processor)(copy.deepcopy(rows))
    eot = {processor.tokenizer.convert_tokens_to_ids(t) for t in ("</s>", "<|im_end|>")}
    for i in range(len(rows)):  # TRL pads prompts on the left, we pad on the right: compare the real tokens
        assert unpadded(ours, "input_ids", i) == unpadded(trl, "input_ids", i)
        assert unpadded(ours, "labels", i) == unpadded(trl, "labels", i)
        # by default only the answer: TRL's labels without the template's end-of-turn token after it
        trl_labels = [t for t in unpadded(trl, "labels", i) if t != -100]
        assert trl_labels[-1] in eot
        assert [t for t in unpadded(plain, "labels", i) if t != -100] == trl_labels[:-1]
    torch.testing.assert_close(ours["pixel_values"], trl["pixel_values"])


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_trl_layouts_give_the_question_answer_batch(family):
    _, processor = tiny_model_and_processor(family)
    qa = tiny_vqa_rows(2)
    collate = VLMUnlearningCollator(processor)
    expected = collate(qa)
    as_dataset = datasets.Dataset.from_list(messages(qa))  # as a user's datasets.Dataset gives them
    for rows in (prompt_completion(qa), messages(qa), [as_dataset[i] for i in range(2)]):
        got = collate(rows)
        assert sorted(got) == sorted(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key])


def test_plain_prompt_completion_is_rendered_as_it_is():
    _, processor = tiny_model_and_processor("llava")
    qa = tiny_vqa_rows(2)
    collate = VLMUnlearningCollator(processor)
    rows = [{"image": r["image"], "prompt": collate.render(r, include_answer=False), "completion": r["answer"]}
            for r in qa]  # the prompt written with the template's own tokens, as TRL's plain rows are
    trl = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)(copy.deepcopy(rows))
    got, expected = collate(rows), collate(qa)
    for i in range(2):
        assert unpadded(got, "labels", i) == unpadded(trl, "labels", i)
        assert [t for t in unpadded(got, "labels", i) if t != -100] == \
            [t for t in unpadded(expected, "labels", i) if t != -100]


def test_multi_turn_labels_only_the_last_assistant_turn():
    _, processor = tiny_model_and_processor("qwen2_vl")
    qa = tiny_vqa_rows(2)
    row = messages(qa[:1])[0]
    row["messages"] = [*row["messages"], {"role": "user", "content": [{"type": "text", "text": "what is in this image ?"}]},
                       {"role": "assistant", "content": [{"type": "text", "text": qa[1]["answer"]}]}]
    collate = VLMUnlearningCollator(processor)
    batch = collate([row])
    labelled = [t for t in batch["labels"][0].tolist() if t != -100]
    assert processor.tokenizer.decode(labelled).strip() == qa[1]["answer"].strip()
    assert collate.tokenizer.decode(batch["input_ids"][0]).count(qa[0]["answer"].strip()) == 1  # in the prompt


def test_malformed_trl_rows_are_named():
    _, processor = tiny_model_and_processor("llava")
    collate = VLMUnlearningCollator(processor)
    row = messages(tiny_vqa_rows(1))[0]
    trailing = {**row, "messages": [*row["messages"], {"role": "user", "content": "secret question"}]}
    with pytest.raises(ValueError, match=r"row #0: its messages continue after the last assistant turn") as err:
        collate([trailing])
    assert "secret" not in str(err.value)
    no_answer = {**row, "messages": row["messages"][:1]}
    with pytest.raises(ValueError, match="no assistant turn"):
        collate([no_answer])
    two = {**prompt_completion(tiny_vqa_rows(1))[0]}
    two["completion"] = two["completion"] * 2
    with pytest.raises(ValueError, match="exactly one assistant turn"):
        collate([two])
    extra_image = {**row, "images": row["images"] * 2}
    with pytest.raises(ValueError, match=r"row #0: Number of images provided \(2\)"):
        collate([extra_image])


def test_columns_are_checked_at_construction_and_mapped(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    qa = tiny_vqa_rows(2)
    renamed = datasets.Dataset.from_list([{"picture": r["image"], "query": r["question"], "response": r["answer"]}
                                          for r in qa])
    with pytest.raises(ValueError, match=r"forget_dataset has columns \['picture', 'query', 'response'\]") as err:
        NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path), forget_dataset=renamed,
                   processing_class=processor)
    for layout in ("question/answer", "messages", "prompt/completion", "column_mapping"):
        assert layout in str(err.value)
    assert qa[0]["answer"] not in str(err.value)
    with pytest.raises(ValueError, match="The retain_dataset has columns"):
        NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path), forget_dataset=qa, retain_dataset=renamed,
                   processing_class=processor)
    mapping = {"picture": "image", "query": "question", "response": "answer"}
    trainer = NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path), forget_dataset=renamed,
                         processing_class=processor, column_mapping=mapping)
    got = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])["forget"]
    expected = VLMUnlearningCollator(processor)(qa)
    torch.testing.assert_close(got["labels"], expected["labels"])
    torch.testing.assert_close(got["pixel_values"], expected["pixel_values"])


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("layout", [messages, prompt_completion], ids=["messages", "prompt_completion"])
def test_trl_dataset_trains_unchanged(family, layout, tmp_path):
    """NPO + retain on a TRL-format ``datasets.Dataset`` logs the losses of the same rows as question/answer."""
    forget, retain = tiny_vqa_rows(4, seed=0), tiny_vqa_rows(4, seed=1)[::-1]
    history = []
    for forget_rows, retain_rows in ((forget, retain), (datasets.Dataset.from_list(layout(forget)),
                                                        datasets.Dataset.from_list(layout(retain)))):
        model, processor = tiny_model_and_processor(family)
        args = train_args(NPOConfig, tmp_path, max_steps=3)
        trainer = NPOTrainer(model=model, args=args, forget_dataset=forget_rows, retain_dataset=retain_rows,
                             processing_class=processor)
        trainer.train()
        history.append([(h["loss"], h["npo_loss"], h["retain_nll"]) for h in trainer.state.log_history if "npo_loss" in h])
    assert len(history[1]) == 3 and all(torch.isfinite(torch.tensor(h)).all() for h in history[1])
    torch.testing.assert_close(history[1], history[0])


def test_column_mapping_needs_our_collator(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    with pytest.raises(ValueError, match="the given data_collator reads rows its own way"):
        NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                   data_collator=lambda rows: rows, processing_class=processor, column_mapping={"q": "question"})


@pytest.mark.parametrize("layout", [messages, prompt_completion])
def test_trl_rows_are_evaluated_like_question_answer_rows(layout):
    """The evaluator reads a TRL row's answer and prompt as training does (it needed 'question'/'answer' fields)."""
    from unlearn_trainer.evaluation import evaluate_rows

    model, processor = tiny_model_and_processor("llava")
    rows = tiny_vqa_rows(3)
    plain, plain_answers = evaluate_rows(model, processor, rows, max_new_tokens=4)
    trl, trl_answers = evaluate_rows(model, processor, layout(rows), max_new_tokens=4)
    assert trl_answers == plain_answers
    assert trl == plain and "rougeL_f" in trl
