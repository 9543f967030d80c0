import math

import pytest
import torch
from conftest import train_args
from peft import get_peft_model

from unlearn_trainer import losses
from unlearn_trainer.data import model_inputs
from unlearn_trainer.data.collator import row_id_digest
from unlearn_trainer.data.concepts import ConceptMaskCollator, concept_token_mask, find_concept_spans
from unlearn_trainer.testing import lora_config_for, tiny_images, tiny_model_and_processor
from unlearn_trainer.trainers.fttp import FTTPConfig, FTTPTrainer

NAME = "Vorana Kelmar"
CORPUS = "the person is vorana kelmar . vorana kelmar lives in the city . who is this person ? kelmar"


def _kit(family, lora=False):
    model, processor = tiny_model_and_processor(family, corpus=CORPUS, subword_words=("vorana", "kelmar"))
    if lora:
        model = get_peft_model(model, lora_config_for(model))
    return model, processor


def _rows(n=4, images=True):
    answers = [
        "the person is Vorana Kelmar .",
        "vorana kelmar lives in the city .",
        "this is a photo of VORANA KELMAR . the sky is blue .",
        "the person is vorana   kelmar . vorana kelmar is in the image .",
    ]
    imgs = tiny_images(n) if images else [None] * n
    return [{"id": f"p{i}", "image": imgs[i], "question": "who is this person ?", "answer": answers[i % 4],
             "concepts": [NAME]} for i in range(n)]


def _masked_text(processor, batch, i, mask):
    return processor.tokenizer.decode(batch["input_ids"][i][mask]).replace(" ##", "")


# -- span finding and span -> token mapping ----------------------------------------------------------------------
def test_find_concept_spans_case_aliases_occurrences_whole_words():
    text = "Donald Trump met donald  TRUMP; Trump's plane. Trumpet, Mr. Trump"
    spans = find_concept_spans(text, ["Donald Trump", "Trump"])
    assert [text[s:e] for s, e in spans] == ["Donald Trump", "donald  TRUMP", "Trump", "Trump"]
    assert [text[s:e] for s, e in find_concept_spans(text, ["trump"], whole_words=False)][-2] == "Trump"
    assert len(find_concept_spans(text, ["trump"], whole_words=False)) == 5  # "Trumpet" now counts
    assert find_concept_spans("annual report", ["Ann"]) == []
    with pytest.raises(ValueError, match="non-empty"):
        find_concept_spans(text, [" "])


def test_concept_token_mask_from_offsets_with_merged_leading_spaces():
    # answer "The man is Elon Musk." tokenized byte-level style: offsets of "Ġis", "ĠElon", "ĠMusk" cover the space
    answer = "The man is Elon Musk."
    offsets = [(0, 3), (3, 7), (7, 10), (10, 15), (15, 17), (17, 20), (20, 21), (21, 21)]  # "ĠMu" "sk" split
    spans = find_concept_spans(answer, ["elon musk"])
    assert spans == [(11, 20)]
    assert concept_token_mask(offsets, spans) == [False, False, False, True, True, True, False, False]
    # a token that is only the space before the name is not part of it (SentencePiece "▁" + "Elon")
    assert concept_token_mask([(10, 11), (11, 15)], spans) == [False, True]


def test_collator_with_a_byte_level_bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = ["the person is Vorana Kelmar and vorana kelmar is here", "USER: who is this ? ASSISTANT:"] * 20
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}{{ c['text'] }}"
                         "{% endfor %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT: {% endif %}")
    assert "ĠKelmar" in tok.tokenize("the person is Vorana Kelmar")  # the tokenizer merges the leading space
    row = {"id": "bpe", "question": "who is this ?", "answer": "The person is VORANA kelmar, vorana Kelmar's friend.",
           "concepts": NAME}
    batch = ConceptMaskCollator(tok)([row])
    mask = batch["concept_mask"][0]
    assert (batch["labels"][0][mask] != -100).all()
    tokens = tok.convert_ids_to_tokens(batch["input_ids"][0][mask].tolist())
    assert "ĠKelmar" in tokens and "Ġvorana" in tokens
    assert tok.decode(batch["input_ids"][0][mask]).replace(" ", "").lower() == "voranakelmarvoranakelmar"


# -- collator on the tiny VLMs -------------------------------------------------------------------------------------
def test_concept_mask_multi_token_case_and_every_occurrence(family):
    model, processor = _kit(family)
    rows = _rows(4)
    rows[1]["concepts"] = ["Kelmar", "vorana"]  # aliases
    rows[2]["question"] = "is this vorana kelmar ?"  # a concept in the question is not an answer token
    batch = ConceptMaskCollator(processor)(rows)
    mask = batch["concept_mask"]
    assert mask.dtype == torch.bool and mask.shape == batch["input_ids"].shape
    assert (batch["labels"][mask] != -100).all()  # only answer tokens
    assert processor.tokenizer.tokenize("vorana") == ["vor", "##ana"]  # multi-token name
    assert mask.sum(1).tolist() == [4, 4, 4, 8]
    for i in range(4):
        words = _masked_text(processor, batch, i, mask[i]).split()
        assert set(words) == {"vorana", "kelmar"}
    # the rest of the answer is not masked
    other = (batch["labels"] != -100) & ~mask
    assert _masked_text(processor, batch, 2, other[2]) == "this is a photo of . the sky is blue ."
    assert "concept_mask" not in model_inputs(batch)
    model(**model_inputs(batch))


def test_missing_concept_raises_naming_the_row_or_trains_with_gd(family):
    model, processor = _kit(family)
    rows = _rows(2)
    rows[1] = rows[1] | {"id": "no-name", "answer": "the sky is blue ."}
    with pytest.raises(ValueError, match=rf"row #1 \(id digest {row_id_digest('no-name')}\).*contains none of its 1 "
                                         r"concept") as err:
        ConceptMaskCollator(processor)(rows)
    # the message names the row, never forget-set text (answer or concept) nor its id
    assert "sky" not in str(err.value) and all(c not in str(err.value) for c in rows[1]["concepts"])
    assert "no-name" not in str(err.value)
    batch = ConceptMaskCollator(processor, missing_concept="gd")(rows)
    assert batch["concept_mask"][1].sum() == 0 and batch["concept_mask"][0].sum() == 4
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('p0')}\) has no 'concepts' field"):
        ConceptMaskCollator(processor)([{k: v for k, v in rows[0].items() if k != "concepts"}])
    alias_key = [rows[0] | {"names": "kelmar"}]
    assert ConceptMaskCollator(processor, concept_key="names")(alias_key)["concept_mask"].sum() == 2
    with pytest.raises(ValueError, match="missing_concept"):
        ConceptMaskCollator(processor, missing_concept="skip")


# -- the loss ----------------------------------------------------------------------------------------------------
def _toy_logits():
    # vocab of 3; at each scored position the softmax is one of these exactly
    p = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1]])
    logits = p.log().unsqueeze(0).clone()  # [1, 4, 3]: positions 0..2 score labels 1..3
    labels = torch.tensor([[-100, 0, 1, 2]])  # p(y) = 0.5, 0.6, 0.6
    concept = torch.tensor([[False, False, True, True]])
    return logits, labels, concept


def test_fttp_loss_hand_computed_and_gradient():
    logits, labels, concept = _toy_logits()
    logits.requires_grad_(True)
    loss, ga, gd = losses.fttp_loss(logits, labels, concept, ga_weight=0.8, gd_weight=0.5)
    expected_ga = math.log(0.6) + math.log(0.6)
    expected_gd = -math.log(0.5)
    assert ga.item() == pytest.approx(expected_ga, abs=1e-6)
    assert gd.item() == pytest.approx(expected_gd, abs=1e-6)
    assert loss.item() == pytest.approx(0.8 * expected_ga + 0.5 * expected_gd, abs=1e-6)
    loss.backward()
    p = torch.softmax(logits.detach(), -1)[0]
    onehot = torch.nn.functional.one_hot(torch.tensor([0, 1, 2]), 3).float()
    # d(w log p_y)/dz = w (onehot - p) on concept tokens; d(-w log p_y)/dz = w (p - onehot) on the others
    expected = torch.stack([0.5 * (p[0] - onehot[0]), 0.8 * (onehot[1] - p[1]), 0.8 * (onehot[2] - p[2])])
    torch.testing.assert_close(logits.grad[0, :3], expected)
    assert logits.grad[0, 3].abs().sum() == 0

    mean_loss, mean_ga, _ = losses.fttp_loss(logits.detach(), labels, concept, reduction="mean")
    assert mean_ga.item() == pytest.approx(math.log(0.6), abs=1e-6)
    assert mean_loss.item() == pytest.approx(0.8 * math.log(0.6) - 0.5 * math.log(0.5), abs=1e-6)
    # the ceiling stops the GA gradient of tokens already past it, keeps their value
    z = logits.detach().clone().requires_grad_(True)
    capped, capped_ga, _ = losses.fttp_loss(z, labels, concept, ceiling=0.6)  # -log 0.6 = 0.51 < 0.6: still pushed
    capped.backward()
    assert z.grad[0, 1].abs().sum() > 0
    z.grad = None
    capped, capped_ga, _ = losses.fttp_loss(z, labels, concept, ceiling=0.5)
    capped.backward()
    assert z.grad[0, 1:3].abs().sum() == 0 and capped_ga.item() == pytest.approx(expected_ga, abs=1e-6)


def test_knowledge_scores_hand_computed():
    logits, labels, concept = _toy_logits()
    logps, _ = losses.token_logprobs(logits, labels)
    c, o = losses.fttp_token_masks(labels, concept)
    assert losses.knowledge_score(logps, c).item() == pytest.approx(-2 / math.log(0.6), rel=1e-5)
    assert losses.knowledge_score(logps, o).item() == pytest.approx(-1 / math.log(0.5), rel=1e-5)
    assert torch.isfinite(losses.knowledge_score(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool))).all()
    with pytest.raises(ValueError, match="disagree"):
        losses.fttp_token_masks(labels, concept[:, :3])


# -- the trainer end to end ----------------------------------------------------------------------------------------
def _token_logps(model, processor, rows):
    batch = ConceptMaskCollator(processor)(rows)
    with torch.no_grad():
        logps, _ = losses.token_logprobs(model(**model_inputs(batch)).logits, batch["labels"])
    concept, other = losses.fttp_token_masks(batch["labels"], batch["concept_mask"])
    k_c = losses.knowledge_score(logps, concept).mean().item()
    return logps[concept].mean().item(), logps[other].mean().item(), k_c


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_fttp_forgets_concept_tokens_not_the_rest(family, lora, tmp_path):
    model, processor = _kit(family, lora)
    rows = _rows(4)
    c0, o0, k0 = _token_logps(model, processor, rows)
    args = train_args(FTTPConfig, tmp_path, max_steps=8, learning_rate=2e-2 if lora else 5e-3)
    trainer = FTTPTrainer(model=model, args=args, forget_dataset=rows, processing_class=processor)
    trainer.train()
    c1, o1, k1 = _token_logps(model, processor, rows)
    assert c1 < c0 - 0.3, (c0, c1)
    assert o1 - o0 > (c1 - c0) / 4, (o0, o1, c0, c1)  # the rest drops far less than the concept, or rises
    assert k1 < k0  # the paper's Conceptual Knowledge K_C falls
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all({"concept_logp", "other_nll", "K_C", "K_N"} <= set(h) for h in logged)


def test_fttp_with_retain_set_and_plain_eval_rows(tmp_path):
    model, processor = _kit("llava", lora=True)
    retain = [{"id": "r", "image": tiny_images(1, seed=4)[0], "question": "what is in this image ?",
               "answer": "the dog is red ."}]  # no concept field: retain rows go through a plain collator
    trainer = FTTPTrainer(model=model, args=train_args(FTTPConfig, tmp_path, max_steps=2), forget_dataset=_rows(2),
                          retain_dataset=retain, processing_class=processor)
    assert trainer.args.ga_weight == 0.8 and trainer.args.gd_weight == 0.5 and trainer.args.token_reduction == "sum"
    trainer.train()
    assert all("retain_nll" in h for h in trainer.state.log_history if "loss" in h)
    assert trainer.evaluate(eval_dataset=retain)["eval_loss"] > 0
    with pytest.raises(ValueError, match="token_reduction"):
        train_args(FTTPConfig, tmp_path, token_reduction="max")
