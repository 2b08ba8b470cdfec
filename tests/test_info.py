"""`python -m cutlass_router info`: environment, toolkit, switches, what ships, and which kernel each model size
takes (and from where)."""
import subprocess
import sys

from cutlass_router import dispatch, info, manifest, models, prebuilt


def test_info_command_names_every_model_rung_and_its_source():
    out = subprocess.run([sys.executable, "-m", "cutlass_router", "info"], capture_output=True, text=True,
                         check=True).stdout
    reach = len(dispatch.reachable())
    assert f"kernels: {len(manifest.entries())} emitted, {reach} shipped in the package" in out
    assert "cache: " in out and ("nvcc " in out or "toolkit: nvcc not found" in out)
    assert "driver: " in out and ("GPU 0: " in out or "GPU: none visible" in out)
    for name, model in models.MODELS.items():
        N, K = model.shape
        assert f"{name} (N={N}, K={K})" in out
        for r in dispatch.ladder(N, K):
            line = next(ln for ln in out.splitlines() if f": {r.bf16} (fp32 out: {r.f32})" in ln)
            assert line.endswith("- shipped")
        for r in dispatch.invariant_ladder(N, K):
            assert any(ln.startswith("  batch_invariant, M ") and f": {r.bf16} (fp32 out: {r.f32}) - shipped" in ln
                       for ln in out.splitlines()), r
        assert sum(ln.startswith("  route, M ") for ln in out.splitlines()) >= len(models.MODELS)


def test_info_says_what_happens_without_shipped_kernels_or_nvcc(monkeypatch, hide_nvcc, tmp_path):
    hide_nvcc()
    monkeypatch.setenv("CUTLASS_ROUTER_CACHE_DIR", str(tmp_path))  # nor cached: a build cache may hold them all
    monkeypatch.setattr(prebuilt, "index", lambda: {"arch": None, "kernels": {}})
    out = info.report()
    assert "toolkit: nvcc not found" in out and ", 0 shipped in the package" in out
    assert "not shipped and no nvcc: falls back" in out


def test_info_shows_the_switches_in_force_and_an_unwritable_cache(monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("CUTLASS_ROUTER_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setenv("CUTLASS_ROUTER_PDL", "off")
    monkeypatch.setenv("CUTLASS_ROUTER_DISABLE", "yes")
    out = info.report()
    assert "CUTLASS_ROUTER_PDL=off" in out and "PDL off" in out and "kernels disabled" in out
    assert "NOT WRITABLE" in out
