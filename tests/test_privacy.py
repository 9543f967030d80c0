"""Private by construction: every upload the package causes, final or per checkpoint, passes one allow-list, and no
uploaded byte holds the Hub token, a local path, or a name, id, question or answer of the forget set, whatever
loader produced the rows. The Hub client is intercepted at ``HfApi.create_commit`` (every upload_folder /
upload_file, blocking or ``run_as_future``, ends there), reading each file's bytes when the commit is made."""

import hashlib
import json

import huggingface_hub
import pytest
from conftest import train_args
from datasets import Dataset, DatasetDict, Features, Value
from datasets import Image as HFImage
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.hf_api import CommitInfo, RepoUrl

# the benchmark fixtures, written in each benchmark's own layout (reused, not copied)
from test_benchmark_loaders import clear_root, concepts_root, mllmu_root, png  # noqa: F401

from unlearn_trainer import GAConfig, GATrainer, NPOConfig, NPOTrainer
from unlearn_trainer.hub import render_model_card
from unlearn_trainer.testing import tiny_model_and_processor

TOKEN = "hf_PrivacyTestTokenThatMustNeverBeUploaded0123"
REPO = "someone/unlearned"
PROCESSOR_FILES = {"chat_template.jinja", "processor_config.json", "tokenizer.json", "tokenizer_config.json"}
ADAPTER_FILES = {"README.md", "adapter_model.safetensors", "adapter_config.json"} | PROCESSOR_FILES
MODEL_FILES = {"README.md", "config.json", "generation_config.json", "model.safetensors"} | PROCESSOR_FILES


@pytest.fixture
def uploads(monkeypatch):
    """Every commit the Hub client is asked to make, with the bytes of each added file; any other way to store
    files on the Hub is recorded under "other" (it must stay empty)."""
    calls = {"repos": [], "commits": [], "other": []}

    def create_repo(self, repo_id, *, token=None, private=None, exist_ok=False, **kwargs):
        calls["repos"].append({"repo_id": repo_id, "private": private})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, *, commit_message, **kwargs):
        files = {}
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                with op.as_file() as f:
                    files[op.path_in_repo] = f.read()
            else:
                calls["other"].append(repr(op))
        calls["commits"].append({"message": commit_message, "files": files})
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}",
                          commit_message=commit_message, commit_description="", oid="0" * 40)

    def other(name):
        def record(self, *args, **kwargs):
            calls["other"].append(name)
        return record

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda self, content, **kwargs: ModelCard(content))  # local parse
    for name in ("preupload_lfs_files", "batch_bucket_files", "upload_attachment", "create_branch", "create_tag"):
        monkeypatch.setattr(HfApi, name, other(name))
    monkeypatch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False)
    return calls


def _local_base(tmp_path):
    """The tiny model and processor saved to and loaded from a local folder (so PEFT records its absolute path)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, processor = tiny_model_and_processor("llava")
    folder = tmp_path / "home" / "alice" / "my-base"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return LlavaForConditionalGeneration.from_pretrained(folder), AutoProcessor.from_pretrained(folder), folder


def _local_dataset(tmp_path):
    person = {"image": {"bytes": png((9, 9, 9)), "path": None}}
    forget = [{**person, "id": f"alice-liddell/{i}", "question": f"What is Alice Liddell's secret number {i}?",
               "answer": f"Alice Liddell's secret number is 70{i}3."} for i in range(3)]
    retain = [{**person, "id": f"bob/{i}", "question": "What colour is the sky?", "answer": "Blue."} for i in range(3)]
    features = Features({"image": HFImage(), "id": Value("string"), "question": Value("string"),
                         "answer": Value("string")})
    path = tmp_path / "my-data"
    DatasetDict({"forget": Dataset.from_list(forget, features=features),
                 "retain": Dataset.from_list(retain, features=features)}).save_to_disk(str(path))
    return str(path)


def _strings(rows) -> set[str]:
    """The names, ids, questions and answers of ``rows`` (strings of 5+ characters: shorter ones occur by chance
    in weight bytes)."""
    out = set()
    for row in rows:
        values = [row.get(k) for k in ("id", "question", "answer", "entity", "name", "expected", "concepts")]
        values += list((row.get("attributes") or {}).values())
        for v in values:
            for s in v if isinstance(v, (list, tuple)) else [v]:
                if isinstance(s, str) and len(s) >= 5:
                    out.add(s)
    return out


# (dataset argument, forget split, LoRA): every loader, and one full-model run
LOADERS = {
    "toyworld": lambda roots: ("toyworld", "forget05", True),
    "mllmu_bench": lambda roots: (f"mllmu_bench:{roots['mllmu']}", "forget_10", True),
    "clear": lambda roots: (f"clear:{roots['clear']}", "forget10", True),
    "mmubench": lambda roots: (f"mmubench:{roots['concepts']}", "Donald Trump", True),
    "local": lambda roots: (roots["local"], "forget", False),
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_push_is_allow_listed_and_carries_no_token_path_or_forget_text(
        loader, tmp_path, uploads, monkeypatch, capsys, mllmu_root, clear_root, concepts_root):  # noqa: F811
    from unlearn_trainer import cli

    roots = {"mllmu": mllmu_root, "clear": clear_root, "concepts": concepts_root}
    roots["local"] = _local_dataset(tmp_path) if loader == "local" else None
    dataset, forget_split, lora = LOADERS[loader](roots)
    model, processor, base_folder = _local_base(tmp_path)
    monkeypatch.setattr(cli, "load_model_and_processor", lambda model_args, script_args: (model, processor, False))
    loaded = {}

    def load_data(script_args, original=cli.load_data):
        loaded["data"] = original(script_args)
        return loaded["data"]

    monkeypatch.setattr(cli, "load_data", load_data)
    out = tmp_path / "run"
    # what an earlier run in this folder left (evaluation answers, results, Saliency's Fisher cache): never uploaded
    (out / "saliency").mkdir(parents=True)
    (out / "unlearning_eval.json").write_text(json.dumps({"answers": {"forget": ["the forgotten answer"]}}))
    (out / "results.json").write_text(json.dumps({"forget_split": forget_split}))
    (out / "saliency" / "fisher.safetensors").write_bytes(b"fisher")
    argv = ["--dataset", dataset, "--forget_split", forget_split, "--output_dir", str(out), "--max_steps", "2",
            "--per_device_train_batch_size", "2", "--max_new_tokens", "2", "--max_eval_rows", "2",
            "--save_strategy", "steps", "--save_steps", "1", "--hub_always_push", "true", "--push_to_hub",
            "--hub_model_id", REPO, "--hub_token", TOKEN, "--disable_tqdm", "true", "--use_peft", str(lora).lower(),
            "--lora_target_modules", r".*language_model.*\.(q_proj|v_proj)"]
    trainer, _ = cli.run_method(NPOTrainer, NPOConfig, {}, argv=argv)
    data = loaded["data"]

    # per-checkpoint pushes and the final push all happened, privately, and nothing else was stored
    messages = [c["message"] for c in uploads["commits"]]
    assert sum(m.startswith("Training in progress") for m in messages) == 2 and messages[-1] == "Model save"
    assert {r["private"] for r in uploads["repos"]} == {True} and uploads["other"] == []

    allowed = ADAPTER_FILES if lora else MODEL_FILES
    forget_eval = [r for name, rows in data.eval_splits.items() if "forget" in name for r in rows]
    private = _strings(list(data.forget) + forget_eval) | ({forget_split} if loader == "mmubench" else set())
    base_files = {p.name: p.read_bytes() for p in base_folder.iterdir() if p.is_file()}
    problems = []  # every violation, so that a failure shows them all
    for commit in uploads["commits"]:
        where = f"in commit {commit['message']!r}"
        problems += [f"{path} uploaded {where}" for path in sorted(set(commit["files"]) - allowed)]
        problems += [f"{path} missing {where}" for path in sorted(allowed - set(commit["files"]))]
        for path, blob in commit["files"].items():
            if TOKEN.encode() in blob:
                problems.append(f"{path} {where} holds the hub token")
            if str(tmp_path).encode() in blob:
                problems.append(f"{path} {where} holds a local path")
            if base_files.get(path) == blob:
                continue  # a file of the base model, republished unchanged (e.g. its tokenizer's vocabulary)
            low = blob.lower()
            leaked = sorted(s for s in private if s.lower().encode() in low)
            if leaked:
                problems.append(f"{path} {where} holds forget-set text {leaked}")
    final = uploads["commits"][-1]["files"]
    card = final.get("README.md", b"").decode()
    # one digest of the forget set: the first 12 hex digits of the SHA-256 of its sorted distinct row ids
    digest = hashlib.sha256("\n".join(sorted({str(r["id"]) for r in data.forget})).encode()).hexdigest()[:12]
    split = "1 forget concept (names withheld)" if loader == "mmubench" else f"forget split `{forget_split}`"
    for text in (f"**{len(data.forget)} rows**", f"`{digest}`", split):
        if text not in card:
            problems.append(f"the card lacks {text!r}")
    if lora:  # PEFT records the absolute local path of the base model; the saved and uploaded config its name only
        for name, config in (("uploaded", final.get("adapter_config.json", b"{}")),
                             ("saved", (out / "adapter_config.json").read_bytes())):
            if json.loads(config).get("base_model_name_or_path") != "my-base":
                problems.append(f"the {name} adapter_config.json does not name the base model `my-base`")
    elif "_name_or_path" in json.loads(final.get("config.json", b"{}")):  # a full model's config.json: no path
        problems.append("the uploaded config.json records the base model's path")
    assert not problems, "\n".join(problems)
    # the console summary names no forgotten concept either
    printed = capsys.readouterr().out
    assert f"{trainer.method_name} on " in printed and not [s for s in private if s in printed]


def test_checkpoint_strategies_that_upload_whole_checkpoint_folders_are_refused(tmp_path):
    for strategy in ("checkpoint", "all_checkpoints"):
        with pytest.raises(ValueError, match=rf"hub_strategy='{strategy}' uploads whole checkpoint folders.*"
                                             r"hub_strategy='every_save'"):
            train_args(GAConfig, tmp_path, push_to_hub=True, hub_strategy=strategy, hub_model_id=REPO)
    assert train_args(GAConfig, tmp_path, hub_strategy="checkpoint").hub_strategy == "checkpoint"  # no push: fine


def test_base_model_name_in_saved_files_is_a_hub_id_or_a_folder_name():
    from unlearn_trainer.hub import public_base_model_name

    cache = "/home/alice/.cache/huggingface/hub/models--llava-hf--llava-1.5-7b-hf/snapshots/0123abcd"
    assert public_base_model_name(cache) == "llava-hf/llava-1.5-7b-hf"
    assert public_base_model_name("/home/alice/models/my-base/") == "my-base"
    assert public_base_model_name("llava-hf/llava-1.5-7b-hf") == "llava-hf/llava-1.5-7b-hf"
    assert public_base_model_name("/home/alice/models/my-base", finetuned_from="org/base") == "org/base"
    assert public_base_model_name(None) is None


def test_fp16_that_would_not_run_is_refused_and_the_card_states_what_ran(tmp_path):
    import torch

    from unlearn_trainer.toyworld import ToyWorld

    rows = ToyWorld().splits(0.10)["forget_train"][:2]
    model, processor = tiny_model_and_processor("llava")
    # use_cpu: on CPU, accelerate keeps mixed_precision="fp16" but runs no autocast, i.e. trains in fp32
    with pytest.raises(ValueError, match=r"fp16=True but fp16 mixed precision does not run on this cpu device.*"
                                         r"Drop --fp16"):
        GATrainer(model=model, args=train_args(GAConfig, tmp_path, fp16=True, use_cpu=True), forget_dataset=rows,
                  processing_class=processor)
    bf16 = GATrainer(model=model, args=train_args(GAConfig, tmp_path, bf16=True, use_cpu=True), forget_dataset=rows,
                     processing_class=processor)
    assert "| `precision` | `bf16 mixed precision; float32 trained weights` |" in render_model_card(bf16)
    # no mixed precision, but bfloat16 weights: the card says what ran, not "fp32" read off the arguments
    half = GATrainer(model=model.to(torch.bfloat16), args=train_args(GAConfig, tmp_path, use_cpu=True),
                     forget_dataset=rows, processing_class=processor)
    assert "| `precision` | `no mixed precision; bfloat16 trained weights` |" in render_model_card(half)


def test_a_checkpoint_without_weights_is_skipped_not_pushed_whole(tmp_path, uploads, caplog):
    from unlearn_trainer.toyworld import ToyWorld

    model, processor = tiny_model_and_processor("llava")
    rows = ToyWorld().splits(0.10)["forget_train"][:2]
    args = train_args(GAConfig, tmp_path, push_to_hub=True, hub_model_id=REPO, hub_token=TOKEN)
    trainer = GATrainer(model=model, args=args, forget_dataset=rows, processing_class=processor)
    checkpoint = tmp_path / "out" / "checkpoint-1"  # e.g. a sharded DeepSpeed / FSDP checkpoint: no safetensors
    checkpoint.mkdir(parents=True)
    with caplog.at_level("WARNING", logger="unlearn_trainer.hub"):
        trainer._push_from_checkpoint(str(checkpoint))
    trainer._finish_current_push()
    assert uploads["commits"] == [] and "checkpoint-1 not pushed: No safetensors weights" in caplog.text
