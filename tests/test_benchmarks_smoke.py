"""Smoke test of benchmarks/speed.py: a --quick run on the tiny model writes well-formed JSON and Markdown.

A benchmark, not a test of speed: nothing here asserts a timing or a ratio's value.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["sft", "ga", "ga_gd", "ga_gd_sum", "npo", "npo_recompute", "viker", "viker_k1"]


def test_speed_quick_tiny_writes_json_and_markdown(tmp_path):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--models", "tiny", "--steps", "2",
           "--methods", ",".join(METHODS[1:]), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    results = json.loads((tmp_path / "speed.json").read_text())
    assert {"command", "date", "threads", "loadavg_start", "loadavg_end", "cpus"} <= set(results["meta"])
    assert results["meta"]["quick"] is True
    assert list(results["models"]) == ["tiny"]
    tiny = results["models"]["tiny"]
    assert {"total_parameters", "batch_size", "steps", "warmup_steps"} <= set(tiny["info"])
    assert list(tiny["methods"])[0] == "sft" and sorted(tiny["methods"]) == sorted(METHODS)  # the subset, SFT first
    for name, r in tiny["methods"].items():
        assert "error" not in r, (name, r.get("error"), r.get("traceback"))
        assert r["step"]["n"] == 2 and 0 < r["step"]["p25_s"] <= r["step"]["median_s"] <= r["step"]["p75_s"], name
        assert r["x_sft"] > 0 and r["one_off"]["construct_s"] > 0 and r["one_off"]["warmup_steps"] >= 2, name
        mem = r["memory"]
        assert "error" not in mem, (name, mem)
        assert 0 < mem["base_kb"] <= mem["loaded_kb"] and mem["steady_above_base_kb"] > 0, (name, mem)
    sft = tiny["methods"]["sft"]
    assert sft["x_sft"] == 1.0 and sft["memory"]["x_sft_above_base"] == 1.0
    for name in ("ga", "npo", "viker", "viker_k1"):  # targeted rows carry limits and verdicts
        r = tiny["methods"][name]
        assert r["passes"] == 1 and r["x_limit"] == r["x_sft"] and isinstance(r["time_ok"], bool), name
        assert isinstance(r["memory_ok"], bool), name
    rec = tiny["methods"]["npo_recompute"]
    assert rec["passes"] is None and "time_ok" not in rec and rec["x_cached"] > 0
    assert rec["reference_per_step_s"] > 0 and tiny["methods"]["npo"]["one_off"]["reference_fill_s"] > 0
    assert tiny["methods"]["viker"]["reference_cache_bytes"] > 0

    md = (tmp_path / "speed.md").read_text()
    assert md.startswith("# Speed and memory") and "## tiny" in md
    main_rows = [line for line in md.splitlines() if line.startswith("| ") and line.count("|") == 14]
    assert [row.split("|")[1].strip() for row in main_rows[1:]] == ["sft", "ga", "ga_gd", "npo", "viker"]
    assert tiny["methods"]["ga_gd"]["passes"] == 2 and tiny["methods"]["ga_gd_sum"]["passes"] is None
    assert "\n| ga_gd | " in md.split("One backward per trainable pass")[1]
    assert "| npo | " in md.split("Reference cached vs recomputed")[1]
    k_table = md.split("ViKeR as k")[1]
    assert "\n| 1 | " in k_table and "\n| 5 | " in k_table
