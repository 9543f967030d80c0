"""Hand-made cases for unlearn_trainer.evaluation.metrics (pure text metrics, no model)."""

from __future__ import annotations

import math

import pytest

from unlearn_trainer.evaluation import metrics as m

# ----------------------------------------------------------------------------------------------------------------
# normalize / contains_phrase
# ----------------------------------------------------------------------------------------------------------------


def test_normalize_lowercases_and_collapses_whitespace_but_keeps_punctuation():
    assert m.normalize("  Vorana \t KELL\n is  here. ") == "vorana kell is here."
    assert m.normalize("") == ""


@pytest.mark.parametrize(
    "text",
    [
        "vorana kell.",
        "vorana  kell ,",
        "Her name is VORANA KELL!",
        "(Vorana\nKell)",
        "I met vorana, kell yesterday",
    ],
)
def test_contains_phrase_matches_despite_case_whitespace_punctuation(text):
    assert m.contains_phrase(text, "vorana kell")


@pytest.mark.parametrize(
    "text",
    [
        "xvorana kell",
        "vorana kellx",
        "kell vorana",
        "vorana the kell",
        "vorana",
        "",
    ],
)
def test_contains_phrase_rejects_partial_words_and_wrong_order(text):
    assert not m.contains_phrase(text, "vorana kell")


def test_contains_phrase_phrase_punctuation_and_unicode():
    assert m.contains_phrase("born in new york city", "New-York")
    assert m.contains_phrase("Zoë lives here", "zoë")
    assert not m.contains_phrase("Zoëy lives here", "zoë")
    assert m.contains_phrase("code 42", "42")
    assert not m.contains_phrase("code 421", "42")
    # underscore is documented as a separator
    assert m.contains_phrase("vorana_kell", "vorana kell")


def test_contains_phrase_rejects_phrase_without_words():
    with pytest.raises(ValueError, match="no letter or digit"):
        m.contains_phrase("anything", " ,. ")


# ----------------------------------------------------------------------------------------------------------------
# name_recall / attribute_accuracy / privacy_leak
# ----------------------------------------------------------------------------------------------------------------


def test_name_recall_with_strings_and_aliases():
    predictions = [
        "This is Vorana Kell.",
        "That looks like Dr. Kell to me",
        "I do not know who this is.",
        "It is xvorana.",
    ]
    names = ["vorana kell", ["Vorana Kell", "Dr Kell"], "Tomas Reed", ("vorana", "v. kell")]
    assert m.name_recall(predictions, names) == pytest.approx(2 / 4)


def test_name_recall_errors():
    with pytest.raises(ValueError, match="empty"):
        m.name_recall([], [])
    with pytest.raises(ValueError, match="same length"):
        m.name_recall(["a b"], ["a", "b"])
    with pytest.raises(ValueError, match="empty list"):
        m.name_recall(["vorana"], [[]])
    with pytest.raises(TypeError, match="single string"):
        m.name_recall("vorana kell", ["vorana kell"] * 11)
    with pytest.raises(TypeError, match="must be a string"):
        m.name_recall([None], ["vorana"])


def test_attribute_accuracy():
    predictions = ["She works as a Marine Biologist.", "He lives in Paris", "biologist"]
    expected = ["marine biologist", "Lyon", "marine biologist"]
    assert m.attribute_accuracy(predictions, expected) == pytest.approx(1 / 3)
    # aliases are accepted too
    assert m.attribute_accuracy(["He lives in Lutetia"], [["Paris", "Lutetia"]]) == 1.0
    with pytest.raises(ValueError):
        m.attribute_accuracy([], [])


def test_privacy_leak_counts_rows_mentioning_any_private_value():
    predictions = [
        "Vorana Kell, born 1984, lives in Osterby.",  # name and city
        "The person lives in Osterby.",  # city only
        "A person standing in a park.",  # nothing
        "I cannot share that.",  # nothing
    ]
    private = [["Vorana Kell", "Osterby"], ["Vorana Kell", "Osterby"], ["Tomas Reed", "1971"], ["Tomas Reed"]]
    assert m.privacy_leak(predictions, private) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="empty"):
        m.privacy_leak([], [])
    with pytest.raises(ValueError, match="same length"):
        m.privacy_leak(["x"], [])


# ----------------------------------------------------------------------------------------------------------------
# ROUGE-L
# ----------------------------------------------------------------------------------------------------------------


def test_rouge_l_hand_computed_lcs():
    # prediction tokens: the cat on mat                  (4)
    # reference tokens:  the black cat sat on the mat    (7)
    # LCS = "the cat on mat" = 4 -> P = 4/4 = 1, R = 4/7, F = 2 * 1 * 4/7 / (1 + 4/7) = 8/11.
    # Case and punctuation are removed by rouge_score's tokenizer.
    scores = m.rouge_l(["The CAT, on mat!"], ["the black cat sat on the mat"])
    assert scores["rougeL_p"] == pytest.approx(1.0)
    assert scores["rougeL_r"] == pytest.approx(4 / 7)
    assert scores["rougeL_f"] == pytest.approx(8 / 11)
    assert set(scores) == {"rougeL_f", "rougeL_p", "rougeL_r"}


def test_rouge_l_is_a_mean_over_rows():
    # row 1 as above (F = 8/11, P = 1, R = 4/7); row 2 has no common token (all 0).
    predictions = ["the cat on mat", "dog"]
    references = ["the black cat sat on the mat", "cat"]
    assert m.rouge_l_f(predictions, references) == pytest.approx(4 / 11)
    scores = m.rouge_l(predictions, references)
    assert scores["rougeL_p"] == pytest.approx(0.5)
    assert scores["rougeL_r"] == pytest.approx(2 / 7)


def test_rouge_l_empty_rows_score_zero_and_empty_input_raises():
    assert m.rouge_l_f([""], [""]) == 0.0
    assert m.rouge_l_f(["same words"], ["Same words."]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        m.rouge_l_f([], [])
    with pytest.raises(ValueError, match="same length"):
        m.rouge_l(["a"], ["a", "b"])


# ----------------------------------------------------------------------------------------------------------------
# BLEU
# ----------------------------------------------------------------------------------------------------------------

PRED = "the cat sat on the mat"
REF = "the cat is on the mat"
# Unigrams of PRED: the x2, cat, sat, on, mat (6); clipped against REF: the 2, cat 1, sat 0, on 1, mat 1 -> 5/6.
# Bigrams of PRED: "the cat", "cat sat", "sat on", "on the", "the mat" (5); in REF: "the cat", "on the",
# "the mat" -> 3/5. Lengths c = r = 6 -> BP = 1.


def test_bleu_hand_computed_unsmoothed():
    # BLEU-2 = sqrt(5/6 * 3/5) = sqrt(1/2)
    assert m.bleu([PRED], [REF], max_order=2, smooth=False) == pytest.approx(math.sqrt(0.5))
    # BLEU-1 = 5/6
    assert m.bleu([PRED], [REF], max_order=1, smooth=False) == pytest.approx(5 / 6)


def test_bleu_hand_computed_smoothed_only_for_orders_above_one():
    # p1 = 5/6 (not smoothed), p2 = (3 + 1) / (5 + 1) = 2/3 -> sqrt(5/6 * 2/3) = sqrt(5/9)
    assert m.bleu([PRED], [REF], max_order=2, smooth=True) == pytest.approx(math.sqrt(5 / 9))
    # max_order=1: smoothing never touches p1
    assert m.bleu([PRED], [REF], max_order=1, smooth=True) == pytest.approx(5 / 6)


def test_bleu_brevity_penalty():
    # c = 2, r = 6; p1 = 2/2, p2 = 1/1 -> BLEU = exp(1 - 6/2) = exp(-2)
    assert m.bleu(["the cat"], ["the cat sat on the mat"], max_order=2, smooth=False) == pytest.approx(math.exp(-2))
    # A longer prediction is not penalised by BP: c = 4 > r = 2, p1 = 2/4
    assert m.bleu(["the cat a b"], ["the cat"], max_order=1, smooth=False) == pytest.approx(0.5)


def test_bleu_clips_repeated_ngrams():
    # "the" x4 but only once in the reference -> p1 = 1/4; c = 4 > r = 2 -> BP = 1
    assert m.bleu(["the the the the"], ["the cat"], max_order=1) == pytest.approx(0.25)


def test_bleu_pools_counts_over_the_corpus():
    # Row 1: 4/4 unigram matches; row 2: 1/2. Pooled p1 = 5/6 (a sentence average would be 0.75).
    assert m.bleu(["a b c d", "x y"], ["a b c d", "x z"], max_order=1) == pytest.approx(5 / 6)
    # Pooled lengths: c = 3 + 1 = 4, r = 2 + 2 = 4 -> BP = 1, though row 2 alone is short. Matches: 2 + 1 of 4.
    assert m.bleu(["a b c", "d"], ["a b", "d e"], max_order=1) == pytest.approx(3 / 4)


def test_bleu_perfect_match_normalisation_and_zero_cases():
    text = "Vorana Kell is a marine biologist from Osterby ."
    assert m.bleu([text, "one two three four five"], [text, "one two three four five"]) == pytest.approx(1.0)
    # case and whitespace are normalised ...
    assert m.bleu(["The  CAT sat on the mat"], ["the cat sat on the mat"], smooth=False) == pytest.approx(1.0)
    # ... but punctuation stays attached to whitespace tokens
    assert m.bleu(["kell."], ["kell"], max_order=1) == 0.0
    # no match at all, or empty predictions -> 0
    assert m.bleu(["a b c d e"], ["v w x y z"]) == 0.0
    assert m.bleu([""], ["the cat"]) == 0.0
    # unsmoothed: no 4-gram can match in a 3-token corpus -> 0; smoothed it is well defined
    assert m.bleu(["a b c"], ["a b c"], smooth=False) == 0.0
    assert m.bleu(["a b c"], ["a b c"], smooth=True) == pytest.approx(1.0)


def test_bleu_errors():
    with pytest.raises(ValueError, match="empty"):
        m.bleu([], [])
    with pytest.raises(ValueError, match="same length"):
        m.bleu(["a"], [])
    with pytest.raises(ValueError, match="max_order"):
        m.bleu(["a"], ["a"], max_order=0)


# ----------------------------------------------------------------------------------------------------------------
# diversity
# ----------------------------------------------------------------------------------------------------------------


def test_diversity_counts_distinct_normalised_words():
    # words: the cat the CAT -> the cat the cat | a dog. -> 6 words; distinct: the, cat, a, dog. -> 4
    out = m.diversity(["the cat  the CAT", "a dog."])
    assert out == {"unique_words": 4, "unique_word_ratio": pytest.approx(4 / 6)}


def test_diversity_no_words_and_empty_input():
    assert m.diversity(["", "   "]) == {"unique_words": 0, "unique_word_ratio": 0.0}
    assert m.diversity(["the the the the"])["unique_word_ratio"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="empty"):
        m.diversity([])


# ----------------------------------------------------------------------------------------------------------------
# multiple choice
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a)", "a"),
        ("b.", "b"),
        ("c", "c"),
        ("C", "c"),
        ("(d) foo", "d"),
        ("  [B] because ...", "b"),
        ('"a"', "a"),
        ("\u201cC\u201d is right", "c"),
        ("Answer: B", "b"),
        ("answer:(c)", "c"),
        ("Option D", "d"),
        ("option: (a) the cat", "a"),
        ("The answer is B", None),
        ("apple", None),
        ("Bob", None),
        ("e) none", None),
        ("", None),
        ("   ", None),
        ("()", None),
        ("answer", None),
        ("optionally a", None),
    ],
)
def test_first_letter_choice(text, expected):
    assert m.first_letter_choice(text) == expected


def test_first_letter_choice_custom_letters():
    assert m.first_letter_choice("E: none of these", letters="ABCDE") == "e"
    assert m.first_letter_choice("d", letters="abc") is None
    with pytest.raises(ValueError):
        m.first_letter_choice("a", letters="")


def test_mc_accuracy_by_letter_counts_unparseable_as_wrong():
    predictions = ["(a) cat", "B. dog", "apple", "I think d", "c"]
    gold = ["a", "B", "a", "d", "d"]
    # hits: row 0 (a), row 1 (b); row 2 unparseable; row 3 starts with "i"; row 4 wrong letter -> 2/5
    assert m.mc_accuracy_by_letter(predictions, gold) == pytest.approx(2 / 5)


def test_mc_accuracy_by_letter_errors():
    with pytest.raises(ValueError, match="empty"):
        m.mc_accuracy_by_letter([], [])
    with pytest.raises(ValueError, match="not one of"):
        m.mc_accuracy_by_letter(["a"], ["e"])
    with pytest.raises(ValueError, match="same length"):
        m.mc_accuracy_by_letter(["a", "b"], ["a"])


def test_mc_accuracy_by_loglik_argmax_and_ties_go_to_lowest_index():
    option_scores = [
        [-3.0, -1.0, -2.0, -5.0],  # argmax 1
        [-2.0, -2.0, -9.0],  # tie 0/1 -> 0
        [-1.0, -4.0, -1.0, -1.0],  # tie 0/2/3 -> 0
        [float("-inf"), -7.0],  # argmax 1
    ]
    assert m.mc_accuracy_by_loglik(option_scores, [1, 0, 2, 1]) == pytest.approx(3 / 4)
    assert m.mc_accuracy_by_loglik(option_scores, [1, 1, 0, 0]) == pytest.approx(2 / 4)


def test_mc_accuracy_by_loglik_errors():
    with pytest.raises(ValueError, match="empty"):
        m.mc_accuracy_by_loglik([], [])
    with pytest.raises(ValueError, match="empty"):
        m.mc_accuracy_by_loglik([[]], [0])
    with pytest.raises(ValueError, match="out of range"):
        m.mc_accuracy_by_loglik([[0.0, 1.0]], [2])
    with pytest.raises(ValueError, match="NaN"):
        m.mc_accuracy_by_loglik([[0.0, float("nan")]], [0])


# ----------------------------------------------------------------------------------------------------------------
# coherence / summarize
# ----------------------------------------------------------------------------------------------------------------


def test_coherence():
    def ends_with_period(text: str) -> bool:
        return text.strip().endswith(".")

    assert m.coherence(["A cat.", "a a a a", "Fine. ", ""], ends_with_period) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="empty"):
        m.coherence([], ends_with_period)
    with pytest.raises(TypeError):
        m.coherence(["x"], None)


def test_summarize_uses_population_std():
    # mean 2; squared deviations 1, 0, 1 -> population variance 2/3 (sample variance would be 1)
    out = m.summarize([1.0, 2.0, 3.0])
    assert out == {"mean": pytest.approx(2.0), "std": pytest.approx(math.sqrt(2 / 3))}
    assert m.summarize([0.25]) == {"mean": 0.25, "std": 0.0}


def test_summarize_errors():
    with pytest.raises(ValueError, match="empty"):
        m.summarize([])
    with pytest.raises(ValueError, match="finite"):
        m.summarize([1.0, float("nan")])


def test_bleu_is_sacrebleus_corpus_bleu_on_normalised_text():
    """``bleu`` is sacrebleu's corpus BLEU (add-one smoothing above unigrams, no retokenisation) / 100."""
    import sacrebleu

    preds = ["The cat sat on the mat.", "a dog ran", "Kell lives in Oslo", ""]
    refs = ["the cat sat on a mat", "the dog ran away", "kell lives in oslo .", "nothing"]
    expected = sacrebleu.corpus_bleu([m.normalize(p) for p in preds], [[m.normalize(r) for r in refs]],
                                     tokenize="none", smooth_method="add-k", smooth_value=1, force=True).score
    assert 0 < expected < 100
    assert m.bleu(preds, refs) == pytest.approx(expected / 100)
