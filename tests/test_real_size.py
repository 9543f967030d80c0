"""benchmarks/real_size.py in CPU mode on LLaVA-1.5-7B's real WIDTH (hidden 4096, vocabulary 32064, CLIP-L 1024,
16 heads, 14 px patches), 1 decoder + 2 vision layers, bf16, sdpa, gradient checkpointing off and on: SFT, a
two-pass method (GA+GD) and SGPVT (attention capture) build, step and measure without error at real width.

A benchmark, not a test of speed: nothing here asserts a timing or a ratio's value.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_real_size_cpu_mode_llava_real_width(tmp_path):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "real_size.py"), "--device", "cpu", "--families",
           "llava-1.5-7b", "--methods", "ga_gd,sgpvt", "--gc", "off,on", "--steps", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = json.loads((tmp_path / "real_size_cpu.json").read_text())
    assert results["meta"]["cpu_mode"] is True and results["meta"]["dtype"] == "bf16"
    configs = results["configurations"]
    assert list(configs) == ["llava-1.5-7b, sdpa, gradient checkpointing off",
                             "llava-1.5-7b, sdpa, gradient checkpointing on"]
    for key, cr in configs.items():
        assert "error" not in cr, (key, cr.get("error"), cr.get("traceback"))
        info = cr["info"]
        assert info["vocab_size"] == 32064 and info["total_parameters"] > 4e8, info  # real width, one layer
        assert list(cr["methods"]) == ["sft", "ga_gd", "sgpvt"], key
        for name, r in cr["methods"].items():
            assert "error" not in r, (key, name, r.get("error"), r.get("traceback"))
            assert r["step"]["n"] == 1 and r["step"]["median_s"] > 0, (key, name)
            assert r["losses_finite"] and math.isfinite(r["last_loss"]), (key, name, r["last_loss"])
            assert r["image_tokens_per_picture"] == 64, (key, name)  # (112 / 14)^2 in CPU mode
            mem = r["memory"]
            assert "error" not in mem and mem["steady_above_base_kb"] > 0, (key, name, mem)
    md = (tmp_path / "real_size_cpu.md").read_text()
    assert "| sgpvt | 2 |" in md and "gradient checkpointing on" in md


def test_gpu_run_script_in_cpu_mode(tmp_path):
    """benchmarks/gpu/run.sh end to end without a GPU (--cpu): install steps, checks, real_size.py, JSON + Markdown."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHON=sys.executable)
    cmd = ["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), str(tmp_path), "--cpu", "--families", "smolvlm-256m",
           "--methods", "ga", "--gc", "off", "--steps", "1", "--no-memory"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "real_size_cpu.json").read_text())
    (cr,) = results["configurations"].values()
    assert sorted(cr["methods"]) == ["ga", "sft"] and all("step" in r for r in cr["methods"].values()), cr
    assert (tmp_path / "real_size_cpu.md").is_file() and (tmp_path / "run.log").is_file()
