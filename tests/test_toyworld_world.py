"""Tests for the ToyWorld generator (unlearn_trainer.toyworld.world)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from unlearn_trainer.toyworld import REFUSALS, Identity, ToyWorld, to_dataset
from unlearn_trainer.toyworld import world as world_module
from unlearn_trainer.toyworld.world import (
    CITIES,
    HOBBIES,
    IMAGE_SHIFTS,
    MARKS,
    PALETTE,
    PARAPHRASE_ANSWERS,
    PARAPHRASE_KINDS,
    PARAPHRASE_QUESTIONS,
    PROFESSIONS,
    SHAPES,
    STRIPES,
)

FACT_KINDS = {"name", "profession", "city", "open"}
ROW_KEYS = {
    "id", "identity", "identity_id", "name", "concepts", "kind", "image", "question", "answer", "view", "heldout",
    "family", "attributes", "options", "answer_letter", "perturbed_answers", "paraphrased_answer", "paraphrase", "shift",
}  # fmt: skip


@pytest.fixture(scope="module")
def world():
    return ToyWorld(num_identities=12, family_size=4, seed=0)


@pytest.fixture(scope="module")
def rows(world):
    return world.train_rows()


@pytest.fixture(scope="module")
def splits(world):
    return world.splits(0.15)


# Source of ``_digest`` kept as text so the cross-process test can run it in a fresh interpreter that loads only
# world.py (importing the whole package would pull in torch and take seconds).
_DIGEST_SRC = """
import hashlib, json

def _digest(world):
    h = hashlib.sha256()
    all_rows = world.train_rows() + [r for rs in world.splits(0.15).values() for r in rs]
    for row in all_rows:
        text = {k: v for k, v in row.items() if k != "image"}
        h.update(json.dumps(text, sort_keys=True).encode())
        h.update(b"" if row["image"] is None else row["image"].tobytes())
    return h.hexdigest()
"""
_ns: dict = {}
exec(_DIGEST_SRC, _ns)
_digest = _ns["_digest"]  # hash of every train / split row (text fields and image bytes)


def _arr(img):
    return np.asarray(img, dtype=np.float64)


# ------------------------------------------------------------------------------------------------ determinism


def test_same_seed_is_identical_and_other_seed_differs(world):
    again = ToyWorld(num_identities=12, family_size=4, seed=0)
    assert _digest(world) == _digest(again)
    assert [r["id"] for r in world.train_rows()] == [r["id"] for r in again.train_rows()]
    assert world.render(world.identities[3], 2).tobytes() == again.render(again.identities[3], 2).tobytes()
    assert world.fingerprint() == again.fingerprint()

    other = ToyWorld(num_identities=12, family_size=4, seed=1)
    assert _digest(other) != _digest(world)
    assert [i.name for i in other.identities] != [i.name for i in world.identities]
    assert other.render(0, 0).tobytes() != world.render(0, 0).tobytes()


def test_identical_across_processes(world):
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('toyworld_world', {world_module.__file__!r})\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['toyworld_world'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        + _DIGEST_SRC
        + "\nprint(_digest(mod.ToyWorld(num_identities=12, family_size=4, seed=0)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(world)


def test_fingerprint_tracks_parameters(world):
    fp = world.fingerprint()
    assert isinstance(fp, str) and 8 <= len(fp) <= 16
    assert ToyWorld(num_identities=12, family_size=4, seed=0, heldout_views=3).fingerprint() != fp
    assert ToyWorld(num_identities=12, family_size=4, seed=2).fingerprint() != fp


# ------------------------------------------------------------------------------------------------ identities


def test_names_are_invented_distinct_two_word_names(world):
    names = [i.name for i in world.identities]
    assert len(set(names)) == len(names) == 12 + world.num_unseen
    words = world.name_words()
    assert len(words) == 2 * len(names) and len(set(words)) == len(words)
    other_vocab = {w for text in world.corpus() for w in text.split()} - set(words)
    other_vocab |= set(HOBBIES)
    for ident in world.identities:
        assert isinstance(ident, Identity)
        assert ident.name == f"{ident.first} {ident.last}" and len(ident.name.split()) == 2
        for w in (ident.first, ident.last):
            assert 5 <= len(w) <= 8 and w.isalpha() and w.islower()
            assert w not in other_vocab
        assert ident.id == f"id{ident.index:02d}"
        assert set(ident.attributes) == {"profession", "city", "hobby"}
        assert ident.attributes["profession"] in PROFESSIONS and ident.attributes["city"] in CITIES


def test_families_share_look_and_families_are_distinct(world):
    fam_looks = {}
    for ident in world.identities:
        assert ident.family == ident.index // 4
        key = (ident.look["background"], ident.look["shape"], ident.look["colour"])
        fam_looks.setdefault(ident.family, set()).add(key)
    assert all(len(v) == 1 for v in fam_looks.values())
    assert len({next(iter(v)) for v in fam_looks.values()}) == len(fam_looks)  # no two families look alike
    for fam in fam_looks:
        details = [(i.look["stripes"], i.look["mark"]) for i in world.identities if i.family == fam]
        assert len(set(details)) == len(details)  # members are distinguishable


# ------------------------------------------------------------------------------------------------ rows


def test_train_rows_content(world, rows):
    n = world.num_identities
    assert len(rows) == n * (5 * world.train_views + 1 + 2)
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == ROW_KEYS
        ident = world.identities[r["identity"]]
        assert r["name"] == ident.name and r["identity_id"] == ident.id and r["family"] == ident.family
        assert r["concepts"] == [ident.name, ident.last]
        assert r["attributes"] == ident.attributes
        assert r["question"] == " ".join(r["question"].split()) and r["question"] == r["question"].lower()
        if r["kind"].startswith("text_"):
            assert r["image"] is None and r["view"] == -1 and ident.name in r["question"]
        else:
            assert isinstance(r["image"], Image.Image) and r["image"].size == (32, 32) and r["image"].mode == "RGB"
            assert 0 <= r["view"] < world.train_views and not r["heldout"]
            assert ident.name not in r["question"] or r["kind"] == "mc"
        if r["kind"] == "mc":
            assert r["view"] == 0
        else:
            assert r["options"] == [] and r["answer_letter"] == ""
    kinds = [r["kind"] for r in rows if r["identity"] == 0]
    assert sorted(set(kinds)) == sorted(["name", "profession", "city", "open", "describe", "mc", "text_profession",
                                         "text_city"])  # fmt: skip


def test_answers_follow_templates(world, rows):
    for r in rows:
        ident = world.identities[r["identity"]]
        a = ident.attributes
        expected = {
            "name": f"this is {ident.name} .",
            "profession": f"{ident.name} works as a {a['profession']} .",
            "city": f"{ident.name} lives in {a['city']} .",
            "open": f"this is {ident.name} , a {a['profession']} from {a['city']} .",
            "text_profession": f"{ident.name} works as a {a['profession']} .",
            "text_city": f"{ident.name} lives in {a['city']} .",
        }
        if r["kind"] in expected:
            assert r["answer"] == expected[r["kind"]]


def test_describe_mentions_only_visible_features(world, rows):
    describe = [r for r in rows if r["kind"] == "describe"]
    assert len(describe) == world.num_identities * world.train_views
    forbidden = set(world.name_words()) | set(PROFESSIONS) | set(CITIES) | set(HOBBIES)
    for r in describe:
        words = set(r["answer"].split())
        assert not words & forbidden, r["answer"]
        look = world.identities[r["identity"]].look
        assert f"a {look['colour']} {look['shape']} on a {look['background']} background" in r["answer"]
        assert f"{look['stripes']} stripes" in r["answer"] and look["mark"] in r["answer"]


def test_mc_letter_points_to_true_name(world, rows):
    mc = [r for r in rows if r["kind"] == "mc"]
    assert len(mc) == world.num_identities
    letters = set()
    for r in mc:
        opts = r["options"]
        assert len(opts) == 4 and len(set(opts)) == 4
        assert r["answer"] == r["answer_letter"] and r["answer_letter"] in "abcd"
        assert opts["abcd".index(r["answer_letter"])] == r["name"]
        assert all(f"{letter} ) {o}" in r["question"] for letter, o in zip("abcd", opts))
        family_names = {i.name for i in world.identities if i.family == r["family"]} - {r["name"]}
        assert family_names & set(opts)  # a look-alike is always among the distractors
        letters.add(r["answer_letter"])
    assert len(letters) >= 2  # the position is not constant


# ------------------------------------------------------------------------------------------------ forget sets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forget_sets_nested_and_keep_a_family_member(seed):
    w = ToyWorld(num_identities=40, family_size=4, seed=seed)
    f5, f10, f15 = (w.forget_identities(r) for r in (0.05, 0.10, 0.15))
    assert (len(f5), len(f10), len(f15)) == (2, 4, 6)
    assert set(f5) < set(f10) < set(f15)
    assert w.forget_identities(0.10) == f10  # deterministic
    for forget in (f5, f10, f15, w.forget_identities(0.5)):
        for i in forget:
            fam = w.identities[i].family
            assert any(j.family == fam and j.index not in forget for j in w.identities)
    assert ToyWorld(num_identities=3 * 4, seed=seed).forget_identities(0.01) != []  # at least one
    with pytest.raises(ValueError):
        w.forget_identities(0.9)  # cannot keep a family member for everyone


def test_splits_are_consistent(world, splits):
    forget = set(world.forget_identities(0.15))
    assert len(forget) == 2
    retain = set(range(world.num_identities)) - forget
    expected_keys = {"forget", "forget_train", "generalization", "retain", "retain_train", "proximal", "text_forget",
                     "text_retain", "describe", "mc_forget", "mc_retain", "distant", "unseen", "text_unseen",
                     "paraphrase_forget", "paraphrase_retain"}  # fmt: skip
    expected_keys |= {f"shift_{t}_{part}" for t in IMAGE_SHIFTS for part in ("forget", "retain")}
    assert set(splits) == expected_keys

    def ids(key):
        return {r["identity"] for r in splits[key]}

    for key in ("forget", "forget_train", "generalization", "text_forget", "describe", "mc_forget"):
        assert ids(key) == forget, key
    for key in ("retain", "retain_train", "text_retain", "mc_retain"):
        assert ids(key) == retain, key
    assert [r["id"] for r in splits["forget_train"]] == [r["id"] for r in splits["forget"]]
    assert len(splits["forget"]) == 2 * 4 * world.train_views
    assert {r["kind"] for r in splits["forget"]} == FACT_KINDS and not any(r["heldout"] for r in splits["forget"])
    assert {r["kind"] for r in splits["generalization"]} == FACT_KINDS
    assert all(r["heldout"] for r in splits["generalization"]) and len(splits["generalization"]) == 2 * 4 * 2
    assert {r["view"] for r in splits["retain"]} == {0, 1} and {r["kind"] for r in splits["retain"]} == FACT_KINDS
    assert {r["kind"] for r in splits["retain_train"]} == FACT_KINDS | {"describe"}
    assert {r["view"] for r in splits["retain_train"]} == set(range(world.train_views))
    forget_families = {world.identities[i].family for i in forget}
    proximal = ids("proximal")
    assert proximal and proximal <= retain
    assert proximal == {i for i in retain if world.identities[i].family in forget_families}
    assert {r["kind"] for r in splits["proximal"]} == {"name"}
    assert {(r["heldout"], r["view"]) for r in splits["proximal"]} == {(True, 0), (True, 1), (False, 0)}
    assert {r["kind"] for r in splits["text_forget"]} == {"text_profession", "text_city"}
    assert all(r["image"] is None for r in splits["text_forget"] + splits["text_retain"])
    assert {r["kind"] for r in splits["describe"]} == {"describe"}
    assert all(r["kind"] == "mc" and r["view"] == 0 for r in splits["mc_forget"] + splits["mc_retain"])
    assert len(splits["distant"]) == 16
    for r in splits["distant"]:
        assert r["identity"] == -1 and r["answer"] == "" and r["question"] == "who is this person ?"
        assert isinstance(r["image"], Image.Image) and set(r) == ROW_KEYS
    for key, rs in splits.items():
        assert len({r["id"] for r in rs}) == len(rs), key


# ------------------------------------------------------------------------------------------------ pixels


def test_heldout_views_are_harder_than_training_views(world):
    train_train, train_held = [], []
    for ident in world.identities:
        train = [_arr(world.render(ident, v)) for v in range(world.train_views)]
        held = [_arr(world.render(ident, v, heldout=True)) for v in range(world.heldout_views)]
        train_train += [np.abs(a - b).mean() for k, a in enumerate(train) for b in train[k + 1 :]]
        train_held += [np.abs(a - b).mean() for a in train for b in held]
    assert np.mean(train_held) > 1.3 * np.mean(train_train)
    # views of one identity really differ (jitter is present)
    assert min(train_train) > 0


def test_family_members_are_closer_than_other_families(world):
    imgs = [_arr(world.render(i, 0)) for i in world.identities]
    for ident in world.identities:
        same = [np.abs(imgs[ident.index] - imgs[j.index]).mean() for j in world.identities
                if j.family == ident.family and j.index != ident.index]  # fmt: skip
        other = [np.abs(imgs[ident.index] - imgs[j.index]).mean() for j in world.identities if j.family != ident.family]
        assert np.mean(same) < np.mean(other)
    # held-out views are still recognizable: closer to their own family than to other families on average
    for ident in world.identities:
        held = _arr(world.render(ident, 0, heldout=True))
        same = np.mean([np.abs(held - imgs[j.index]).mean() for j in world.identities if j.family == ident.family])
        other = np.mean([np.abs(held - imgs[j.index]).mean() for j in world.identities if j.family != ident.family])
        assert same < other


def test_corner_mark_is_visible_where_the_look_says(world):
    boxes = {"top left": (2, 2), "top right": (2, 26), "bottom left": (26, 2), "bottom right": (26, 26)}
    for ident in world.identities:
        for view in range(world.train_views):
            img = _arr(world.render(ident, view))
            means = {pos: img[y : y + 4, x : x + 4].mean(axis=(0, 1)) for pos, (y, x) in boxes.items()}
            mark = means.pop(ident.look["mark"])
            assert all(np.abs(mark - other).sum() > 100 for other in means.values()), (ident.id, view)


def test_distant_images_are_unlike_identities(world):
    distant = world.distant_images(8, seed=3)
    assert len(distant) == 8 and all(im.size == (32, 32) and im.mode == "RGB" for im in distant)
    assert [im.tobytes() for im in distant] == [im.tobytes() for im in world.distant_images(8, seed=3)]
    assert distant[0].tobytes() != world.distant_images(1, seed=4)[0].tobytes()
    views = [_arr(world.render(i, v)) for i in world.identities for v in range(world.train_views)]
    same_identity = np.mean([np.abs(_arr(world.render(i, 0)) - _arr(world.render(i, 1))).mean()
                             for i in world.identities])  # fmt: skip
    for im in distant:
        assert min(np.abs(_arr(im) - v).mean() for v in views) > 1.5 * same_identity


def test_render_validates_arguments(world):
    img = world.render(world.identities[0], 0)
    assert world.render(0, 0).tobytes() == img.tobytes()  # index or Identity
    with pytest.raises(ValueError):
        world.render(0, world.train_views)
    with pytest.raises(ValueError):
        world.render(0, world.heldout_views, heldout=True)
    with pytest.raises(IndexError):
        world.render(len(world.identities), 0)


# ------------------------------------------------------------------------------------------------ text


def test_corpus_covers_every_text(world, rows, splits):
    corpus = set(world.corpus())
    for r in rows + [r for rs in splits.values() for r in rs]:
        assert r["question"] in corpus
        assert r["answer"] in corpus or r["answer"] == ""
        assert set(r["options"]) <= corpus
    assert set(REFUSALS) <= corpus


def test_is_well_formed_accepts_every_answer_and_refusal(world, rows, splits):
    answers = {r["answer"] for r in rows} | {r["answer"] for rs in splits.values() for r in rs if r["answer"]}
    assert all(world.is_well_formed(a) for a in answers)
    assert all(world.is_well_formed(a) for a in REFUSALS)
    assert all(world.is_well_formed(letter) for letter in "abcd")
    a, b = world.identities[0], world.identities[5]
    # fluent but wrong facts are still well formed, as are mixed-up names and loose spacing / upper case
    assert world.is_well_formed(f"{a.name} works as a {b.attributes['profession']} .")
    assert world.is_well_formed(f"this is {a.first} {b.last} .")
    assert world.is_well_formed(f"  This is {a.name.upper()}.  ")
    assert world.is_well_formed(
        f"a {list(PALETTE)[0]} {SHAPES[-1]} on a {list(PALETTE)[1]} background with {STRIPES[0]} stripes and a mark "
        f"at the {MARKS[0]} ."
    )


def test_is_well_formed_rejects_garbled_text(world):
    a, b = world.identities[0], world.identities[1]
    prof, city = a.attributes["profession"], a.attributes["city"]
    garbled = [
        "",
        "   ",
        f"{a.last} {a.last} {a.last} {a.last}",
        f"this is {a.name} . . . .",
        f"this is this is {a.name} .",
        f"{city} baker the is works {a.first} ?",
        f"{a.name} works as",
        f"{a.name} works as a",
        f"this is {a.name}",
        f"{city} works as a {prof} .",  # city in the name slot
        f"{a.name} lives in {prof} .",  # profession in the city slot
        f"this is {a.last} {a.first} .",  # name words in the wrong order
        f"this is {a.first} .",  # half a name
        f"this is {a.name} {b.name} .",
        "ab",
        "e",
        f"who is this person ? {a.name}",
        "i do not know . i do not know .",
        None,
    ]
    for text in garbled:
        assert not world.is_well_formed(text), text


# ------------------------------------------------------------------------------------------------ datasets


def test_to_dataset_round_trips_image_and_text_rows(world, rows, splits):
    image_row = next(r for r in rows if r["kind"] == "mc")
    text_row = next(r for r in rows if r["kind"] == "text_city")
    distant_row = splits["distant"][0]
    ds = to_dataset([image_row, text_row, distant_row])
    assert len(ds) == 3 and ds.features["image"].__class__.__name__ == "Image"
    for original, back in zip([image_row, text_row, distant_row], ds):
        for key in ROW_KEYS - {"image", "attributes"}:
            assert back[key] == original[key], key
        assert back["attributes"] == {k: original["attributes"].get(k, "") for k in ("profession", "city", "hobby")}
    assert ds[1]["image"] is None
    assert np.array_equal(np.asarray(ds[0]["image"].convert("RGB")), np.asarray(image_row["image"]))
    assert np.array_equal(np.asarray(ds[2]["image"].convert("RGB")), np.asarray(distant_row["image"]))


# ------------------------------------------------------------------------------------------------ robustness data


def _texts(row):
    return [row["question"], row["answer"], *row["options"]]


def test_unseen_identities_exist_but_are_never_trained(world, rows, splits):
    unseen = world.unseen_identities
    assert unseen == list(range(12, 12 + world.num_unseen)) == [i.index for i in world.identities[12:]]
    unseen_names = {world.identities[i].name for i in unseen}
    unseen_words = {w for i in unseen for w in (world.identities[i].first, world.identities[i].last)}
    # never in a training row, a forget/retain/eval split or a multiple-choice option, not even a part of a name
    trained_splits = [k for k in splits if k not in ("unseen", "text_unseen")]
    for r in rows + [r for k in trained_splits for r in splits[k]]:
        assert r["identity"] not in unseen
        words = {w for text in _texts(r) + r["perturbed_answers"] for w in text.split()}
        assert not words & unseen_words, r["id"]
    # their own families, with looks of their own
    trained_families = {i.family for i in world.identities[:12]}
    assert not {world.identities[i].family for i in unseen} & trained_families
    trained_looks = {(i.look["background"], i.look["shape"], i.look["colour"]) for i in world.identities[:12]}
    assert all((world.identities[i].look["background"], world.identities[i].look["shape"],
                world.identities[i].look["colour"]) not in trained_looks for i in unseen)
    # they exist in the world: names in the vocabulary, pictures, and their own splits
    assert unseen_words <= set(world.name_words())
    corpus_words = {w for text in world.corpus() for w in text.split()}
    assert unseen_words <= corpus_words
    assert {r["identity"] for r in splits["unseen"]} == set(unseen)
    assert {r["kind"] for r in splits["unseen"]} == FACT_KINDS
    assert len(splits["unseen"]) == world.num_unseen * 4 * world.train_views
    assert {r["kind"] for r in splits["text_unseen"]} == {"text_profession", "text_city"}
    assert {r["identity"] for r in splits["text_unseen"]} == set(unseen)
    assert all(world.is_well_formed(r["answer"]) for r in splits["unseen"] + splits["text_unseen"])
    assert unseen_names and ToyWorld(num_identities=12, num_unseen=0).unseen_identities == []


def test_unseen_names_tokenize_like_trained_names(world):
    from unlearn_trainer.testing import build_tokenizer

    tok = build_tokenizer(world.corpus(), world.name_words())
    for ident in (world.identities[0], world.identities[world.unseen_identities[0]]):
        pieces = tok.tokenize(ident.first)
        assert pieces == [ident.first[:3]] + ["##" + ident.first[k:k + 3] for k in range(3, len(ident.first), 3)]
        assert tok.unk_token not in tok.tokenize(ident.name)


@pytest.mark.parametrize("seed", [0, 3])
def test_trained_identities_do_not_depend_on_num_unseen(seed):
    """The never-seen identities are drawn after the trained ones: names, looks, attributes, pictures and the forget
    order of the trained identities are what they were before they existed."""
    base = ToyWorld(num_identities=12, seed=seed, num_unseen=0)
    more = ToyWorld(num_identities=12, seed=seed, num_unseen=6)
    assert len(more.identities) == 18
    assert [(i.name, i.look, i.attributes, i.family) for i in base.identities] == [
        (i.name, i.look, i.attributes, i.family) for i in more.identities[:12]
    ]
    assert base._forget_order == more._forget_order
    assert all(base.render(i, v).tobytes() == more.render(i, v).tobytes() for i in range(12) for v in range(4))
    assert [_texts(r) for r in base.train_rows()] == [_texts(r) for r in more.train_rows()]
    assert base.fingerprint() != more.fingerprint()


def test_paraphrase_templates_are_new_and_in_the_vocabulary(world, rows):
    from unlearn_trainer.testing import build_tokenizer

    assert set(PARAPHRASE_QUESTIONS) == set(PARAPHRASE_KINDS) == set(PARAPHRASE_ANSWERS)
    assert all(len(set(PARAPHRASE_QUESTIONS[k])) >= 3 for k in PARAPHRASE_KINDS)
    trained_questions = {r["question"] for r in rows}
    trained_answers = {r["answer"] for r in rows}
    tok = build_tokenizer(world.corpus(), world.name_words())
    names = set(world.name_words())
    ident = world.identities[0]
    for kind in PARAPHRASE_KINDS:
        texts = [q.format(name=ident.name) for q in PARAPHRASE_QUESTIONS[kind]]
        for text in texts:
            assert text not in trained_questions
        answer = world.paraphrased_answer(ident, kind)
        assert answer not in trained_answers and ident.name in answer
        for text in texts + [answer]:
            for word in text.split():
                if word not in names:  # every other word is one whole-word token, never [UNK]
                    assert tok.tokenize(word) == [word], (kind, word)


def test_paraphrase_splits(world, splits):
    forget = world.forget_identities(0.15)
    retain = [i for i in range(world.num_identities) if i not in forget]
    pf, pr = splits["paraphrase_forget"], splits["paraphrase_retain"]
    assert len(pf) == len(forget) * (4 * world.train_views + 2) * 3
    assert {r["identity"] for r in pf} == set(forget) and {r["identity"] for r in pr} == set(retain)
    assert {r["kind"] for r in pf} == {r["kind"] for r in pr} == set(PARAPHRASE_KINDS)
    assert {r["paraphrase"] for r in pf} == {r["paraphrase"] for r in pr} == {0, 1, 2}
    assert {r["view"] for r in pf if r["image"] is not None} == set(range(world.train_views))
    by_id = {r["id"]: r for r in world.train_rows()}
    for r in pf + pr:
        original = by_id[r["id"].rsplit("/p", 1)[0]]
        assert r["question"] == PARAPHRASE_QUESTIONS[r["kind"]][r["paraphrase"]].format(name=r["name"])
        for key in ("kind", "answer", "concepts", "perturbed_answers", "paraphrased_answer"):
            assert r[key] == original[key], key
        assert (r["image"] is None) == (r["kind"] in ("text_profession", "text_city"))
    # every question of a forget row is reworded by every template
    assert len({(r["identity"], r["kind"], r["view"], r["paraphrase"]) for r in pf}) == len(pf)
    full = ToyWorld().splits(0.10)
    assert len(full["paraphrase_retain"]) <= 300 and len(full["paraphrase_forget"]) <= 300


def test_image_shifts_are_deterministic_and_change_pixels(world):
    again = ToyWorld(num_identities=12, family_size=4, seed=0)
    ident = world.identities[5]
    base = _arr(world.render(ident, 1))
    shifted = {t: world.shift_image(ident, 1, t) for t in IMAGE_SHIFTS}
    for t, img in shifted.items():
        assert img.size == (world.image_size, world.image_size) and img.mode == "RGB"
        assert img.tobytes() == again.shift_image(5, 1, t).tobytes(), t  # deterministic, index or Identity
        assert np.abs(_arr(img) - base).mean() > 5.0, t  # really changes the picture
    assert np.array_equal(_arr(shifted["flip"]), base[:, ::-1])
    assert world.shift_image(ident, 0, "crop").tobytes() != shifted["crop"].tobytes()  # per view
    # a new view is none of the training or held-out views, and each new view is a different picture
    new = _arr(shifted["new_view"])
    views = [world.render(ident, v) for v in range(world.train_views)]
    views += [world.render(ident, v, heldout=True) for v in range(world.heldout_views)]
    assert all(np.abs(new - _arr(v)).mean() > 1.0 for v in views)
    assert world.render_new_view(ident, 0).tobytes() != world.render_new_view(ident, 1).tobytes()
    assert world.render_new_view(ident, 1).tobytes() == shifted["new_view"].tobytes()
    with pytest.raises(ValueError, match="unknown image shift"):
        world.shift_image(ident, 0, "rotate")
    with pytest.raises(ValueError):
        world.render(ident, 1000, heldout=True)  # render keeps its checks


def test_shift_splits(world, splits):
    forget = world.forget_identities(0.15)
    for t in IMAGE_SHIFTS:
        f, r = splits[f"shift_{t}_forget"], splits[f"shift_{t}_retain"]
        assert len(f) == len(forget) * world.train_views and len(r) == (world.num_identities - len(forget)) * 2
        assert {row["identity"] for row in f} == set(forget)
        assert all(row["kind"] == "name" and row["shift"] == t for row in f + r)
        for row in f:
            view = row["view"] - 1000 if t == "new_view" else row["view"]
            assert row["image"].tobytes() == world.shift_image(row["identity"], view, t).tobytes()
            assert row["answer"] == f"this is {row['name']} ."


def _wording(world, text):
    """A text with every name word, profession and city replaced by one slot: what is left is its wording."""
    from unlearn_trainer.toyworld.world import CITIES, PROFESSIONS

    facts = set(world.name_words()) | set(PROFESSIONS) | set(CITIES)
    out = []
    for w in text.split():
        w = "<slot>" if w in facts else w
        if not (w == "<slot>" and out and out[-1] == "<slot>"):
            out.append(w)
    return out


def test_perturbed_answers_are_wrong_and_worded_like_the_paraphrased_answer(world, rows, splits):
    fact_rows = [r for r in rows + splits["unseen"] if r["kind"] in PARAPHRASE_KINDS]
    assert fact_rows
    trained_names = {i.name for i in world.identities[:12]}
    for r in fact_rows:
        wrong = r["perturbed_answers"]
        assert len(wrong) >= 4 and len(set(wrong)) == len(wrong), r["id"]
        assert r["answer"] not in wrong
        # TOFU: perturbed answers perturb the paraphrased answer, so both have one (untrained) wording
        assert all(_wording(world, a) == _wording(world, r["paraphrased_answer"]) for a in wrong), wrong
        if r["kind"] in ("profession", "text_profession", "city", "text_city"):
            attr = r["kind"].replace("text_", "")
            assert all(a.startswith(r["name"] + " ") and r["attributes"][attr] not in a.split() for a in wrong)
        else:
            assert all(r["name"] not in a for a in wrong)
        para = r["paraphrased_answer"]
        assert para and para != r["answer"] and r["name"] in para
    # family look-alikes first, deterministic
    r = next(r for r in rows if r["kind"] == "name")
    family = {i.name for i in world.identities if i.family == r["family"]} - {r["name"]}
    prefix = PARAPHRASE_ANSWERS["name"].split("{name}")[0]
    firsts = [a[len(prefix):-2] for a in r["perturbed_answers"][: len(family)]]
    assert set(firsts) == family and set(firsts) <= trained_names
    assert r["perturbed_answers"] == ToyWorld(num_identities=12, family_size=4, seed=0).train_rows()[0][
        "perturbed_answers"]
    # rows without facts have none
    assert all(r["perturbed_answers"] == [] and r["paraphrased_answer"] == "" for r in rows
               if r["kind"] in ("describe", "mc"))
    # few identities: still >= 4 wrong names (mixed-up first / last names)
    small = ToyWorld(num_identities=4, family_size=2, num_unseen=0)
    assert all(len(r["perturbed_answers"]) >= 4 for r in small.train_rows() if r["kind"] == "name")
