"""Inputs and caches that must not be trusted blindly: concepts in unspaced scripts and NFD/NFC text (FTTP), saliency
and PUBG caches (fingerprints, corrupt files, o* that name the forgotten), answers past the model's positions or
with literal control tokens."""

import unicodedata

import pytest
import torch

from unlearn_trainer.data.collator import row_id_digest
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
    with pytest.raises(ValueError, match=rf"{limit} positions.*row #1 \(id digest {row_id_digest('too-long')}\)") as err:
        trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    assert "dog" not in str(err.value) and "too-long" not in str(err.value)  # names the row, never quotes it


@pytest.mark.parametrize("key", ["question", "answer"])
def test_literal_control_token_in_a_row_is_an_error_naming_it(key):
    from unlearn_trainer import VLMUnlearningCollator

    tok = _bpe_tokenizer(["the answer is here", "USER: who ? ASSISTANT:"])
    collator = VLMUnlearningCollator(tok)
    row = {"id": "r7", "question": "who ?", "answer": "the answer is here"}
    collator([row])
    bad = {**row, key: row[key] + "<|im_end|>secret"}
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('r7')}\).*{key}.*'<\|im_end\|>'") as err:
        collator([bad])
    assert "secret" not in str(err.value) and "r7" not in str(err.value)
    with pytest.raises(ValueError, match="row #1.*'</s>'"):  # no id: named by position; eos is a control token too
        collator([row, {"question": "who ?", "answer": "done</s>"}])


def test_image_placeholder_in_the_question_stays_allowed():
    from unlearn_trainer import VLMUnlearningCollator
    from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows

    _, processor = tiny_model_and_processor("llava")
    row = {**tiny_vqa_rows(1)[0], "question": "<image> what is in this image ?"}
    assert (VLMUnlearningCollator(processor)([row])["labels"] != -100).any()
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest(row['id'])}\): its answer contains the "
                                         r"control token '<image>'"):
        VLMUnlearningCollator(processor)([{**row, "answer": "a cat <image>"}])


# -- item 13: caches are checked, not trusted ----------------------------------------------------------------------
def _poke(model, flat_index: int, delta: float = 0.5):
    """Change one entry of the model's largest parameter, away from the few values a sampled hash reads."""
    p = max(model.parameters(), key=lambda t: t.numel())
    with torch.no_grad():
        p.view(-1)[flat_index] += delta


def test_fingerprint_changes_with_any_single_weight():
    from unlearn_trainer.data.pubg import PUBGGuidanceCache
    from unlearn_trainer.saliency import model_fingerprint
    from unlearn_trainer.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor("llava")
    before = model_fingerprint(model)
    pubg_before = PUBGGuidanceCache.key(model, processor, [], {})["model"]
    _poke(model, 1)  # neither one of 64 evenly spaced values nor among the first 16 of a tensor
    _poke(model, 20)
    assert model_fingerprint(model) != before
    assert PUBGGuidanceCache.key(model, processor, [], {})["model"] != pubg_before


def _saved_mask(tmp_path):
    from conftest import tiny_model

    from unlearn_trainer import VLMUnlearningCollator
    from unlearn_trainer.saliency import compute_saliency_mask
    from unlearn_trainer.testing import tiny_vqa_rows

    model, processor = tiny_model("llava")
    mask = compute_saliency_mask(model, tiny_vqa_rows(2), tiny_vqa_rows(2, seed=3), VLMUnlearningCollator(processor),
                                 progress=False)
    return model, processor, mask.save(str(tmp_path / "mask.safetensors"))


def test_saliency_mask_of_other_weights_is_refused_with_its_path(tmp_path):
    from conftest import train_args

    from unlearn_trainer import GAConfig, GATrainer
    from unlearn_trainer.testing import tiny_vqa_rows

    model, processor, path = _saved_mask(tmp_path)
    kw = dict(forget_dataset=tiny_vqa_rows(2), processing_class=processor)
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, saliency_mask=path), **kw)  # its own model
    assert trainer._saliency_mask.num_selected > 0
    _poke(model, 1, delta=1e-3)  # one weight of another checkpoint of the same architecture
    with pytest.raises(ValueError, match=rf"{path}.*other weights.*delete it and recompute"):
        GATrainer(model=model, args=train_args(GAConfig, tmp_path, saliency_mask=path), **kw)


def test_corrupt_user_mask_is_an_error_naming_the_file(tmp_path):
    from conftest import train_args

    from unlearn_trainer import GAConfig, GATrainer
    from unlearn_trainer.testing import tiny_vqa_rows

    model, processor, path = _saved_mask(tmp_path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match=rf"{path}.*cannot be read.*recompute"):
        GATrainer(model=model, args=train_args(GAConfig, tmp_path, saliency_mask=path),
                  forget_dataset=tiny_vqa_rows(2), processing_class=processor)


def test_corrupt_fisher_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    from conftest import tiny_model

    from unlearn_trainer import VLMUnlearningCollator
    from unlearn_trainer.saliency import compute_saliency_mask
    from unlearn_trainer.testing import tiny_vqa_rows

    model, processor = tiny_model("llava")
    args = (model, tiny_vqa_rows(2), tiny_vqa_rows(2, seed=3), VLMUnlearningCollator(processor))
    first = compute_saliency_mask(*args, cache_dir=str(tmp_path), progress=False)
    files = sorted(tmp_path.glob("fisher-*.safetensors"))
    assert len(files) == 2
    files[0].write_bytes(files[0].read_bytes()[:100])
    files[1].write_bytes(b"\x00garbage")
    with caplog.at_level("WARNING", logger="unlearn_trainer.saliency"):
        again = compute_saliency_mask(*args, cache_dir=str(tmp_path), progress=False)
    assert all(str(f) in caplog.text for f in files)
    assert all(torch.equal(first.masks[k], again.masks[k]) for k in first.masks)
    compute_saliency_mask(*args, cache_dir=str(tmp_path), progress=False)  # the rebuilt files load
    assert len(caplog.records) == 2


class _FakeGenerate:
    """Stands for model.generate: answers ``texts[k]`` on its k-th call (the last one from then on)."""

    def __init__(self, model, tokenizer, texts):
        self.tokenizer, self.texts, self.batches = tokenizer, texts, []
        model.generate = self

    def __call__(self, input_ids, **kwargs):
        text = self.texts[min(len(self.batches), len(self.texts) - 1)]
        self.batches.append(input_ids.shape[0])
        new = torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return torch.cat([input_ids, new.expand(input_ids.shape[0], -1)], 1)


def _pubg_rows():
    from unlearn_trainer.testing import tiny_vqa_rows

    rows = tiny_vqa_rows(2)
    rows[0].update(id="ent-0", concepts=["Cat"])
    rows[1].update(id="ent-1", concepts=["Red Dog"])
    return rows


def test_pubg_o_star_naming_the_concept_is_regenerated_then_dropped_or_refused(caplog):
    from unlearn_trainer.data.pubg import generate_guidance_answers
    from unlearn_trainer.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor("llava")
    fake = _FakeGenerate(model, processor.tokenizer, ["a cat sits on the mat .", "the sky is blue ."])
    out = generate_guidance_answers(model, processor, _pubg_rows(), progress=False)
    # only row 0 names its own concept ("cat"; row 1's is "Red Dog"): it alone is regenerated, once
    assert fake.batches == [2, 1] and [r["answer"] for r in out] == ["the sky is blue .", "a cat sits on the mat ."]

    fake = _FakeGenerate(model, processor.tokenizer, ["a cat sits on the mat ."])  # always names the concept
    with caplog.at_level("WARNING", logger="unlearn_trainer.data.pubg"):
        out = generate_guidance_answers(model, processor, _pubg_rows(), progress=False, concept_retries=3)
    assert fake.batches == [2, 1, 1, 1]  # the row that names its concept only, three more times
    assert out[0] is None and out[1]["answer"] == "a cat sits on the mat ."  # row 1's concept is not "cat"
    assert "#0" in caplog.text and "cat" not in caplog.text.lower()
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('ent-0')}\)") as err:
        generate_guidance_answers(model, processor, _pubg_rows(), progress=False, concept_policy="error")
    assert "cat" not in str(err.value).lower() and "ent-0" not in str(err.value)


def test_pubg_trains_without_the_guidance_pass_of_a_dropped_o_star(tmp_path):
    from conftest import tiny_model, train_args

    from unlearn_trainer.trainers.pubg import PUBGConfig, PUBGTrainer

    model, processor = tiny_model("llava", lora=True)
    given = ["a cat is here .", "the sky is blue ."]
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('ent-0')}\)"):
        PUBGTrainer(model=model, args=train_args(PUBGConfig, tmp_path, guidance_concept_policy="error"),
                    forget_dataset=_pubg_rows(), processing_class=processor, guidance_answers=given)
    trainer = PUBGTrainer(model=model, args=train_args(PUBGConfig, tmp_path, max_steps=2, per_device_train_batch_size=1),
                          forget_dataset=_pubg_rows(), processing_class=processor, guidance_answers=given)
    assert trainer.guidance_answers[0] is None and trainer.guidance_answers[1]["answer"] == given[1]
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert batch["guidance"] is None  # no o* to learn for this row: GA (and retain) only
    trainer.train()
    logged = [h for h in trainer.state.log_history if "ga_loss" in h]
    assert len(logged) == 2 and sum("guidance_loss" in h for h in logged) == 1


def test_pubg_corrupt_cache_is_regenerated_with_a_warning(tmp_path, caplog):
    from unlearn_trainer.data.pubg import generate_guidance_answers
    from unlearn_trainer.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor("llava")
    fake = _FakeGenerate(model, processor.tokenizer, ["the sky is blue ."])
    kw = dict(max_new_tokens=4, cache_dir=tmp_path, progress=False)
    generate_guidance_answers(model, processor, _pubg_rows(), **kw)
    (path,) = tmp_path.glob("*.json")
    path.write_text(path.read_text()[:40])  # truncated
    with caplog.at_level("WARNING", logger="unlearn_trainer.data.pubg"):
        out = generate_guidance_answers(model, processor, _pubg_rows(), **kw)
    assert str(path) in caplog.text and len(fake.batches) == 2 and out[0]["answer"] == "the sky is blue ."
    generate_guidance_answers(model, processor, _pubg_rows(), **kw)  # rewritten: loads again
    assert len(fake.batches) == 2


def test_corrupt_toyworld_model_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch, caplog):
    from unlearn_trainer.toyworld import ToyWorld
    from unlearn_trainer.toyworld.full_model import FullModelSpec, build_full_model, load_full_model

    monkeypatch.setenv("UNLEARN_TRAINER_CACHE", str(tmp_path))
    world = ToyWorld(num_identities=4, family_size=4, train_views=1, heldout_views=1)
    spec = FullModelSpec(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4, num_kv_heads=2,
                         vision_hidden_size=32, vision_layers=1, epochs=1, batch_size=32)
    path = build_full_model(world, spec, progress=False, verify=False)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(ValueError, match=rf"{path}.*cannot be loaded.*Delete"):
        load_full_model(world, spec, build=False)
    with caplog.at_level("WARNING", logger="unlearn_trainer.toyworld.full_model"):
        model, _ = load_full_model(world, spec, progress=False)
    assert str(path) in caplog.text and model.config.text_config.hidden_size == 32
