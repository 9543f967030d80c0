"""The FTTP, ViKeR, PUBG and Saliency examples on the real-model path: a tiny saved LLaVA and a tiny local
dataset whose extra splits carry each method's inputs (reference images, preserved set, o*, a concept column)."""

import json
import runpy
from pathlib import Path

import pytest

from unlearn_trainer.cli import load_data
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name):
    return runpy.run_path(str(EXAMPLES / f"run_{name}.py"))  # not "__main__": nothing runs on import


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("methods")
    model, processor = tiny_model_and_processor("llava")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "person": datasets.Value("string")})

    def split(rows, person):
        return datasets.Dataset.from_list([{**r, "person": person(r)} for r in rows], features=features)

    forget = tiny_vqa_rows(2)  # answers "a cat sits on the mat ." / "the dog is red ."
    ds = datasets.DatasetDict({
        "forget": split(forget, lambda r: "cat" if "cat" in r["answer"] else "dog"),
        "retain": split(tiny_vqa_rows(3, seed=2), lambda r: ""),
        "others": split(tiny_vqa_rows(3, seed=5), lambda r: ""),  # reference images of "other people"
        "text_forget": split(tiny_vqa_rows(2, with_images=False), lambda r: ""),  # text-only rows (image None)
        "guidance": split([{**r, "answer": "a small picture ."} for r in forget], lambda r: ""),
    })
    ds.save_to_disk(str(root / "data"))
    return root


def argv_for(root, out, *extra):
    return ["--model_name_or_path", str(root / "model"), "--dataset", str(root / "data"), "--forget_split", "forget",
            "--retain_split", "retain", "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--output_dir", str(out), "--max_new_tokens", "4", "--disable_tqdm", "true", "--logging_steps", "1", *extra]


def check_outputs(out: Path, method: str, weights: str = "adapter_model.safetensors"):
    assert (out / weights).exists()
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == method and results["demo"] is False
    assert set(results["evaluation"]) == {"before", "after"}
    assert "| forget |" in (out / "unlearning_eval.md").read_text()


def test_fttp_example_reads_concepts_from_a_column(assets):
    out = assets / "fttp"
    ns = example("fttp")
    trainer = ns["main"](argv_for(assets, out, "--concept_key", "person"))
    assert trainer.args.concept_key == "person" and trainer.args.max_steps == 2
    # the ToyWorld defaults stay out of the real-model path
    # (the paper's lr 3e-4 equals the demo's: the scheduler and the ceiling tell them apart)
    assert trainer.args.lr_scheduler_type != ns["DEMO_DEFAULTS"]["lr_scheduler_type"]
    assert trainer.args.forget_loss_ceiling is None  # the paper's, not the demo's guard
    assert trainer.args.retain_loss == "nll"
    assert any("K_C" in h for h in trainer.state.log_history)  # concept tokens ('cat' / 'dog') were found
    check_outputs(out, "fttp")


def test_viker_example_takes_reference_images_from_a_split(assets):
    out = assets / "viker"
    ns = example("viker")
    trainer = ns["main"](argv_for(assets, out, "--reference_images_split", "others", "--num_reference_images", "2",
                                  "--max_reference_images", "2"))
    assert len(trainer.reference_pool) == 2
    assert trainer._ref_cache["viker_reference"]  # R_i computed from the reference images
    check_outputs(out, "viker")
    with pytest.raises(ValueError, match="--reference_images_split"):
        ns["main"](argv_for(assets, assets / "viker-none"))
    with pytest.raises(ValueError, match="Split 'nope' not in"):
        ns["main"](argv_for(assets, assets / "viker-bad", "--reference_images_split", "nope"))


def test_pubg_example_reads_guidance_answers_from_a_file(assets):
    out = assets / "pubg"
    path = assets / "o_star.json"
    path.write_text(json.dumps(["a blue picture .", "a red picture ."]))
    trainer = example("pubg")["main"](argv_for(assets, out, "--guidance_answers", str(path)))
    assert [r["answer"] for r in trainer.guidance_answers] == ["a blue picture .", "a red picture ."]
    assert all(r["question"] == trainer.args.query for r in trainer.guidance_answers)
    assert any("guidance_nll" in h for h in trainer.state.log_history)
    check_outputs(out, "pubg")


def test_pubg_guidance_answers_from_a_split_or_jsonl(assets):
    ns = example("pubg")
    script = ns["PUBGArguments"](dataset=str(assets / "data"), forget_split="forget",
                                 guidance_answers="guidance")
    data = load_data(script)
    rows = ns["method_kwargs"](script, data, None, None)["guidance_answers"]
    assert [r["answer"] for r in rows] == ["a small picture .", "a small picture ."]
    jsonl = assets / "o_star.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"row-{i}", "answer": f"answer {i} ."}) + "\n" for i in range(2)))
    script.guidance_answers = str(jsonl)
    assert [r["answer"] for r in ns["method_kwargs"](script, data, None, None)["guidance_answers"]] == \
        ["answer 0 .", "answer 1 ."]
    script.guidance_answers = None
    assert ns["method_kwargs"](script, data, None, None) == {}  # generated by the trainer (paper)


def test_saliency_example_builds_the_preserved_set_from_splits(assets):
    out = assets / "saliency"
    trainer = example("saliency")["main"](argv_for(assets, out, "--preserve_splits", "text_forget,retain",
                                                   "--use_peft", "false"))
    meta = trainer.saliency_mask.metadata  # computed from T = forget and P = text_forget (2) + retain (3)
    assert meta["n_forget"] == 2 and meta["n_preserve"] == 5
    assert Path(trainer.args.saliency_mask).exists()
    check_outputs(out, "saliency", weights="model.safetensors")


def test_method_kwargs_on_the_toyworld_splits():
    """Demo wiring without the model: reference images / preserved set are the world's splits."""
    viker, saliency = example("viker"), example("saliency")
    args = viker["ViKeRArguments"](reference_images_split="distant", forget_split="forget05")
    data = load_data(args)
    refs = viker["method_kwargs"](args, data, None, None)["reference_images"]
    assert len(refs) == 16 and all(r["identity"] == -1 for r in refs)
    args = saliency["SaliencyArguments"](preserve_splits=saliency["DEMO_DEFAULTS"]["preserve_splits"],
                                         forget_split="forget05")
    parts = saliency["method_kwargs"](args, data, None, None)["preserve_dataset"]
    splits = data.extras["splits"]
    assert [len(p) for p in parts] == [len(splits["text_forget"]), len(splits["retain_train"]),
                                       len(splits["text_retain"])]
    forget_ids = {r["identity"] for r in data.forget}
    assert {r["identity"] for r in parts[0]} == forget_ids and not forget_ids & {r["identity"] for r in parts[1]}
