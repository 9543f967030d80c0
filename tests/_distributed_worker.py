"""Worker for tests/test_distributed.py: unlearning runs whose results are compared across process counts.

Launched as ``python -m torch.distributed.run --nproc_per_node 2 tests/_distributed_worker.py --backend ddp ...``,
or called in-process through :func:`run_scenarios` for the 1-process baseline. The global batch is fixed
(``GLOBAL_BATCH`` = 2): per-device batch = 2 / world size.

Backends, all over gloo on CPU:

- ``ddp``: ``use_cpu=True``, which is what makes accelerate choose multi-CPU DDP (without it, on a machine
  without GPUs, every torchrun rank would train alone; ``UnlearnTrainer`` refuses that launch).
- ``fsdp``: FSDP2 (``fsdp=True`` + ``FSDP_CONFIG``). accelerate enables FSDP only on GPU-like devices, so
  :func:`emulate_fsdp_on_cpu` switches its state to FSDP after it chose multi-CPU; PyTorch's ``fully_shard`` itself
  runs on CPU, so the model really is sharded (DTensor parameters) and gathered collectively in every forward.
- ``deepspeed``: ZeRO-3 (``DS_CONFIG``; DeepSpeed's CPU accelerator uses gloo without oneCCL). accelerate gives a
  DeepSpeed run no process group on CPU, so :func:`emulate_deepspeed_on_cpu` makes it pick gloo.

Each scenario writes ``<out>/<scenario>/report_rank<r>.json`` with what that rank saw and did: the forget rows of
every step, whether its reference cache already held them, its cache (keys and values), its log history, what it
evaluated and uploaded, how many parameters are sharded. Every rank trains with its own ``output_dir``
(``<scenario>/rank<r>``) so that files can be attributed to the rank that wrote them; a Python audit hook also
records every file a rank opens for writing under ``--out`` (safetensors are written by Rust, not seen there, but
they land in the rank's own folder).

Data order: forget sets of 4 rows, 2 rows per global step, 4 steps (2 epochs). Trainer's seeded sampler
(accelerate's ``SeedableRandomSampler``) draws the same permutation for 1 and 2 processes, and 2 processes split
each global batch of 2 into one row per rank, so every step sees the same 2 rows in both runs; the reports record
them and the test checks it. ``data_seed=3`` is chosen so that in the second epoch one rank already cached its row
while the other has not (the case where ranks could fall out of step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

GLOBAL_BATCH = 2
SCENARIOS = ("npo_lora", "ga_gd_lora", "npo_full", "cli_npo", "idk_dpo_lora")
BACKENDS = ("ddp", "fsdp", "deepspeed")
# FSDP2 (fully_shard); a full state dict, so that rank 0 saves the usual safetensors adapter / model.
FSDP_CONFIG = {"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
               "state_dict_type": "FULL_STATE_DICT"}
DS_CONFIG = {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
             "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
             "train_batch_size": "auto", "gradient_clipping": "auto"}


def make_assets(root: str | Path) -> dict[str, str]:
    """Save the tiny LLaVA model + processor and a forget/retain dataset (4 rows each) under ``root``."""
    import datasets

    from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows

    root = Path(root)
    model, processor = tiny_model_and_processor("llava", seed=0)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "question": datasets.Value("string"), "answer": datasets.Value("string")})
    datasets.DatasetDict({
        "forget": datasets.Dataset.from_list(tiny_vqa_rows(4), features=features),
        "retain": datasets.Dataset.from_list(tiny_vqa_rows(4, seed=2), features=features),
    }).save_to_disk(str(root / "data"))
    return {"model": str(root / "model"), "data": str(root / "data")}


def _recording(trainer_cls):
    """``trainer_cls`` that records each step's forget rows and whether its own reference cache held them."""

    class Recording(trainer_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen_steps: list[list[int]] = []
            self.cache_lookups: list[dict] = []

        def training_step(self, model, inputs, num_items_in_batch=None):
            if "forget" in inputs:
                self.seen_steps.append([int(i) for i in inputs["forget"]["sample_index"]])
            return super().training_step(model, inputs, num_items_in_batch)

        def cached_reference(self, name, model, batch, compute):
            keys = [int(i) for i in batch["sample_index"]]
            self.cache_lookups.append({"name": name, "keys": keys,
                                       "local_hit": all(k in self._ref_cache[name] for k in keys)})
            return super().cached_reference(name, model, batch, compute)

    Recording.__name__ = trainer_cls.__name__
    return Recording


def _train_args(config_cls, output_dir: str, world_size: int, backend: str, **overrides):
    kwargs = dict(output_dir=output_dir, max_steps=4, per_device_train_batch_size=GLOBAL_BATCH // world_size,
                  learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", report_to="none", logging_steps=1,
                  save_strategy="no", disable_tqdm=True, seed=0, data_seed=3, dataloader_pin_memory=False,
                  use_cpu=backend != "deepspeed")  # use_cpu turns DeepSpeed off
    if backend == "fsdp":
        kwargs.update(fsdp=True, fsdp_config=dict(FSDP_CONFIG))
    elif backend == "deepspeed":
        kwargs.update(deepspeed=json.loads(json.dumps(DS_CONFIG)))
    kwargs.update(overrides)
    return config_cls(**kwargs)


def _trainer(scenario: str, assets: dict, output_dir: str, world_size: int, backend: str, **extra):
    import datasets
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from unlearn_trainer import GAConfig, GATrainer, IdkDPOConfig, IdkDPOTrainer, NPOConfig, NPOTrainer
    from unlearn_trainer.testing import lora_config_for

    ds = datasets.load_from_disk(assets["data"])
    # The training arguments come first: under ZeRO-3 they make from_pretrained partition the model as it loads.
    if scenario == "npo_lora":
        cls, args = NPOTrainer, _train_args(NPOConfig, output_dir, world_size, backend)
        data = dict(forget_dataset=ds["forget"], peft_config=lora_config_for())
    elif scenario == "ga_gd_lora":
        cls, args = GATrainer, _train_args(GAConfig, output_dir, world_size, backend, variant="ga_gd")
        data = dict(forget_dataset=ds["forget"], retain_dataset=ds["retain"], peft_config=lora_config_for())
    elif scenario == "idk_dpo_lora":  # several forwards before one backward: the shared prompt and both answers
        cls, args = IdkDPOTrainer, _train_args(IdkDPOConfig, output_dir, world_size, backend,
                                               refusals=["i do not know ."], beta=1.0)
        data = dict(forget_dataset=ds["forget"], retain_dataset=ds["retain"], peft_config=lora_config_for())
    elif scenario == "npo_full":  # no PEFT: the reference is a frozen copy, sharded like the model (as TRL does)
        cls, args = NPOTrainer, _train_args(NPOConfig, output_dir, world_size, backend, learning_rate=0.05)
        data = dict(forget_dataset=ds["forget"])
        if backend == "deepspeed":  # ZeRO-3 partitions at load time: the reference is a second load, not a copy
            data["ref_model"] = AutoModelForImageTextToText.from_pretrained(assets["model"])
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    # No seeding here: UnlearnTrainer seeds the LoRA initialisation with args.seed, whatever this process did before.
    model = AutoModelForImageTextToText.from_pretrained(assets["model"])
    processor = AutoProcessor.from_pretrained(assets["model"])
    return _recording(cls)(model=model, args=args, processing_class=processor, **{**data, **extra})


def _cli_trainer(assets: dict, output_dir: str, world_size: int, backend: str):
    """``run_method`` as ``examples/run_npo.py`` runs it (evaluation callback, results.json, adapter, card): the
    trainer and its evaluation callback."""
    from unlearn_trainer import NPOConfig, NPOTrainer
    from unlearn_trainer.cli import run_method

    argv = ["--model_name_or_path", assets["model"], "--dataset", assets["data"], "--forget_split", "forget",
            "--retain_split", "retain", "--max_steps", "2", "--per_device_train_batch_size",
            str(GLOBAL_BATCH // world_size), "--output_dir", output_dir, "--max_new_tokens", "3",
            "--max_eval_rows", "2", "--logging_steps", "1", "--disable_tqdm", "true", "--seed", "0",
            "--dataloader_pin_memory", "false", "--learning_rate", "1e-2"]
    if backend == "deepspeed":
        argv += ["--deepspeed", json.dumps(DS_CONFIG)]
    else:
        argv += ["--use_cpu", "true"]
    if backend == "fsdp":
        argv += ["--fsdp", "--fsdp_config", json.dumps(FSDP_CONFIG)]
    return run_method(_recording(NPOTrainer), NPOConfig, argv=argv)


class _HubRecorder:
    """Replaces the Hub client's network calls by recorders (no Hub is reachable); ``upload_folder`` runs."""

    def __init__(self):
        self.calls: list[str] = []

    def __enter__(self):
        import huggingface_hub.hf_api as hf_api_module
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import CommitInfo, RepoUrl

        calls = self.calls

        def create_repo(api, repo_id, **kwargs):
            calls.append(f"create_repo {repo_id}")
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_commit(api, repo_id, operations, **kwargs):
            calls.append(f"commit {repo_id} " + " ".join(sorted(op.path_in_repo for op in operations)))
            return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}", commit_message="",
                              commit_description="", oid="0" * 40)

        self._saved = {k: getattr(HfApi, k) for k in ("create_repo", "create_commit", "_validate_yaml")}
        HfApi.create_repo, HfApi.create_commit = create_repo, create_commit
        HfApi._validate_yaml = lambda api, content, **kwargs: None
        self._xet = hf_api_module.is_xet_available
        hf_api_module.is_xet_available = lambda: False
        return self

    def __exit__(self, *exc):
        import huggingface_hub.hf_api as hf_api_module
        from huggingface_hub import HfApi

        for k, v in self._saved.items():
            setattr(HfApi, k, v)
        hf_api_module.is_xet_available = self._xet


def _sharded_count(model) -> int:
    """Parameters sharded across processes: FSDP2 DTensors or DeepSpeed ZeRO-3 partitions."""
    return sum(type(p).__name__ == "DTensor" or hasattr(p, "ds_id") for p in model.parameters())


def _report(trainer, scenario_dir: Path, rank: int, writes: list[str], uploads: list[str] | None, eval_cb=None):
    import torch

    cache = {name: {str(k): (v.tolist() if torch.is_tensor(v) else v) for k, v in c.items()}
             for name, c in trainer._ref_cache.items()}
    report = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "is_world_process_zero": trainer.is_world_process_zero(),
        "should_save": trainer.args.should_save,
        "seen_steps": trainer.seen_steps,
        "cache_lookups": trainer.cache_lookups,
        "cache": cache,
        "log_history": trainer.state.log_history,
        "eval_labels": [h["label"] for h in eval_cb.history] if eval_cb is not None else None,
        "writes": sorted(set(writes)),
        "uploads": uploads,
        "sharded_parameters": _sharded_count(trainer.model_wrapped),
        "reference_sharded_parameters": _sharded_count(trainer._ref_model) if trainer._ref_model is not None else None,
        "files": sorted(p.name for p in Path(trainer.args.output_dir).glob("*")),
    }
    with open(scenario_dir / f"report_rank{rank}.json", "w") as f:
        json.dump(report, f, indent=1)


def emulate_fsdp_on_cpu() -> None:
    """Let accelerate run FSDP over gloo on CPU (test only).

    accelerate 1.15 selects ``DistributedType.FSDP`` only for GPU-like devices (``AcceleratorState.__init__``);
    with ``use_cpu=True`` an FSDP plugin is ignored and the run is plain multi-CPU DDP. After accelerate has chosen
    multi-CPU, switch its state to FSDP with the plugin Trainer passed.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = init


def emulate_deepspeed_on_cpu() -> None:
    """Let accelerate run DeepSpeed over gloo on CPU (test only).

    accelerate 1.15 chooses a process-group backend only for GPU-like devices or ``cpu=True``
    (``PartialState._prepare_backend``), and ``use_cpu=True`` turns DeepSpeed off: on CPU each rank would run alone.
    Here the backend choice returns gloo, after which accelerate initialises DeepSpeed as on GPUs.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    original = PartialState._prepare_backend

    def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        backend, distributed_type = original(self, cpu, sagemaker_dp, backend)
        if backend is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return "gloo", DistributedType.MULTI_CPU
        return backend, distributed_type

    PartialState._prepare_backend = prepare_backend


def run_scenarios(scenarios, assets: dict, out: str | Path, backend: str = "ddp", writes: list[str] | None = None):
    """Run ``scenarios`` in this process (one rank of a torchrun launch, or a single process)."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    writes = writes if writes is not None else []
    for scenario in scenarios:
        scenario_dir = Path(out) / scenario
        scenario_dir.mkdir(parents=True, exist_ok=True)
        output_dir = str(scenario_dir / f"rank{rank}")
        start = len(writes)
        if scenario == "npo_full_copy":  # ZeRO-3, no PEFT, no ref_model=: a copy of the partitioned model is refused
            try:
                _trainer("npo_full", assets, output_dir, world_size, backend, ref_model=None)
                error = None
            except ValueError as err:
                error = str(err)
            (scenario_dir / f"report_rank{rank}.json").write_text(json.dumps({"rank": rank, "error": error}))
            continue
        if scenario == "cli_npo":
            trainer, eval_cb = _cli_trainer(assets, output_dir, world_size, backend)
            with _HubRecorder() as hub:  # every rank calls push_to_hub, as a script would
                trainer.args.hub_model_id = "someone/npo-distributed"
                trainer.push_to_hub()
            uploads = hub.calls
        else:
            trainer = _trainer(scenario, assets, output_dir, world_size, backend)
            trainer.train()
            trainer.save_model(output_dir)
            uploads, eval_cb = None, None
        if trainer.accelerator.num_processes > 1:
            trainer.accelerator.wait_for_everyone()
        _report(trainer, scenario_dir, rank, writes[start:], uploads, eval_cb)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--backend", choices=BACKENDS, default="ddp")
    a = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    root = os.path.realpath(a.out)
    writes: list[str] = []

    def audit(event, args):  # every file this rank opens for writing under --out (reports excepted)
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and args[1] is not None:
            mode, path = str(args[1]), os.path.realpath(os.fsdecode(args[0]))
            if any(c in mode for c in "wax+") and path.startswith(root) and "report_rank" not in path:
                writes.append(os.path.relpath(path, root))

    sys.addaudithook(audit)
    if a.backend == "fsdp":
        emulate_fsdp_on_cpu()
    elif a.backend == "deepspeed":
        emulate_deepspeed_on_cpu()
    run_scenarios(a.scenarios.split(","), {"model": a.model, "data": a.data}, a.out, a.backend, writes)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
    # Every report is written and the process group destroyed. Skip the interpreter's teardown: there, native threads
    # of DeepSpeed's CPU shared-memory comm op have aborted a finished rank ("terminate called without an active
    # exception", exit -6, seen once in a full CI run), which would fail a launch whose work had succeeded.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
