"""Both examples run (CPU path in CI), and the checkpoint loader reads one layer's router from safetensors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script,experts", [("gpt_oss_20b.py", 32), ("gpt_oss_120b.py", 128)])
def test_example_runs(script, experts, tmp_path):
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, str(EXAMPLES / script), "--tokens", "0,1,7,64", "--json", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"N={experts} experts, K=2880" in r.stdout and "all checks passed" in r.stdout
    rows = json.loads(out.read_text())
    assert [row["M"] for row in rows] == [0, 1, 7, 64]
    for row in rows:
        assert row["pass"] and row["max_err"] < 0.05 and row["top4_agree"] >= 0.9


def test_example_loads_router_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 64, generator=g).to(torch.bfloat16)
    b = torch.randn(8, generator=g).to(torch.bfloat16)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file({"model.layers.3.mlp.router.weight": w, "model.layers.3.mlp.router.bias": b,
               "model.layers.3.mlp.experts.gate_up_proj": torch.zeros(2, 2)}, str(ckpt / "model-00001.safetensors"))
    sys.path.insert(0, str(EXAMPLES))
    try:
        import router_demo
    finally:
        sys.path.pop(0)
    lw, lb = router_demo.load_router(ckpt, 3)
    assert torch.equal(lw, w) and torch.equal(lb, b)
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, str(EXAMPLES / "gpt_oss_20b.py"), "--checkpoint", str(ckpt), "--layer", "3",
                        "--tokens", "5", "--json", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "N=8 experts, K=64 hidden" in r.stdout
    assert json.loads(out.read_text())[0]["top4_agree"] >= 0.8
    r = subprocess.run([sys.executable, str(EXAMPLES / "gpt_oss_20b.py"), "--checkpoint", str(ckpt), "--layer", "9"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and "no model.layers.9.mlp.router.weight" in r.stderr
    r = subprocess.run([sys.executable, str(EXAMPLES / "gpt_oss_20b.py"), "--checkpoint", str(tmp_path / "missing")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and "no such file or directory" in r.stderr and "Traceback" not in r.stderr
