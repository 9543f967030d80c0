"""Benchmark loaders on small fixtures written in each benchmark's own layout (Hub parquet files, save_to_disk,
JSON / CSV concept folders), built in tmp_path by the tests."""

import io
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict, Features, Value
from datasets import Image as HFImage
from PIL import Image

from unlearn_trainer.data.benchmarks import (
    CLEAR_CAPTION_QUESTIONS,
    CLEAR_FACE_PROMPT,
    LazyRows,
    load_benchmark,
    load_clear,
    load_concept_folder,
    load_mllmu_bench,
)
from unlearn_trainer.data.collator import row_id_digest
from unlearn_trainer.evaluation import metrics as M
from unlearn_trainer.evaluation.benchmark_scoring import score_predictions


def png(color, size=8):
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def color_of(image):
    return image.getpixel((0, 0))


# ---------------------------------------------------------------------------------------------------- MLLMU-Bench

MC = {"Correct_Answer": Value("string"),
      "Options": {k: Value("string") for k in "ABCD"}, "Question": Value("string")}
QA = {"Ground_Truth": Value("string"), "Question": Value("string"), "Type": Value("string")}
MLLMU_FEATURES = Features({
    "image": HFImage(), "ID": Value("string"), "biography": Value("string"), "question": Value("string"),
    "answer": Value("string"),
    "Classification_Task": {"Image_Textual_Questions": [MC], "Pure_Text_Questions": [MC]},
    "Generation_Task": [QA], "Mask_Task": [QA],
})
FICTITIOUS = ["001", "002", "003", "004", "005", "006"]
FORGET_IDS = ["002", "005"]


def pcolor(pid, real=False):
    return (200 if real else 10, int(pid) * 20, 50)


def profile(pid, real=False):
    name = f"Celebrity {pid}" if real else f"Person {pid}"
    return {
        "image": {"bytes": png(pcolor(pid, real)), "path": None},
        "ID": pid,
        "biography": json.dumps({"Name": name, "Born": "Lyon", "Employment": "Baker"}),
        "question": "What does this person do for a living?",
        "answer": f"{name} works as a baker in Lyon.",
        "Classification_Task": {
            "Image_Textual_Questions": [{"Correct_Answer": "B", "Question": "Where was this person born?",
                                         "Options": {"A": "Paris", "B": "Lyon", "C": "Rome", "D": "Oslo"}}],
            "Pure_Text_Questions": [{"Correct_Answer": "C", "Question": f"What is {name}'s job?",
                                     "Options": {"A": "Pilot", "B": "Judge", "C": "Baker", "D": "Nurse"}}],
        },
        "Generation_Task": [
            {"Question": "Where does this person work?", "Ground_Truth": "This person works in Lyon.",
             "Type": "Image_Textual"},
            {"Question": f"What is {name}'s job?", "Ground_Truth": f"{name} is a baker.", "Type": "Pure_Text"},
        ],
        "Mask_Task": [
            {"Question": "This person was born in __.", "Ground_Truth": "Lyon", "Type": "Image_Textual"},
            {"Question": f"{name} works as a __.", "Ground_Truth": "baker", "Type": "Pure_Text"},
        ],
    }


def hub_parquet(root, config, records, features, file="train-00000-of-00001.parquet"):
    """Write a config as push_to_hub does: <root>/<config>/train-*.parquet with the HF feature metadata."""
    (root / config).mkdir(parents=True, exist_ok=True)
    Dataset.from_list(records, features=features).to_parquet(str(root / config / file))


@pytest.fixture(scope="module")
def mllmu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mllmu")
    hub_parquet(root, "forget_10", [profile(p) for p in FORGET_IDS], MLLMU_FEATURES)
    hub_parquet(root, "retain_90", [profile(p) for p in FICTITIOUS if p not in FORGET_IDS], MLLMU_FEATURES)
    # the real celebrities reuse IDs 001 / 002: they must not pick up the fictitious profiles' names or images
    hub_parquet(root, "Retain_Set", [profile(p, real=True) for p in ("001", "002")], MLLMU_FEATURES)
    # Test_Set: several generated views per profile in "images"; written by plain pyarrow (no HF metadata)
    tests = []
    for p in FICTITIOUS:
        rec = profile(p)
        rec.pop("image")
        rec["images"] = [{"bytes": png((90 + v, int(p), 7)), "path": f"{p}_pose{v}.png"} for v in range(3)]
        tests.append(rec)
    (root / "Test_Set").mkdir()
    pq.write_table(pa.Table.from_pylist(tests[:3]), str(root / "Test_Set" / "train-00000-of-00002.parquet"))
    pq.write_table(pa.Table.from_pylist(tests[3:]), str(root / "Test_Set" / "train-00001-of-00002.parquet"))
    return root


@pytest.fixture(scope="module")
def mllmu(mllmu_root):
    return load_mllmu_bench(str(mllmu_root), forget_ratio=10)


def test_mllmu_training_rows(mllmu):
    assert [r["entity"] for r in mllmu.forget] == FORGET_IDS
    assert sorted(r["entity"] for r in mllmu.retain) == ["001", "003", "004", "006"]
    assert not {r["entity"] for r in mllmu.forget} & {r["entity"] for r in mllmu.retain}
    row = mllmu.forget[0]
    assert row["question"] == "What does this person do for a living?"
    assert row["answer"] == "Person 002 works as a baker in Lyon."
    assert row["concepts"] == ["Person 002"] and row["kind"] == "qa" and row["split"] == "forget"
    assert isinstance(row["image"], Image.Image) and row["image"].mode == "RGB"
    assert color_of(row["image"]) == pcolor("002")
    assert mllmu.is_well_formed is None


def test_loaded_splits_hold_no_decoded_image(mllmu_root, clear_root, concepts_root, monkeypatch):
    """Images stay encoded (bytes or paths) in a datasets.Image column until a row is read."""
    import PIL.Image

    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    loaded = [load_mllmu_bench(str(mllmu_root), 10), load_clear(str(clear_root), 10),
              load_concept_folder(str(concepts_root), ["Donald Trump"])]
    assert opened == []
    for data in loaded:
        for split in [data.forget, data.retain, *data.eval_splits.values()]:
            assert isinstance(split, LazyRows) and isinstance(split.images.features["image"], HFImage)
            assert not any(isinstance(v, Image.Image) for row in split._rows for v in row.values())
    row = loaded[0].forget[0]
    assert len(opened) == 1 and row["image"].mode == "RGB" and color_of(row["image"]) == pcolor("002")
    assert color_of(loaded[2].forget[0]["image"]) == (0, 0, 0)  # a concept folder's image file, read now


def test_lazy_rows_act_as_lists(mllmu):
    forget, retain = mllmu.forget, mllmu.retain
    assert [r["id"] for r in forget + retain[:1]] == [r["id"] for r in list(forget) + [retain[0]]]
    assert [r["id"] for r in retain[:1] + forget] == [retain[0]["id"]] + [r["id"] for r in forget]
    assert forget[-1]["entity"] == "005" and len(retain[1:3]) == 2
    sample = retain.sample(2, seed=0)
    ids = [r["id"] for r in retain]
    assert len(sample) == 2 and [ids.index(r["id"]) for r in sample] == sorted(ids.index(r["id"]) for r in sample)
    assert [r["id"] for r in retain.sample(2, seed=0)] == [r["id"] for r in sample]  # seeded
    assert color_of(sample[0]["image"]) == pcolor(sample[0]["entity"])  # the image follows its row


def test_mllmu_eval_splits_and_fields(mllmu):
    counts = {k: len(v) for k, v in mllmu.eval_splits.items()}
    expected = {f"{s}_{t}": 2 * n for s, n in (("forget", 2), ("test", 2), ("retain", 4), ("real", 2))
                for t in ("cls", "gen", "cloze")}
    assert counts == expected
    cls = mllmu.eval_splits["forget_cls"]
    image_q, text_q = cls[0], cls[1]
    assert image_q["options"] == ["Paris", "Lyon", "Rome", "Oslo"] and image_q["answer_letter"] == "B"
    assert image_q["question"] == ("Where was this person born?\nA: Paris\nB: Lyon\nC: Rome\nD: Oslo\n"
                                   "Just give ONE letter representing the answer directly.")
    assert image_q["mc_question"] == "Where was this person born?" and image_q["benchmark_metric"] == "acc_first_letter"
    assert color_of(image_q["image"]) == pcolor("002") and image_q["modality"] == "image"
    assert text_q["image"] is None and text_q["modality"] == "text" and text_q["answer_letter"] == "C"
    gen = mllmu.eval_splits["forget_gen"]
    assert gen[0]["answer"] == "This person works in Lyon." and gen[0]["benchmark_metric"] == "rougeL_f_stemmed"
    assert gen[0]["question"].endswith("one sentence accurately in ENGLISH.") and gen[1]["image"] is None
    cloze = mllmu.eval_splits["forget_cloze"]
    assert cloze[0]["question"].startswith("This person was born in [Blank].\nPlease **ONLY**")
    assert cloze[0]["expected"] == ["Lyon"] and cloze[0]["benchmark_metric"] == "acc_substring"
    assert len({r["id"] for rows in mllmu.eval_splits.values() for r in rows}) == sum(counts.values())


def test_mllmu_test_set_is_forget_profiles_with_a_seeded_view(mllmu_root, mllmu):
    rows = mllmu.eval_splits["test_gen"]
    assert {r["entity"] for r in rows} == set(FORGET_IDS)
    views = {r["entity"]: color_of(r["image"]) for r in rows if r["image"] is not None}
    assert all(c in {(90 + v, int(e), 7) for v in range(3)} for e, c in views.items())
    again = load_mllmu_bench(str(mllmu_root), 10, eval_sets=("test",), retain=False)
    assert {r["entity"]: color_of(r["image"]) for r in again.eval_splits["test_gen"] if r["image"]} == views
    assert rows[0]["concepts"] == ["Person 002"]


def test_mllmu_real_celebrities_do_not_borrow_fictitious_profiles(mllmu):
    rows = mllmu.eval_splits["real_gen"]
    assert {r["concepts"][0] for r in rows} == {"Celebrity 001", "Celebrity 002"}
    assert {color_of(r["image"]) for r in rows if r["image"]} == {pcolor("001", True), pcolor("002", True)}
    assert all(r["entity"].startswith("Retain_Set/") for r in rows)


def test_mllmu_options(mllmu_root):
    data = load_mllmu_bench(str(mllmu_root), "forget_10", eval_sets=("forget",), tasks=("classification",),
                            split_modality=True, instructions=False, retain=False)
    assert data.retain is None and sorted(data.eval_splits) == ["forget_cls_image", "forget_cls_text"]
    assert not data.eval_splits["forget_cls_text"][0]["question"].endswith("directly.")
    capped = load_mllmu_bench(str(mllmu_root), 10, eval_sets=("retain",), max_eval_rows=3)
    assert {len(v) for v in capped.eval_splits.values()} == {3}


def test_mllmu_errors(tmp_path, mllmu_root):
    bad = [profile(p) for p in FORGET_IDS]
    for rec in bad:
        rec.pop("Mask_Task")
    features = Features({k: v for k, v in MLLMU_FEATURES.items() if k != "Mask_Task"})
    hub_parquet(tmp_path / "a", "forget_10", bad, features)
    hub_parquet(tmp_path / "a", "retain_90", [profile("001")], MLLMU_FEATURES)
    with pytest.raises(ValueError, match=r"'forget_10'.*missing column\(s\) \['Mask_Task'\]"):
        load_mllmu_bench(str(tmp_path / "a"), 10)
    with pytest.raises(FileNotFoundError, match="Retain_Set"):
        load_mllmu_bench(str(tmp_path / "a"), 10, tasks=("classification",), eval_sets=("real",))
    wrong = [profile("002")]
    wrong[0]["Classification_Task"]["Pure_Text_Questions"][0]["Correct_Answer"] = "E"
    hub_parquet(tmp_path / "b", "forget_10", wrong, MLLMU_FEATURES)
    with pytest.raises(ValueError, match=rf"MLLMU-Bench forget ID digest {row_id_digest('002')} Pure_Text_Questions #0: "
                                         r"Correct_Answer 'E'") as err:
        load_mllmu_bench(str(tmp_path / "b"), 10, retain=False, eval_sets=("forget",))
    assert "002" not in str(err.value)
    hub_parquet(tmp_path / "c", "forget_10", [profile("002")], MLLMU_FEATURES)
    hub_parquet(tmp_path / "c", "retain_90", [profile("002"), profile("003")], MLLMU_FEATURES)
    with pytest.raises(ValueError, match=r"share 1 profile ID\(s\)") as err:
        load_mllmu_bench(str(tmp_path / "c"), 10)
    assert "002" not in str(err.value)
    with pytest.raises(ValueError, match=r"one of \[5, 10, 15\]"):
        load_mllmu_bench(str(mllmu_root), 7)


def test_mllmu_json_layout(tmp_path):
    """<root>/<config>.jsonl with image paths relative to the file, a JSON-string struct and a dict-of-lists list."""
    (tmp_path / "img").mkdir()
    records = []
    for p in FORGET_IDS:
        Image.new("RGB", (8, 8), pcolor(p)).save(tmp_path / "img" / f"{p}.png")
        rec = profile(p)
        rec["image"] = f"img/{p}.png"
        rec["Classification_Task"] = json.dumps(rec["Classification_Task"])
        gen = rec["Generation_Task"]
        rec["Generation_Task"] = {k: [g[k] for g in gen] for k in gen[0]}  # datasets' Sequence(struct) form
        records.append(rec)
    (tmp_path / "forget_10.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    data = load_mllmu_bench(str(tmp_path), 10, retain=False, eval_sets=("forget",))
    assert color_of(data.forget[1]["image"]) == pcolor("005")
    assert [r["answer"] for r in data.eval_splits["forget_gen"][:2]] == ["This person works in Lyon.",
                                                                           "Person 002 is a baker."]
    assert data.eval_splits["forget_cls"][1]["options"] == ["Pilot", "Judge", "Baker", "Nurse"]


def test_mllmu_hub_path_calls_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, config, cache_dir=None):
        calls.append((name, config))
        ids = FORGET_IDS if config == "forget_10" else ["001", "003"]
        return DatasetDict({"train": Dataset.from_list([profile(p) for p in ids], features=MLLMU_FEATURES)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_mllmu_bench(eval_sets=("forget", "retain"))
    assert calls == [("MLLMMU/MLLMU-Bench", "forget_10"), ("MLLMMU/MLLMU-Bench", "retain_90")]
    assert color_of(data.forget[1]["image"]) == pcolor("005")  # decoded by the datasets Image feature
    assert len(data.eval_splits["retain_cls"]) == 4


# ---------------------------------------------------------------------------------------------------------- CLEAR

CLEAR_PERSONS = {"forget": ["Ann Vale", "Bo Reyes"], "retain": ["Cy Moss", "Di Park", "Ed Lund"]}
PERTURBED = Features({"image": HFImage(), "caption": Value("string"), "name": Value("string"),
                      "perturbed_captions": [Value("string")], "paraphrased_caption": Value("string"),
                      "perturbed_names": [Value("string")]})


def ccolor(i):
    return (i * 30, 100, 200)


@pytest.fixture(scope="module")
def clear_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("clear")
    plain = Features({"image": HFImage(), "caption": Value("string"), "name": Value("string")})
    everyone = CLEAR_PERSONS["forget"] + CLEAR_PERSONS["retain"]

    def rec(name):
        i = everyone.index(name)
        return {"image": {"bytes": png(ccolor(i)), "path": None}, "caption": f"{name} reading a book in a garden.",
                "name": name}

    def perturbed(name):
        return {**rec(name), "perturbed_captions": ["A dog on a beach.", "A red car."],
                "paraphrased_caption": f"{name} reads in a garden.", "perturbed_names": ["Zed Quinn", "Yul Ortiz"]}

    hub_parquet(root, "forget10", [rec(n) for n in CLEAR_PERSONS["forget"]], plain)
    hub_parquet(root, "retain90", [rec(n) for n in CLEAR_PERSONS["retain"]], plain)
    hub_parquet(root, "forget10_perturbed", [perturbed(n) for n in CLEAR_PERSONS["forget"]], PERTURBED)
    hub_parquet(root, "retain_perturbed", [perturbed(n) for n in CLEAR_PERSONS["retain"][:2]], PERTURBED)
    tofu = Features({"image": HFImage(), "caption": Value("string"), "question": Value("string"),
                     "answer": Value("string")})
    text = [{"image": None, "caption": None, "question": f"Where was {n} born?", "answer": f"{n} was born in Oslo."}
            for n in CLEAR_PERSONS["forget"]]
    def tofu_caption(name):
        return {**{k: v for k, v in rec(name).items() if k != "name"}, "question": None, "answer": None}

    hub_parquet(root, "forget10+tofu", [tofu_caption(n) for n in CLEAR_PERSONS["forget"]] + text, tofu)
    hub_parquet(root, "retain90+tofu", [tofu_caption(n) for n in CLEAR_PERSONS["retain"]], tofu)
    faces = Dataset.from_list(
        [{"image": {"bytes": png((1, 2, 3)), "path": None}, "answer": "Tom Hanks",
          "options": ["Brad Pitt", "Matt Damon", "Will Smith"]}],
        features=Features({"image": HFImage(), "answer": Value("string"), "options": [Value("string")]}))
    DatasetDict({"train": faces}).save_to_disk(str(root / "real_faces"))  # a save_to_disk copy is accepted too
    world = Features({"question": Value("string"), "answer": Value("string"), "image": HFImage(),
                      "prompt": Value("string"), "options": [Value("string")]})
    hub_parquet(root, "real_world", [{"question": "What animal is this?", "answer": "A zebra.", "prompt": "",
                                      "image": {"bytes": png((0, 0, 0)), "path": None},
                                      "options": ["A horse.", "A cow."]}] * 2, world,
                file="test-00000-of-00001.parquet")  # the split's first name on the Hub
    return root


def test_clear_rows(clear_root):
    data = load_clear(str(clear_root), forget_ratio="forget10")
    assert [r["entity"] for r in data.forget] == CLEAR_PERSONS["forget"]
    assert [r["entity"] for r in data.retain] == CLEAR_PERSONS["retain"]
    row = data.forget[1]
    assert row["kind"] == "caption" and row["question"] in CLEAR_CAPTION_QUESTIONS
    assert row["answer"] == "Bo Reyes reading a book in a garden." and row["concepts"] == ["Bo Reyes"]
    assert color_of(row["image"]) == ccolor(1)
    assert {k: len(v) for k, v in data.eval_splits.items()} == {
        "forget_caption": 2, "forget_facerec": 2, "retain_caption": 2, "retain_facerec": 2, "real_faces": 1,
        "real_world": 2}
    face = data.eval_splits["forget_facerec"][0]
    assert face["question"] == CLEAR_FACE_PROMPT and face["answer"] == "Ann Vale" and face["expected"] == ["Ann Vale"]
    assert face["perturbed_answers"] == ["Zed Quinn", "Yul Ortiz"] and face["benchmark_metric"] == "rougeL_r_stemmed"
    cap = data.eval_splits["retain_caption"][0]
    assert cap["paraphrased_answer"] == "Cy Moss reads in a garden." and cap["perturbed_answers"][0] == "A dog on a beach."
    real = data.eval_splits["real_faces"][0]
    assert real["answer"] == "Tom Hanks" and real["perturbed_answers"] == ["Brad Pitt", "Matt Damon", "Will Smith"]
    assert "options" not in real  # the authors score these by generation (ROUGE recall), not multiple choice
    assert color_of(real["image"]) == (1, 2, 3)
    assert data.eval_splits["real_world"][0]["question"] == "What animal is this?"
    again = load_clear(str(clear_root), 10, eval_sets=())
    assert [r["question"] for r in again.forget] == [r["question"] for r in data.forget]  # seeded questions


def test_clear_with_text(clear_root):
    data = load_clear(str(clear_root), 10, with_text=True, eval_sets=())
    kinds = [r["kind"] for r in data.forget]
    assert kinds == ["caption", "caption", "text_qa", "text_qa"]
    text = data.forget[2]
    assert text["image"] is None and text["question"] == "Where was Ann Vale born?"
    assert len(data.retain) == 3 and data.extras["forget_config"] == "forget10+tofu"


def test_clear_errors(tmp_path, clear_root):
    with pytest.raises(ValueError, match=r"one of \[1, 5, 10\]"):
        load_clear(str(clear_root), 15)
    hub_parquet(tmp_path, "forget01", [{"image": None, "caption": "x"}],
                Features({"image": HFImage(), "caption": Value("string")}))
    with pytest.raises(ValueError, match=r"CLEAR config 'forget01'.*missing column\(s\) \['name'\]"):
        load_clear(str(tmp_path), 1)
    plain = Features({"image": HFImage(), "caption": Value("string"), "name": Value("string")})
    person = {"image": {"bytes": png((5, 5, 5)), "path": None}, "caption": "A man.", "name": "Ann Vale"}
    hub_parquet(tmp_path, "retain99", [{**person, "name": "Ann Vale"}], plain)
    hub_parquet(tmp_path, "forget01", [person], plain)
    with pytest.raises(ValueError, match=r"forget01 and retain99 share 1 person\(s\)") as err:
        load_clear(str(tmp_path), 1, eval_sets=())
    assert "Ann Vale" not in str(err.value)
    hub_parquet(tmp_path, "retain99", [{**person, "name": "Cy Moss"}], plain)
    hub_parquet(tmp_path, "retain_perturbed", [{**person, "perturbed_captions": ["x"], "paraphrased_caption": "y",
                                                "perturbed_names": ["Zed"]}], PERTURBED)
    with pytest.warns(UserWarning, match=r"retain_perturbed contains 1 forget person\(s\)") as record:
        load_clear(str(tmp_path), 1, eval_sets=("retain",))
    assert not any("Ann Vale" in str(w.message) for w in record)


# ------------------------------------------------------------------------------------------------- concept folder


@pytest.fixture()
def concepts_root(tmp_path):
    root = tmp_path / "concepts"
    trump = root / "Donald_Trump"
    trump.mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.jpg", "c.png"]):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(trump / name)
    (trump / "concept.json").write_text(json.dumps({"name": "Donald Trump", "aliases": ["Trump"]}))
    musk = root / "Elon_Musk"
    musk.mkdir()
    for name in ["x.png", "y.png"]:
        Image.new("RGB", (8, 8), (0, 90, 0)).save(musk / name)
    (musk / "questions.csv").write_text(
        "question,answer,image,split,options,answer_letter\n"
        "Who is this?,Elon Musk,*,,,\n"
        "Which company did Elon Musk found?,SpaceX,,,,\n"
        "Who is this?,B,x.png,test,Bill Gates|Elon Musk,B\n")
    cat = root / "cat"
    cat.mkdir()
    Image.new("RGB", (8, 8), (1, 1, 1)).save(cat / "cat1.png")
    (cat / "questions.jsonl").write_text(json.dumps({"question": "What animal?", "answer": "A cat.",
                                                     "image": "cat1.png", "expected": "cat"}) + "\n")
    return root


def test_concept_folder(concepts_root):
    data = load_concept_folder(str(concepts_root), ["donald trump"], num_train_images=1)
    assert [r["id"] for r in data.forget] == ["Donald_Trump/0/a.png"]
    assert data.forget[0]["concepts"] == ["Donald Trump", "Trump"] and data.forget[0]["answer"] == "This is Donald Trump."
    assert [r["id"] for r in data.eval_splits["forget_heldout"]] == ["Donald_Trump/0/b.jpg", "Donald_Trump/0/c.png"]
    assert color_of(data.eval_splits["forget_heldout"][1]["image"]) == (100, 0, 0)
    assert {r["entity"] for r in data.retain} == {"Elon_Musk", "cat"}
    assert not {r["entity"] for r in data.forget} & {r["entity"] for r in data.retain}
    musk = [r for r in data.retain if r["entity"] == "Elon_Musk"]
    assert [(r["question"], r["image"] is None) for r in musk] == [
        ("Who is this?", False), ("Which company did Elon Musk found?", True)]  # y.png is beyond num_train_images
    mc = data.eval_splits["retain_heldout"]
    assert [(r["id"], r["options"], r["answer_letter"]) for r in mc if "options" in r] == [
        ("Elon_Musk/2/x.png", ["Bill Gates", "Elon Musk"], "B")]
    assert [r["expected"] for r in data.retain if r["entity"] == "cat"] == [["cat"]]


def test_concept_folder_errors(concepts_root):
    with pytest.raises(ValueError, match=r"Unknown forget concept\(s\) \['Obama'\].*Donald Trump"):
        load_concept_folder(str(concepts_root), ["Obama"])
    with pytest.raises(ValueError, match="both forget and retain"):
        load_concept_folder(str(concepts_root), ["cat"], ["cat"])
    (concepts_root / "cat" / "questions.jsonl").write_text(json.dumps({"question": "What?", "image": "cat1.png"}))
    with pytest.raises(ValueError, match=r"questions.jsonl row #0 has no string 'answer'"):
        load_concept_folder(str(concepts_root), ["cat"])
    (concepts_root / "cat" / "questions.jsonl").write_text(json.dumps({"question": "Q", "answer": "A",
                                                                        "image": "dog.png"}))
    with pytest.raises(ValueError, match=r"image 'dog.png' is not an image file"):
        load_concept_folder(str(concepts_root), ["cat"])


# ------------------------------------------------------------------------------------------------ scoring and CLI


def test_score_predictions_by_the_benchmarks_rules():
    mc = {"kind": "classification", "modality": "image", "options": ["a", "b", "c", "d"], "answer_letter": "B",
          "benchmark_metric": "acc_first_letter", "answer": "B"}
    cloze = {"kind": "cloze", "modality": "text", "answer": "Lyon", "benchmark_metric": "acc_substring"}
    gen = {"kind": "caption", "answer": "he was running fast", "benchmark_metric": "rougeL_r_stemmed"}
    rows = [mc, mc, mc, cloze, cloze, gen, {"answer": "ignored"}]
    preds = ["(B) Lyon", "Bob", "c", "Born in LYONNAIS", "Paris", "he runs fast", "x"]
    scores = score_predictions(rows, preds)
    assert scores == pytest.approx({"classification_acc_first_letter_image": 1 / 3,
                                    "cloze_acc_substring_text": 1 / 2, "caption_rougeL_r_stemmed": 3 / 4})
    # stems match "running" / "runs": LCS = (he, run, fast), P = 3/3, R = 3/4, F = 6/7; unstemmed R is 2/4
    assert M.rouge_l(["he runs fast"], ["he was running fast"], stemmed=True) == pytest.approx(
        {"rougeL_f_stemmed": 6 / 7, "rougeL_p_stemmed": 1.0, "rougeL_r_stemmed": 3 / 4})
    assert M.rouge_l(["he runs fast"], ["he was running fast"])["rougeL_r"] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="one prediction per row"):
        score_predictions(rows, preds[:-1])
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('r1')}\) has unknown benchmark_metric "
                                         r"'bleu'") as err:
        score_predictions([{"id": "r1", "benchmark_metric": "bleu", "answer": "a"}], ["a"])
    assert "'r1'" not in str(err.value)


def test_cli_dispatches_registered_names(mllmu_root, clear_root, concepts_root):
    from unlearn_trainer.cli import ScriptArguments, load_data

    data = load_data(ScriptArguments(dataset=f"mllmu_bench:{mllmu_root}", forget_split="forget_10"))
    assert data.name == "mllmu_bench" and len(data.forget) == 2 and len(data.retain) == 4
    data = load_data(ScriptArguments(dataset=f"clear:{clear_root}", retain_split="none", max_eval_rows=1))
    assert data.retain is None and {len(v) for v in data.eval_splits.values()} == {1}
    data = load_data(ScriptArguments(dataset=f"mmubench:{concepts_root}", forget_split="Donald Trump,cat"))
    assert {r["entity"] for r in data.forget} == {"Donald_Trump", "cat"}
    with pytest.raises(ValueError, match="--forget_split 'Name One,Name Two'"):
        load_benchmark(f"mmubench:{concepts_root}", "forget10")
    with pytest.raises(ValueError, match="Unknown benchmark 'tofu'"):
        load_benchmark("tofu")


def test_rows_run_through_collator_and_evaluator(mllmu):
    """Loaded rows are valid model input: a training batch and the evaluator on a multiple-choice split."""
    from unlearn_trainer.data import VLMUnlearningCollator
    from unlearn_trainer.evaluation import evaluate_rows
    from unlearn_trainer.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor("llava")
    batch = VLMUnlearningCollator(processor)(mllmu.forget + mllmu.retain[:1])
    assert batch["pixel_values"].shape[0] == 3 and (batch["labels"] != -100).any()
    rows = mllmu.eval_splits["forget_cls"] + mllmu.eval_splits["forget_cloze"][:2]
    result, preds = evaluate_rows(model, processor, rows, max_new_tokens=3)
    assert {"mc_letter_acc", "mc_loglik_acc", "attribute_accuracy"} <= set(result) and len(preds) == len(rows)
    scores = score_predictions(rows, preds)
    assert set(scores) == {"classification_acc_first_letter_image", "classification_acc_first_letter_text",
                           "cloze_acc_substring_image", "cloze_acc_substring_text"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_every_scoring_rule_a_loader_names_is_implemented():
    """The loaders' ``benchmark_metric`` vocabulary (data) and its implementation (evaluation) are the same set."""
    from unlearn_trainer.data.benchmarks import SCORING_RULES
    from unlearn_trainer.evaluation.benchmark_scoring import _METRICS

    assert set(SCORING_RULES) == set(_METRICS)
