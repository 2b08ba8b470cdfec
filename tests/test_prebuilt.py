"""The cubins shipped in the package: exactly the emitted split-K sources, intact, used without a toolkit."""
import hashlib

import pytest

from cutlass_router import build, manifest, prebuilt


def test_every_split_k_kernel_ships_prebuilt_for_its_current_source():
    data = prebuilt.index()
    assert data["arch"] == "sm_90a"
    splitk = {s: e for s, e in manifest.entries().items() if e.family == "splitk_mma"}
    assert set(data["kernels"]) == set(splitk), "run `python -m cutlass_router prebuild` after changing kernels"
    for symbol, e in splitk.items():
        item = data["kernels"][symbol]
        assert item["source_sha256"] == e.sha256, f"{symbol}: prebuilt cubin is stale; run `prebuild`"
        blob = (prebuilt.DIR / item["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == item["cubin_sha256"]
        assert blob[:4] == b"\x7fELF"


def test_no_toolkit_uses_the_shipped_cubin(monkeypatch):
    def no_toolkit():
        raise build.ToolkitNotFound("nvcc not found")

    monkeypatch.setattr(build, "find_toolchain", no_toolkit)
    symbol = next(s for s, e in manifest.entries().items() if e.family == "splitk_mma")
    art = build.build_cubin(manifest.entry(symbol).source(), symbol)
    assert art.path.parent == prebuilt.DIR and "prebuilt" in art.report
    assert build.read_artifact(art.path)[:4] == b"\x7fELF"
    with pytest.raises(build.ToolkitNotFound):  # another source: no prebuilt cubin, and no nvcc to make one
        build.build_cubin(manifest.entry(symbol).source() + "// edited\n", symbol)


def test_a_damaged_shipped_cubin_is_not_used(monkeypatch, tmp_path):
    symbol = next(s for s, e in manifest.entries().items() if e.family == "splitk_mma")
    copy = tmp_path / "prebuilt"
    copy.mkdir()
    for p in prebuilt.DIR.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / f"{symbol}.cubin").write_bytes(b"\x7fELF truncated")
    monkeypatch.setattr(prebuilt, "DIR", copy)
    assert prebuilt.lookup(symbol, manifest.entry(symbol).source(), "sm_90a") is None
    other = next(s for s in prebuilt.index()["kernels"] if s != symbol)
    assert prebuilt.lookup(other, manifest.entry(other).source(), "sm_90a") == copy / f"{other}.cubin"
