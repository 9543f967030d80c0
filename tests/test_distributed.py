"""Several processes unlearn like one: DDP, FSDP2 and DeepSpeed ZeRO-3 on CPU (gloo), against a 1-process baseline.

The runs are in ``tests/_distributed_worker.py`` (see its docstring for the backends, how FSDP and DeepSpeed are
made to run on CPU, and the data order). The three 2-process launches (``torchrun --standalone --nproc_per_node 2``)
start together in the background while the 1-process baseline runs in this process; each launch has a time limit,
so a hang fails the test instead of blocking CI. The comparison is valid because the global batch is the same
(2 x 1 row vs 1 x 2 rows), the rows of every step are the same (checked), the losses are means over samples and
gradients are averaged over ranks. The method runs use SGD; the example run (``run_method``, ``cli_npo``) keeps its
default AdamW, whose first steps (~lr * sign(grad)) could amplify float noise in near-zero gradients, and still
agrees to ~1e-8 here.

DeepSpeed is not a dependency: its tests need it installed (``pip install --no-build-isolation deepspeed``) and fail
without it.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import _distributed_worker as worker
import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).resolve().parent / "_distributed_worker.py"
LAUNCH_TIMEOUT = 240  # seconds per 2-process launch; the three run side by side
LAUNCHES = {"ddp": worker.SCENARIOS, "fsdp": ("npo_lora", "npo_full", "cli_npo", "idk_dpo_lora"),
            "deepspeed": ("npo_lora", "npo_full", "npo_full_copy", "cli_npo", "idk_dpo_lora")}
TRAINED = ("npo_lora", "ga_gd_lora", "npo_full", "idk_dpo_lora")
WEIGHTS = {"npo_lora": "adapter_model.safetensors", "ga_gd_lora": "adapter_model.safetensors",
           "npo_full": "model.safetensors", "cli_npo": "adapter_model.safetensors",
           "idk_dpo_lora": "adapter_model.safetensors"}


class Launch:
    """One background ``torchrun`` of the worker; ``result()`` waits (bounded) and returns the output folder."""

    def __init__(self, backend: str, assets: dict, out: Path):
        self.backend, self.out = backend, out
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
               "--backend", backend, "--scenarios", ",".join(LAUNCHES[backend]), "--out", str(out),
               "--model", assets["model"], "--data", assets["data"]]
        out.mkdir(parents=True, exist_ok=True)
        self.log = out / "launch.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._checked = None

    def result(self) -> Path:
        if self._checked is None:
            try:
                code = self.proc.wait(timeout=LAUNCH_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the launch's own session: torchrun and its 2 workers
                self.proc.wait()
                code = f"timeout after {LAUNCH_TIMEOUT}s (a collective hung?)"
            self._checked = code
        if self._checked != 0:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
            pytest.fail(f"2-process {self.backend} launch failed ({self._checked}):\n{tail}")
        return self.out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    assets = worker.make_assets(root / "assets")
    deepspeed_available = importlib.util.find_spec("deepspeed") is not None
    launches = {b: Launch(b, assets, root / b) for b in LAUNCHES if b != "deepspeed" or deepspeed_available}
    try:
        worker.run_scenarios(worker.SCENARIOS, assets, root / "single")
        yield {"single": root / "single", "launches": launches}
    finally:
        for launch in launches.values():
            launch.stop()


def reports(folder: Path, scenario: str) -> list[dict]:
    return [json.loads((folder / scenario / f"report_rank{r}.json").read_text()) for r in range(2)]


def single(runs, scenario: str) -> dict:
    return json.loads((runs["single"] / scenario / "report_rank0.json").read_text())


def launched(runs, backend: str) -> Path:
    if backend not in runs["launches"]:
        pytest.fail("DeepSpeed is not installed: pip install --no-build-isolation deepspeed (CPU: no ops are built).")
    return runs["launches"][backend].result()


def weights(folder: Path, scenario: str) -> dict[str, torch.Tensor]:
    """The saved adapter, or the saved full model as from_pretrained loads it (a ZeRO-3 save names the keys of
    LLaVA's legacy checkpoint layout differently; both load to the same model)."""
    path = folder / scenario / "rank0"
    if WEIGHTS[scenario] == "model.safetensors":
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(str(path)).state_dict()
    return load_file(str(path / WEIGHTS[scenario]))


def initial_weights(runs) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(str(runs["single"].parent / "assets" / "model")).state_dict()


def assert_same_weights(one: dict, two: dict, moved_from: dict | None = None):
    """Equal within float tolerance, and training moved them far more than that tolerance."""
    assert one.keys() == two.keys()
    diff = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert diff < 1e-5, f"1 vs 2 processes differ by {diff}"
    if moved_from is None:  # LoRA: B starts at zero
        moved = max(float(v.abs().max()) for k, v in one.items() if "lora_B" in k)
    else:
        moved = max(float((one[k] - moved_from[k]).abs().max()) for k in one)
    assert moved > 1e-2, f"training barely moved the weights ({moved}); the comparison would prove nothing"


def losses(report: dict, key: str = "loss") -> list[float]:
    return [h[key] for h in report["log_history"] if key in h and "train_runtime" not in h]


@pytest.mark.parametrize("scenario", worker.SCENARIOS)
def test_ranks_split_every_global_batch_of_one_process(runs, scenario):
    base = single(runs, scenario)
    r0, r1 = reports(launched(runs, "ddp"), scenario)
    assert base["world_size"] == 1 and base["distributed_type"] == "DistributedType.NO"
    assert r0["world_size"] == r1["world_size"] == 2 and r0["distributed_type"] == "DistributedType.MULTI_CPU"
    assert len(r0["seen_steps"]) == len(base["seen_steps"]) > 0
    for step, (a, b, whole) in enumerate(zip(r0["seen_steps"], r1["seen_steps"], base["seen_steps"])):
        assert len(a) == len(b) == 1 and len(whole) == 2
        assert sorted(a + b) == sorted(whole), f"step {step}: ranks saw {a} + {b}, one process saw {whole}"


@pytest.mark.parametrize("scenario", TRAINED + ("cli_npo",))
def test_two_processes_unlearn_like_one(runs, scenario):
    folder = launched(runs, "ddp")
    r0, _ = reports(folder, scenario)
    base = single(runs, scenario)
    moved_from = initial_weights(runs) if WEIGHTS[scenario] == "model.safetensors" else None
    assert_same_weights(weights(runs["single"], scenario), weights(folder, scenario), moved_from)
    # every logged term is the mean over both ranks (UnlearnTrainer.log reduces them), equal to the 1-process value
    for key in ("loss", "npo_loss", "forget_nll", "retain_nll", "dpo_loss"):
        assert losses(r0, key) == pytest.approx(losses(base, key), abs=1e-5)
    assert losses(r0)


@pytest.mark.parametrize("scenario", ["npo_lora", "npo_full"])
def test_each_rank_caches_the_reference_of_exactly_its_rows(runs, scenario):
    base = single(runs, scenario)
    ranks = reports(launched(runs, "ddp"), scenario)
    (name,) = base["cache"]
    for r in ranks:
        seen = {i for step in r["seen_steps"] for i in step}
        assert set(r["cache"][name]) == {str(i) for i in seen}
        for k, v in r["cache"][name].items():
            assert v == pytest.approx(base["cache"][name][k], abs=1e-4)
    # the case that hangs if ranks decide alone: one rank's rows cached, the other's not, in the same step
    hits = [[lookup["local_hit"] for lookup in r["cache_lookups"]] for r in ranks]
    assert any(a != b for a, b in zip(*hits)), f"no step with one rank cached and the other not: {hits}"


def test_only_the_main_process_evaluates_writes_and_pushes(runs):
    r0, r1 = reports(launched(runs, "ddp"), "cli_npo")
    assert r0["is_world_process_zero"] and r0["should_save"]
    assert not r1["is_world_process_zero"] and not r1["should_save"]
    expected = {"adapter_model.safetensors", "adapter_config.json", "README.md", "training_args.json", "results.json",
                "unlearning_eval.json", "unlearning_eval.md"}
    assert expected <= set(r0["files"])
    assert expected - {"adapter_model.safetensors"} <= {Path(w).name for w in r0["writes"]}
    assert r1["files"] == [] and r1["writes"] == []  # rank 1 wrote nothing at all
    assert r0["eval_labels"] == ["before", "after"] and r1["eval_labels"] == []
    assert [h["unlearning_eval"] for h in r0["log_history"] if "unlearning_eval" in h] == ["before", "after"]
    assert not any("unlearning_eval" in h for h in r1["log_history"])
    assert [c.split()[0] for c in r0["uploads"]] == ["create_repo", "commit"]
    assert "adapter_model.safetensors" in r0["uploads"][1] and r1["uploads"] == []
    results = json.loads((launched(runs, "ddp") / "cli_npo" / "rank0" / "results.json").read_text())
    assert results["method"] == "npo" and set(results["evaluation"]) == {"before", "after"}


@pytest.mark.parametrize("backend", ["fsdp", "deepspeed"])
@pytest.mark.parametrize("scenario", ["npo_lora", "npo_full"])
def test_sharded_training_unlearns_like_one_process(runs, backend, scenario):
    folder = launched(runs, backend)
    r0, r1 = reports(folder, scenario)
    base = single(runs, scenario)
    assert r0["distributed_type"] == f"DistributedType.{'FSDP' if backend == 'fsdp' else 'DEEPSPEED'}"
    assert r0["sharded_parameters"] > 0  # FSDP2 DTensors / ZeRO-3 partitions: the model really is sharded
    if scenario == "npo_full":  # the frozen reference copy is sharded as well (TRL's prepare_fsdp / prepare_deepspeed)
        assert r0["reference_sharded_parameters"] == r0["sharded_parameters"]
    assert_same_weights(weights(runs["single"], scenario), weights(folder, scenario),
                        initial_weights(runs) if scenario == "npo_full" else None)
    assert losses(r0) == pytest.approx(losses(base), abs=1e-5)
    (name,) = base["cache"]
    for r in (r0, r1):
        seen = {str(i) for step in r["seen_steps"] for i in step}
        assert set(r["cache"][name]) == seen
        for k, v in r["cache"][name].items():
            assert v == pytest.approx(base["cache"][name][k], abs=1e-4)
    assert r1["files"] == []


@pytest.mark.parametrize("backend", ["fsdp", "deepspeed"])
def test_sharded_idk_dpo_unlearns_like_one_process(runs, backend):
    """IdkDPO runs several forwards before one backward (under ZeRO-3 the shared prompt and both answers; FSDP
    frees a layer's gathered weights after its backward, so there it takes the split passes): same adapter, same
    DPO losses as one process."""
    folder = launched(runs, backend)
    r0, r1 = reports(folder, "idk_dpo_lora")
    base = single(runs, "idk_dpo_lora")
    assert r0["sharded_parameters"] > 0
    assert_same_weights(weights(runs["single"], "idk_dpo_lora"), weights(folder, "idk_dpo_lora"))
    for key in ("loss", "dpo_loss", "retain_nll"):
        assert losses(r0, key) == pytest.approx(losses(base, key), abs=1e-5) and losses(base, key)
    assert r1["files"] == []


def test_zero3_refuses_to_copy_a_partitioned_model(runs):
    r0, r1 = reports(launched(runs, "deepspeed"), "npo_full_copy")
    assert r0["error"] and "ref_model=" in r0["error"] and "ZeRO-3" in r0["error"]
    assert r1["error"] == r0["error"]


def test_a_multi_process_launch_trainer_cannot_see_is_refused(monkeypatch, tmp_path):
    """torchrun on a machine without GPUs and without use_cpu: each rank would unlearn alone, so it is refused."""
    from unlearn_trainer import GAConfig, GATrainer
    from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows

    monkeypatch.setenv("WORLD_SIZE", "2")
    model, processor = tiny_model_and_processor("llava")
    args = GAConfig(output_dir=str(tmp_path), report_to="none", max_steps=1)
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE=2 .*use_cpu=True"):
        GATrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2), processing_class=processor)
