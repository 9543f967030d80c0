"""Model cards and Hub publishing (unlearn_trainer.hub), with the Hub client intercepted at its API boundary.

No Hub is reachable: ``HfApi.create_repo`` and ``HfApi.create_commit`` are replaced by recorders, and
``HfApi._validate_yaml`` (a POST to the Hub's YAML validator) by a local parse. ``HfApi.upload_folder`` itself runs
for real, so its file selection (our allow-list plus Trainer's ignore patterns) is what the recorded commit holds.
With hf_xet installed upload_folder would hand the same add-operations to its streamed pipeline instead of
create_commit, so the legacy single-commit path is forced.
"""

import os
import re
from types import SimpleNamespace

import huggingface_hub
import pytest
from conftest import train_args
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.hf_api import CommitInfo, RepoUrl
from transformers import TrainingArguments

from unlearn_trainer import GAConfig, GATrainer, NPOConfig, NPOTrainer, UnlearnConfig
from unlearn_trainer.evaluation import UnlearningEvalCallback
from unlearn_trainer.hub import DEMO_BASE_MODEL, forget_set_digest, forgotten_summary, render_model_card
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor
from unlearn_trainer.toyworld import ToyWorld

REPO = "someone/npo-unlearned"
LLAVA_PROCESSOR_FILES = {"chat_template.jinja", "processor_config.json", "tokenizer.json", "tokenizer_config.json"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@pytest.fixture(scope="module")
def world_rows():
    splits = ToyWorld().splits(0.10)
    # two forget identities (4 rows each), so ids and counts are not trivially 1
    forget = [r for r in splits["forget_train"] if r["view"] == 0][:8]
    return forget, splits["retain_train"][:8]


@pytest.fixture
def hub(monkeypatch):
    calls = {"create_repo": [], "commits": [], "validated": []}

    def create_repo(self, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, "private": private, "exist_ok": exist_ok})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def validate_yaml(self, content, *, repo_type=None, token=None):
        ModelCard(content)  # parses the front matter locally; raises on invalid YAML
        calls["validated"].append(content)

    def create_commit(self, repo_id, operations, *, commit_message, **kwargs):
        files = {op.path_in_repo: op.path_or_fileobj for op in operations}
        calls["commits"].append({"repo_id": repo_id, "message": commit_message, "files": files, **kwargs})
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}",
                          commit_message=commit_message, commit_description="", oid="0" * 40)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "_validate_yaml", validate_yaml)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False)
    return calls


def _private_text(rows):
    """Every answer, question, concept name and attribute value of the rows (none may reach a card)."""
    texts = set()
    for r in rows:
        texts |= {r["answer"], r["question"], *r["concepts"], *[str(v) for v in r["attributes"].values()]}
    return {t for t in texts if t}


def _leaks(card: str, rows) -> list[str]:
    low = card.lower()
    return sorted(t for t in _private_text(rows) if re.search(rf"(?<!\w){re.escape(t.lower())}(?!\w)", low))


def _npo_lora_trainer(world_rows, tmp_path, **overrides):
    forget, retain = world_rows
    model, processor = tiny_model_and_processor("llava")
    callback = UnlearningEvalCallback(processor, {"forget": forget[:3], "retain": retain[:3]}, max_new_tokens=4,
                                      plot=False)
    args = train_args(NPOConfig, tmp_path, max_steps=2, beta=0.3, **overrides)
    return NPOTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain, processing_class=processor,
                      peft_config=lora_config_for(model, r=4), callbacks=[callback])


def _assert_npo_card(card: str, forget):
    assert "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning" in card
    assert "Ruiqi Zhang, Licong Lin, Yu Bai, Song Mei" in card and "2404.05868" in card
    assert "| `beta` | 0.3 |" in card and "| `retain_loss` | `nll` |" in card
    assert "| `learning_rate` | 0.01 |" in card and "| `steps_trained` | 2 |" in card
    assert "| `per_device_train_batch_size` | 2 |" in card
    assert "| `r` | 4 |" in card and "| `lora_alpha` | 16 |" in card
    assert "| split | metric | before | after |" in card and "| forget | rougeL_f |" in card
    assert "Not evaluated" not in card
    assert f"**{len(forget)} rows**" in card and f"`{forget_set_digest(r['id'] for r in forget)}`" in card
    assert f"Identities: **{len({r['identity_id'] for r in forget})}** (ids withheld)" in card
    assert not [r for r in forget if r["id"] in card or r["identity_id"] in card]  # counts and one digest only
    assert "names withheld" in card
    assert "Unlearning is approximate" in card and "Evaluate on your own data" in card
    assert _leaks(card, forget) == []


def test_save_model_writes_our_card_and_peft_card_update_keeps_it(world_rows, tmp_path):
    forget, _ = world_rows
    trainer = _npo_lora_trainer(world_rows, tmp_path)
    trainer.train()
    out = str(tmp_path / "saved")
    trainer.save_model(out)
    files = set(os.listdir(out))
    assert {"README.md", "adapter_model.safetensors", "adapter_config.json", "training_args.json"} <= files
    assert "training_args.bin" not in files
    card = ModelCard.load(os.path.join(out, "README.md"))
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "image-text-to-text"
    assert card.data.tags[:4] == ["unlearning", "npo", "vision-language", "peft"]
    _assert_npo_card(str(card), forget)

    # PEFT's own card update (what save_pretrained does) replaces the tag list with the model's tags and its own:
    # ours survive because they are model tags, and the body is kept.
    trainer.model.save_pretrained(out)
    updated = ModelCard.load(os.path.join(out, "README.md"))
    assert "transformers" in updated.data.tags  # PEFT's own tag: its update did run
    assert {"unlearning", "npo", "vision-language", "peft", "lora"} <= set(updated.data.tags)
    assert "## What was forgotten" in updated.text and "| `beta` | 0.3 |" in updated.text


def test_push_to_hub_uploads_adapter_card_and_processor_only_to_a_private_repo(world_rows, tmp_path, hub):
    forget, _ = world_rows
    trainer = _npo_lora_trainer(world_rows, tmp_path, hub_model_id=REPO)
    trainer.train()  # the callback writes unlearning_eval.json (generated answers) into output_dir
    out = trainer.args.output_dir
    # files that must never be published, next to the model
    os.makedirs(os.path.join(out, "checkpoint-1"))
    for name in ("checkpoint-1/adapter_model.safetensors", "training_args.bin", "results.json", "_notes.txt",
                 "optimizer.pt"):
        with open(os.path.join(out, name), "w") as f:
            f.write("x")

    trainer.push_to_hub(license="mit")

    assert hub["create_repo"] == [{"repo_id": REPO, "private": True, "exist_ok": True}]
    assert len(hub["commits"]) == 1 and hub["commits"][0]["repo_id"] == REPO
    uploaded = hub["commits"][0]["files"]
    assert set(uploaded) == {"README.md", "adapter_model.safetensors", "adapter_config.json"} | LLAVA_PROCESSOR_FILES
    assert not [p for p in uploaded if p.endswith(PICKLE_SUFFIXES)]
    assert os.path.exists(os.path.join(out, "unlearning_eval.json"))  # exists locally, and was not uploaded

    card_text = open(uploaded["README.md"], encoding="utf-8").read()
    assert hub["validated"] == [card_text]
    card = ModelCard(card_text)
    assert card.data.license == "mit" and card.data.library_name == "peft"
    assert {"unlearning", "npo", "vision-language", "peft"} <= set(card.data.tags)
    assert card_text.splitlines()[card_text.splitlines().index("---", 1) + 2] == "# npo-unlearned"
    assert f'PeftModel.from_pretrained(base, "{REPO}")' in card_text
    _assert_npo_card(card_text, forget)
    # the evaluation file that stayed local does hold private text: the allow-list is what kept it off the Hub
    assert open(os.path.join(out, "unlearning_eval.json")).read().count('"answers"') == 1


def test_full_model_push_without_evaluation_and_public_when_asked(tmp_path, hub, world_rows):
    forget, _ = world_rows
    model, processor = tiny_model_and_processor("qwen2_vl")
    args = train_args(GAConfig, tmp_path, max_steps=1, learning_rate=1e-4, hub_model_id="someone/ga-full",
                      hub_private_repo=False)
    trainer = GATrainer(model=model, args=args, forget_dataset=forget[:4], processing_class=processor)
    trainer.train()
    trainer.push_to_hub()
    assert hub["create_repo"][0]["private"] is False
    uploaded = set(hub["commits"][0]["files"])
    model_files = {"README.md", "config.json", "generation_config.json", "model.safetensors"}
    assert model_files <= uploaded and {"tokenizer.json", "tokenizer_config.json"} <= uploaded
    assert not any(p.startswith("adapter_") or p.endswith(PICKLE_SUFFIXES) for p in uploaded)
    assert not {"training_args.json", "unlearning_eval.json"} & uploaded
    card = ModelCard(open(hub["commits"][0]["files"]["README.md"], encoding="utf-8").read())
    assert card.data.library_name == "transformers" and card.data.tags == ["unlearning", "ga", "vision-language"]
    assert "Not evaluated" in card.text and "Knowledge Unlearning for Mitigating Privacy Risks" in card.text
    assert "AutoModelForImageTextToText.from_pretrained(\"someone/ga-full\")" in card.text
    assert "| `variant` |" in card.text and "| `trainable_parameters` |" in card.text
    assert _leaks(card.text, forget[:4]) == []


def test_private_by_default_including_converted_training_arguments(tmp_path):
    assert UnlearnConfig(output_dir=str(tmp_path)).hub_private_repo is True
    assert UnlearnConfig(output_dir=str(tmp_path), hub_private_repo=False).hub_private_repo is False
    model, processor = tiny_model_and_processor("llava")
    rows = ToyWorld().splits(0.10)["forget_train"][:2]
    plain = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    assert plain.hub_private_repo is None  # Trainer's own default: public unless the organisation says otherwise
    trainer = GATrainer(model=model, args=plain, forget_dataset=rows, processing_class=processor)
    assert trainer.args.hub_private_repo is True
    public = TrainingArguments(output_dir=str(tmp_path), report_to="none", hub_private_repo=False)
    assert GATrainer(model=model, args=public, forget_dataset=rows,
                     processing_class=processor).args.hub_private_repo is False


def test_card_never_names_concepts_and_hides_local_paths(world_rows, tmp_path):
    forget, _ = world_rows
    model, processor = tiny_model_and_processor("llava")
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path), forget_dataset=forget,
                        processing_class=processor)
    trainer.args.saliency_mask = "/home/alice/secret-project/mask.safetensors"
    names = sorted({r["concepts"][0] for r in forget})
    default = render_model_card(trainer)
    assert "/home/alice" not in default and "secret-project" not in default and "`.../mask.safetensors`" in default
    assert f"**{len(names)}** (names withheld)" in default and not any(n in default for n in names)
    assert _leaks(default, forget) == [] and names[0] in _leaks(f"`{names[0]}`", forget)  # the check sees names
    with pytest.raises(TypeError):  # no opt-in puts names on the card, in the call or in the trainer's defaults
        render_model_card(trainer, include_concept_names=True)
    trainer.model_card_kwargs = {"include_concept_names": True}
    with pytest.raises(ValueError, match=r"include_concept_names'\] was removed.*drop the key"):
        render_model_card(trainer)
    assert "Not evaluated" in default and DEMO_BASE_MODEL not in default


def test_forgotten_summary_reads_dataset_columns_without_rows(world_rows):
    import datasets

    forget, retain = world_rows
    columns = {k: [r[k] for r in forget] for k in ("id", "identity_id", "concepts", "question", "answer")}
    ds = datasets.Dataset.from_dict(columns)
    trainer = SimpleNamespace(forget_dataset=ds, retain_dataset=retain,
                              args=SimpleNamespace(retain_loss="kl", retain_weight=0.5))
    summary = forgotten_summary(trainer)
    assert summary["rows"] == summary["ids"] == len(forget)
    assert summary["digest"] == forget_set_digest(reversed([r["id"] for r in forget]))  # order does not matter
    assert summary["identities"] == len({r["identity_id"] for r in forget}) == summary["concepts"]
    assert summary["retain_rows"] == len(retain) and summary["retain_loss"] == "kl"
    bare = SimpleNamespace(forget_dataset=[{"question": "q", "answer": "a"}], retain_dataset=None,
                           args=SimpleNamespace(retain_loss="none", retain_weight=1.0))
    assert forgotten_summary(bare) == {"rows": 1, "ids": 0, "digest": None, "identities": 0, "concepts": None,
                                       "retain_rows": 0, "retain_loss": "none", "retain_weight": 1.0}


def test_example_cli_writes_the_card_and_pushes_with_push_to_hub(world_rows, tmp_path, hub, monkeypatch):
    from unlearn_trainer import cli
    from unlearn_trainer.data.benchmarks import BenchmarkData

    forget, retain = world_rows
    model, processor = tiny_model_and_processor("llava")
    monkeypatch.setattr(cli, "load_model_and_processor", lambda model_args, script_args: (model, processor, True))
    data = BenchmarkData(name="toyworld", forget=forget, retain=retain,
                         eval_splits={"forget": forget[:2], "retain": retain[:2]})
    monkeypatch.setattr(cli, "load_data", lambda script_args: data)
    out = tmp_path / "run"
    argv = ["--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2", "--max_new_tokens",
            "4", "--push_to_hub", "--hub_model_id", "someone/cli-npo", "--disable_tqdm", "true"]
    cli.run_method(NPOTrainer, NPOConfig, {}, argv=argv)
    assert hub["create_repo"] == [{"repo_id": "someone/cli-npo", "private": True, "exist_ok": True}]
    assert len(hub["commits"]) == 1 and "README.md" in hub["commits"][0]["files"]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "- Data: ToyWorld (the package's offline demo world), forget split `forget10`" in card
    assert "| split | metric | before | after |" in card and _leaks(card, forget) == []
    assert not {"results.json", "unlearning_eval.json", "training_args.json"} & set(hub["commits"][0]["files"])


def test_base_model_is_named_demo_hub_id_or_local_basename(tmp_path, world_rows):
    from transformers import LlavaForConditionalGeneration

    from unlearn_trainer.hub import DEMO_MODEL_CONFIG_KEY

    forget, _ = world_rows
    model, processor = tiny_model_and_processor("llava")
    demo_dir, local_dir = tmp_path / "cache" / "toyworld-abc123", tmp_path / "private" / "my-model"
    model.save_pretrained(local_dir)
    setattr(model.config, DEMO_MODEL_CONFIG_KEY, "tinyllava-1")  # what the ToyWorld builder writes
    model.save_pretrained(demo_dir)
    delattr(model.config, DEMO_MODEL_CONFIG_KEY)

    def card_for(path_or_model):
        m = LlavaForConditionalGeneration.from_pretrained(path_or_model) if isinstance(path_or_model, os.PathLike) \
            else path_or_model
        trainer = GATrainer(model=m, args=train_args(GAConfig, tmp_path), forget_dataset=forget[:2],
                            processing_class=processor, peft_config=lora_config_for(m))
        return ModelCard(render_model_card(trainer))

    demo = card_for(demo_dir)
    assert DEMO_BASE_MODEL in demo.text and "load_full_model()" in demo.text and "It is a toy" in demo.text
    assert demo.data.license == "apache-2.0" and demo.data.base_model is None
    local = card_for(local_dir)
    assert "local model `my-model`" in local.text and local.data.base_model is None and local.data.license is None
    assert DEMO_BASE_MODEL not in local.text and "It is a toy" not in local.text
    model.config._name_or_path = "llava-hf/llava-1.5-7b-hf"
    hub_card = card_for(model)
    assert hub_card.data.base_model == "llava-hf/llava-1.5-7b-hf"
    assert 'AutoModelForImageTextToText.from_pretrained("llava-hf/llava-1.5-7b-hf")' in hub_card.text
    for card in (demo, local, hub_card):
        assert str(tmp_path) not in str(card)
