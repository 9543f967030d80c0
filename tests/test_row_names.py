"""Errors name a row by its position and an opaque digest of its id, never by the id itself: concept-folder ids are
``<PersonName>/<n>/<file>`` and would put a forget-set name into error messages and logs."""

import pytest

from unlearn_trainer.data import VLMUnlearningCollator
from unlearn_trainer.data.collator import row_id_digest, row_name
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows

CONCEPT_ID = "Jane Doe/1/a.png"  # the id load_concept_folder gives a row of the concept folder "Jane Doe"


def _assert_names_row_without_its_id(message: str, index: int):
    assert f"row #{index} (id digest {row_id_digest(CONCEPT_ID)})" in message
    assert "Jane" not in message and "Doe" not in message and "a.png" not in message


def test_row_name_gives_position_and_digest_never_the_id():
    digest = row_id_digest(CONCEPT_ID)
    assert len(digest) == 8 and int(digest, 16) >= 0 and digest == row_id_digest(CONCEPT_ID)
    assert digest != row_id_digest("Jane Doe/2/a.png")
    assert row_name({"id": CONCEPT_ID}, 3) == f"row #3 (id digest {digest})"
    assert row_name({"id": CONCEPT_ID}) == f"row with id digest {digest}"
    assert row_name({"question": "q"}, 3) == "row #3" and row_name({"id": ""}) == "row"


def test_collator_errors_on_a_concept_folder_row_never_show_its_id():
    _, processor = tiny_model_and_processor("llava")
    ok, row = tiny_vqa_rows(2)
    row = {**row, "id": CONCEPT_ID}

    with pytest.raises(ValueError, match="has an empty answer") as err:  # the bad row is second in the batch
        VLMUnlearningCollator(processor)([ok, {**row, "answer": "  "}])
    _assert_names_row_without_its_id(str(err.value), 1)

    short = VLMUnlearningCollator(processor)([ok])["input_ids"].shape[1]
    long_row = {**row, "answer": " ".join([row["answer"]] * 20)}
    with pytest.raises(ValueError, match=f"max_length={short + 2}") as err:  # over-long: an error, not a truncation
        VLMUnlearningCollator(processor, max_length=short + 2)([ok, long_row])
    _assert_names_row_without_its_id(str(err.value), 1)
    assert "row-0" not in str(err.value) and "#0" not in str(err.value)  # only the long row is named


def test_malformed_concepts_and_guidance_answers_are_not_quoted():
    from unlearn_trainer.data.concepts import find_concept_spans
    from unlearn_trainer.data.pubg import build_guidance_rows

    with pytest.raises(ValueError, match="non-empty strings, got a dict") as err:  # a concept given as a record
        find_concept_spans("Jane Doe smiles .", [{"name": "Jane Doe"}])
    assert "Jane" not in str(err.value)
    forget = [{**tiny_vqa_rows(1)[0], "id": CONCEPT_ID}]
    with pytest.raises(ValueError, match=r"o\* is empty or not a string \(list\)") as err:  # o* given as a list
        build_guidance_rows(forget, [["Jane Doe is a singer ."]])
    _assert_names_row_without_its_id(str(err.value), 0)
