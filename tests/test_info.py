"""`python -m cutlass_router info`: environment, toolkit, what ships, and which kernel each model size takes."""
import subprocess
import sys

from cutlass_router import dispatch, info, manifest, models, prebuilt


def test_info_command_names_every_model_rung_and_its_source():
    out = subprocess.run([sys.executable, "-m", "cutlass_router", "info"], capture_output=True, text=True,
                         check=True).stdout
    assert f"shipped in the package: {len(manifest.entries())} of {len(manifest.entries())} kernels" in out
    assert "cache: " in out and ("nvcc " in out or "toolkit: nvcc not found" in out)
    for name, (N, K) in models.MODELS.items():
        assert f"{name} (N={N}, K={K})" in out
        for r in dispatch.ladder(N, K):
            line = next(ln for ln in out.splitlines() if f": {r.bf16} (fp32 out: {r.f32})" in ln)
            assert line.endswith("- shipped")


def test_info_says_what_happens_without_shipped_kernels_or_nvcc(monkeypatch, hide_nvcc):
    hide_nvcc()
    monkeypatch.setattr(prebuilt, "index", lambda: {"arch": None, "kernels": {}})
    out = info.report()
    assert "toolkit: nvcc not found" in out and "shipped in the package: 0 of" in out
    assert "not shipped and no nvcc: falls back" in out
