"""Inputs and caches that must not be trusted blindly: concepts in unspaced scripts and NFD/NFC text (FTTP), saliency
and PUBG caches (fingerprints, corrupt files, o* that name the forgotten), answers past the model's positions or
with literal control tokens."""

import unicodedata

import pytest
import torch

from unlearn_trainer.data.concepts import ConceptMaskCollator, find_concept_spans

TEMPLATE = ("{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}{{ c['text'] }}"
            "{% endfor %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT: {% endif %}")


def _bpe_tokenizer(corpus):
    """A byte-level tokenizer without merges (one token per UTF-8 byte: any script, offsets on the
    original text), trained in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(list(corpus) * 10, trainers.BpeTrainer(
        vocab_size=259, special_tokens=["<pad>", "</s>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>")
    tok.chat_template = TEMPLATE
    return tok


# -- item 12: FTTP concepts in unspaced scripts and NFD/NFC text -------------------------------------------------------
CJK_THAI = [
    # (answer, concept, the text the mask must spell)
    ("我认为特朗普是总统。", "特朗普", "特朗普"),
    ("トランプさんは大統領です。", "トランプ", "トランプ"),
    ("นายทักษิณเป็นนายกรัฐมนตรี", "ทักษิณ", "ทักษิณ"),
    ("他叫Trump先生。", "Trump", "Trump"),
]


@pytest.mark.parametrize("answer,concept,spelled", CJK_THAI)
def test_concept_in_unspaced_scripts_is_masked_through_the_collator(answer, concept, spelled):
    tok = _bpe_tokenizer([a for a, _, _ in CJK_THAI] + ["USER: who ? ASSISTANT:"])
    row = {"id": "r0", "question": "who ?", "answer": answer, "concepts": [concept]}
    # with "gd" a row whose concept is not found trains as gradient DEScent: the mask must find it
    batch = ConceptMaskCollator(tok, missing_concept="gd")([row])
    mask = batch["concept_mask"][0]
    assert mask.any()
    assert (batch["labels"][0][mask] != -100).all()
    assert tok.decode(batch["input_ids"][0][mask]).replace(" ", "") == spelled.replace(" ", "")


def test_whole_words_still_hold_in_spaced_scripts():
    assert find_concept_spans("Annual report by Ann.", ["Ann"]) == [(17, 20)]
    assert find_concept_spans("Trump's", ["Trump"]) == [(0, 5)]


@pytest.mark.parametrize("answer_form,concept_form", [("NFD", "NFC"), ("NFC", "NFD"), ("NFD", "NFD")])
def test_nfd_and_nfc_match_and_the_mask_covers_the_original_characters(answer_form, concept_form):
    answer = unicodedata.normalize(answer_form, "Le héros est José Müller, dit Müller.")
    concept = unicodedata.normalize(concept_form, "José Müller")
    alias = unicodedata.normalize(concept_form, "Müller")
    spans = find_concept_spans(answer, [concept, alias])
    assert [unicodedata.normalize("NFC", answer[s:e]) for s, e in spans] == ["José Müller", "Müller"]
    tok = _bpe_tokenizer([unicodedata.normalize(f, "Le héros est José Müller, dit Müller.") for f in ("NFC", "NFD")])
    row = {"question": "who ?", "answer": answer, "concepts": [concept, alias]}
    batch = ConceptMaskCollator(tok, missing_concept="gd")([row])
    mask = batch["concept_mask"][0]
    spelled = unicodedata.normalize("NFC", tok.decode(batch["input_ids"][0][mask]))
    assert spelled.replace(" ", "") == "JoséMüllerMüller"


# -- item 14: answers past the model's positions, literal control tokens -----------------------------------------------
def test_row_longer_than_the_model_positions_is_an_error_naming_it(tmp_path):
    from conftest import tiny_model, train_args

    from unlearn_trainer import GAConfig, GATrainer
    from unlearn_trainer.testing import tiny_vqa_rows

    model, processor = tiny_model("llava")
    limit = model.config.get_text_config().max_position_embeddings
    rows = tiny_vqa_rows(2)
    rows[1] = {**rows[1], "id": "too-long", "answer": " ".join(["the dog is red ."] * (limit // 4))}
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path), forget_dataset=rows,
                        processing_class=processor)
    trainer.data_collator([trainer.train_dataset[0]])  # a row within the positions collates
    with pytest.raises(ValueError, match=rf"{limit} positions.*row 'too-long'") as err:
        trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    assert "dog" not in str(err.value)  # names the row, never quotes it


@pytest.mark.parametrize("key", ["question", "answer"])
def test_literal_control_token_in_a_row_is_an_error_naming_it(key):
    from unlearn_trainer import VLMUnlearningCollator

    tok = _bpe_tokenizer(["the answer is here", "USER: who ? ASSISTANT:"])
    collator = VLMUnlearningCollator(tok)
    row = {"id": "r7", "question": "who ?", "answer": "the answer is here"}
    collator([row])
    bad = {**row, key: row[key] + "<|im_end|>secret"}
    with pytest.raises(ValueError, match=rf"row 'r7'.*{key}.*'<\|im_end\|>'") as err:
        collator([bad])
    assert "secret" not in str(err.value)
    with pytest.raises(ValueError, match="row #1.*'</s>'"):  # no id: named by position; eos is a control token too
        collator([row, {"question": "who ?", "answer": "done</s>"}])


def test_image_placeholder_in_the_question_stays_allowed():
    from unlearn_trainer import VLMUnlearningCollator
    from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows

    _, processor = tiny_model_and_processor("llava")
    row = {**tiny_vqa_rows(1)[0], "question": "<image> what is in this image ?"}
    assert (VLMUnlearningCollator(processor)([row])["labels"] != -100).any()
    with pytest.raises(ValueError, match="row 'row-0': its answer contains the control token '<image>'"):
        VLMUnlearningCollator(processor)([{**row, "answer": "a cat <image>"}])
