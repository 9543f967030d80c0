import pytest
import torch

from unlearn_trainer.data import ForgetRetainCollator, ForgetRetainDataset, VLMUnlearningCollator, model_inputs
from unlearn_trainer.data.collator import row_id_digest, single_image, to_device
from unlearn_trainer.testing import tiny_images, tiny_model_and_processor, tiny_vqa_rows


def _norm(s):
    return "".join(s.lower().split())


@pytest.fixture
def kit(family):
    model, processor = tiny_model_and_processor(family)
    return family, model, processor


def test_labels_cover_exactly_the_answer(kit):
    family, model, processor = kit
    rows = tiny_vqa_rows(3) + tiny_vqa_rows(1, with_images=False)
    batch = VLMUnlearningCollator(processor)(rows)
    image_id = processor.image_token_id
    for i, row in enumerate(rows):
        lab = batch["labels"][i]
        ids = batch["input_ids"][i]
        answer_pos = lab.ne(-100)
        assert answer_pos.sum() > 0
        # labelled tokens are a contiguous block equal to the input ids there
        idx = answer_pos.nonzero().flatten()
        assert idx.tolist() == list(range(int(idx[0]), int(idx[-1]) + 1))
        assert torch.equal(lab[answer_pos], ids[answer_pos])
        assert _norm(processor.tokenizer.decode(ids[answer_pos])) == _norm(row["answer"])
        # every image token, padding and prompt token is masked
        assert (lab[ids == image_id] == -100).all()
        assert (lab[batch["attention_mask"][i] == 0] == -100).all()
        assert int(idx[0]) > int((ids == image_id).nonzero().max()) if (ids == image_id).any() else True
    assert (batch["input_ids"] == image_id).sum() > 0


def test_all_processor_keys_are_kept(kit):
    family, model, processor = kit
    rows = tiny_vqa_rows(2)
    collator = VLMUnlearningCollator(processor)
    texts = [collator.render(r) for r in rows]
    direct = processor(text=texts, images=[r["image"] for r in rows], return_tensors="pt", padding=True)
    batch = collator(rows)
    assert set(direct.keys()) <= set(batch.keys())
    for k in direct.keys():
        assert torch.equal(direct[k], batch[k]), k
    if family == "qwen2_vl":
        assert {"image_grid_thw", "mm_token_type_ids"} <= set(batch)
    out = model(**model_inputs(batch))
    assert out.logits.shape[:2] == batch["input_ids"].shape


def test_left_padding_and_end_of_turn_label(kit):
    family, model, processor = kit
    processor.tokenizer.padding_side = "left"
    rows = tiny_vqa_rows(2) + tiny_vqa_rows(1, with_images=False)
    batch = VLMUnlearningCollator(processor, label_end_of_turn=True)(rows)
    eot = processor.tokenizer.eos_token_id
    for i, row in enumerate(rows):
        ids = batch["input_ids"][i][batch["labels"][i] != -100]
        assert ids[-1].item() == eot
        assert _norm(processor.tokenizer.decode(ids[:-1])) == _norm(row["answer"])


def test_question_with_placeholders_places_images(kit):
    family, model, processor = kit
    token = processor.image_token
    imgs = tiny_images(2)
    row = {"id": "two", "images": imgs, "question": f"{token} and {token} : what is in this image ?",
           "answer": "the dog is red ."}
    batch = VLMUnlearningCollator(processor)([row])
    n_per_image = (VLMUnlearningCollator(processor)(tiny_vqa_rows(1))["input_ids"] == processor.image_token_id).sum()
    assert (batch["input_ids"] == processor.image_token_id).sum() == 2 * n_per_image


def test_image_count_mismatch_names_the_row(kit):
    family, model, processor = kit
    token = processor.image_token
    row = {"id": "bad-7", "image": tiny_images(1)[0], "question": f"{token} {token} what ?", "answer": "the dog is red ."}
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('bad-7')}\).*2 image placeholder") as err:
        VLMUnlearningCollator(processor)([row])
    assert "bad-7" not in str(err.value)


def test_missing_answer_span_names_the_row(kit):
    family, model, processor = kit
    # a template that rewrites the assistant text: the answer is no longer in the rendering
    processor.chat_template = processor.chat_template.replace("{{ c['text'] }}", "{{ c['text'] | upper }}")
    row = tiny_vqa_rows(1)[0] | {"id": "lost-answer"}
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('lost-answer')}\).*does not appear") as err:
        VLMUnlearningCollator(processor)([row])
    assert "lost-answer" not in str(err.value)


def test_missing_fields_and_empty_answer(kit):
    family, model, processor = kit
    collator = VLMUnlearningCollator(processor)
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('q1')}\).*'answer'") as err:
        collator([{"id": "q1", "question": "who is this person ?"}])
    assert "q1" not in str(err.value)
    with pytest.raises(ValueError, match="empty answer"):
        collator([{"id": "q2", "question": "who ?", "answer": "  "}])


def test_max_length_is_an_error_not_a_truncation(kit):
    family, model, processor = kit
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('row-0')}\).*max_length=5") as err:
        VLMUnlearningCollator(processor, max_length=5)(tiny_vqa_rows(1))
    assert "row-0" not in str(err.value)


def test_forget_retain_pairing_is_deterministic():
    forget = [{"question": "q", "answer": f"f{i}"} for i in range(5)]
    retain = [{"question": "q", "answer": f"r{i}"} for i in range(3)]
    a, b = ForgetRetainDataset(forget, retain, seed=3), ForgetRetainDataset(forget, retain, seed=3)
    assert [a[i]["retain"]["answer"] for i in range(5)] == [b[i]["retain"]["answer"] for i in range(5)]
    assert {a[i]["retain"]["answer"] for i in range(3)} == {"r0", "r1", "r2"}  # first pass covers the retain set
    assert a[4]["forget"]["__index__"] == 4
    with pytest.raises(ValueError, match="forget set is empty"):
        ForgetRetainDataset([], retain)
    with pytest.raises(ValueError, match="retain set is empty"):
        ForgetRetainDataset(forget, [])


def test_forget_retain_collator_batches(kit):
    family, model, processor = kit
    ds = ForgetRetainDataset(tiny_vqa_rows(2), tiny_vqa_rows(3, seed=1))
    batch = ForgetRetainCollator(VLMUnlearningCollator(processor))([ds[0], ds[1]])
    assert set(batch) == {"forget", "retain"}
    assert batch["forget"]["sample_index"].tolist() == [0, 1]
    assert batch["retain"]["input_ids"].shape[0] == 2


def test_forget_part_unwraps_a_forget_retain_collator(kit):
    family, model, processor = kit
    inner = VLMUnlearningCollator(processor)
    assert ForgetRetainCollator.forget_part(ForgetRetainCollator(inner)) is inner
    assert ForgetRetainCollator.forget_part(inner) is inner


def test_to_device_casts_floating_tensors_only_with_a_dtype():
    batch = {"input_ids": torch.tensor([[1, 2]]), "pixel_values": torch.ones(1, 3), "n": 3}
    moved = to_device(batch, "cpu")
    assert moved["pixel_values"].dtype == torch.float32 and moved["n"] == 3
    cast = to_device(batch, "cpu", torch.bfloat16)
    assert cast["pixel_values"].dtype == torch.bfloat16 and cast["input_ids"].dtype == torch.long
    assert to_device(batch, "cpu", torch.int8)["pixel_values"].dtype == torch.float32  # not a floating dtype


def test_single_image_names_the_pool_and_the_entry():
    image = tiny_images(1)[0]
    assert single_image(image, 0) is image
    assert single_image({"id": "a", "images": [image]}, 0) is image
    assert single_image({"id": "a", "picture": image}, 0, "picture") is image
    with pytest.raises(ValueError, match=rf"Distant row #1 \(id digest {row_id_digest('a')}\) has 2 images"):
        single_image({"id": "a", "images": [image, image]}, 1, what="Distant")
    with pytest.raises(ValueError, match="Distant row #2 .* has no 'picture' column"):
        single_image({"id": "a", "image": image}, 2, "picture", what="Distant")
    with pytest.raises(ValueError, match="Reference image #3 is None"):
        single_image(None, 3)
