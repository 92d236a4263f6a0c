"""bench/gpu_all.sh, the GPU script, as a dry run on CPU with the tiny models: every check runs through
bench/full_size.py and reports its figures, and the combined projection covers every stage."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_gpu_all_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "TINY": "1", "OUT": str(tmp_path), "PYTHON": sys.executable,
           "PYTHONPATH": ROOT}
    done = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_all.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for check in ("models_features", "features", "translate", "parse", "train", "build"):
        assert f"== {check}: exit 0" in done.stdout, done.stdout
    combined = json.load(open(tmp_path / "all.json"))
    phases = combined["phases"]
    assert set(phases) == {"features", "views", "translate", "parse", "train", "build"}
    assert not [name for name, row in phases.items() if "error" in row]
    assert phases["views"]["fp32"]["records_per_image"] == 14 and phases["features"]["flops_per_image"] > 0
    assert phases["views"]["flops_per_image"] > phases["features"]["flops_per_image"]
    assert phases["train"]["stage1"]["trainer_samples_per_s"] > 0 and phases["build"]["balanced"]
    projection = combined["projection"]
    assert set(projection["hours"]) == {"features_and_14_views", "translate", "parse"}
    assert projection["corpus_hours"] == pytest.approx(sum(projection["hours"].values()), abs=0.05)
    assert projection["disk_gb"]["image"] > 0
