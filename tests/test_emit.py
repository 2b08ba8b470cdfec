"""emitted/ is exactly what the generator makes, and the manifest says what the launcher needs."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cutlass_router import catalog, dispatch, emit, families, manifest

ROOT = Path(__file__).resolve().parent.parent


def test_committed_files_match_generator():
    stale = emit.diff(ROOT / "emitted")
    assert stale == [], f"emitted/ is stale; run `python -m cutlass_router emit`: {stale}"


def test_diff_detects_an_edit(tmp_path):
    emit.write(tmp_path)
    assert emit.diff(tmp_path) == []
    victim = next(tmp_path.glob("*.cu"))
    victim.write_text(victim.read_text() + "// edited\n")
    (tmp_path / "crt_extra_kernel.cu").write_text("// not generated\n")
    assert emit.diff(tmp_path) == sorted([victim.name, "crt_extra_kernel.cu"])


def test_emission_independent_of_hash_seed():
    code = ("import hashlib, cutlass_router.emit as e; f = e.render(); "
            "print(hashlib.sha256(b''.join(k.encode() + f[k] for k in sorted(f))).hexdigest())")
    digests = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        digests.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout.strip())
    assert len(digests) == 1


def test_manifest_entries():
    data = json.loads((ROOT / "emitted" / "manifest.json").read_text())
    assert data["arch"] == "sm_90a"
    symbols = [k["symbol"] for k in data["kernels"]]
    assert len(symbols) == len(set(symbols)) == len(catalog.specs())
    for k in data["kernels"]:
        src = (ROOT / "emitted" / k["file"]).read_bytes()
        assert hashlib.sha256(src).hexdigest() == k["sha256"]
        assert f"{k['symbol']}(" in src.decode(), "the entry point must carry the manifest's symbol"
        assert k["family"] in families.FAMILIES
        assert k["out_dtype"] in (("any",) if k["family"] == "route" else ("bf16", "f32"))
        assert k["source_sha256"] == manifest.sha256(manifest.expand(src.decode()))
        if k["family"] == "splitk_mma":
            assert k["launch"]["block_threads"] % 32 == 0 and 1 <= k["launch"]["cluster"] <= 16
            assert f'#include "splitk_mma.cuh"' in src.decode(), "an instantiation includes its template"
        if k["family"] == "route":
            assert f'#include "route.cuh"' in src.decode(), "an instantiation includes its template"
        if k["family"] == "gemv":
            assert k["launch"]["cluster"] == 1 and k["launch"]["one_pass_k"] % 8 == 0
            assert f'#include "gemv.cuh"' in src.decode(), "an instantiation includes its template"


def test_every_dispatchable_kernel_is_emitted_in_both_dtypes():
    known = manifest.entries()
    shapes = [(32, 2880), (128, 2880), (60, 1000)] + list(dispatch.tuned_table("sm_90a"))
    for N, K in shapes:
        ladder = dispatch.ladder(N, K)
        assert ladder[-1].max_m >= 1 << 62, "the last rung must serve every M"
        assert [r.max_m for r in ladder] == sorted(r.max_m for r in ladder)
        for r in ladder:
            assert known[r.bf16].out_dtype == "bf16" and known[r.f32].out_dtype == "f32"
            assert known[r.f32].config == dict(known[r.bf16].config, out_dtype="f32")
        for M in (1, 3, 7, 13, 127, 1000, 8192, 10 ** 6):
            assert dispatch.choose(N, K, M, "bf16") in known


def test_cli_emit_check_passes_on_checkout():
    r = subprocess.run([sys.executable, "-m", "cutlass_router", "emit", "--check"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_emit_writes_into_given_dir_only(tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    r = subprocess.run([sys.executable, "-m", "cutlass_router", "emit", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=work)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "manifest.json").exists()
    assert list(work.iterdir()) == [], "nothing may be written into the working directory"


def test_tuning_keeps_the_previous_kernel_within_noise():
    from cutlass_router import tune

    table = {1: {"a": 1.00, "b": 1.05}, 2: {"a": 1.02, "b": 1.00}, 4: {"a": 2.0, "b": 1.0}}
    assert [(r["max_m"], r["bf16"]) for r in tune.rungs(table)] == [(2, "a"), (1 << 62, "b")]
    # b within noise of a at M = 1 and the best from there: one rung
    table[1]["b"] = 1.01
    assert [(r["max_m"], r["bf16"]) for r in tune.rungs(table)] == [(1 << 62, "b")]


def test_expand_inlines_project_templates_once_and_keeps_other_includes(tmp_path):
    (tmp_path / "a.cuh").write_text('#pragma once\n#include "b.cuh"\nint a;\n')
    (tmp_path / "b.cuh").write_text("#pragma once\nint b;\n")
    text = '#include "a.cuh"\n#include "b.cuh"\n#include "cute/tensor.hpp"\n#include <cstdint>\nint main;\n'
    out = manifest.expand(text, tmp_path)
    assert out.count("int b;") == 1 and out.count("int a;") == 1 and out.index("int b;") < out.index("int a;")
    assert '#include "cute/tensor.hpp"' in out and "#include <cstdint>" in out and "#pragma once" not in out
    assert '#include "a.cuh"' not in out


def test_batch_invariant_ladders_share_one_order_and_ship():
    """Invariant mode: every kernel of a shape's invariant ladder (tuned, or the default for untuned shapes) has the
    same order (K slices, unroll, accumulator sets), in both dtypes, covers every M, and ships (reachable); above
    decode sizes the ladder ends in a tiled serial kernel."""
    from cutlass_router import dispatch
    from cutlass_router.families import splitk_mma
    from cutlass_router.manifest import entry

    reach = dispatch.reachable()
    assert set(dispatch.tuned_invariant_table()) == {(32, 2880), (128, 2880), (256, 7168)}
    for N, K in [(32, 2880), (128, 2880), (256, 7168), (60, 1000), (384, 7168)]:
        for dt in ("bf16", "f32"):
            ends = [r.max_m for r in dispatch.invariant_ladder(N, K)[:-1]]
            ms = [1, 8192, 65535 * 32, *ends, *(m + 1 for m in ends)]
            picked = {dispatch.choose_invariant(N, K, M, dt) for M in ms}
            assert picked == {getattr(r, dt) for r in dispatch.invariant_ladder(N, K)}  # every rung reached
            orders = {splitk_mma.order(entry(s)) for s in picked}
            assert orders == {dispatch.INVARIANT_ORDER}, (N, K, dt, picked)
            assert all(entry(s).out_dtype == dt and s in reach for s in picked), picked
            top = entry(dispatch.choose_invariant(N, K, 8192, dt))
            assert top.config["order_slices"] and top.launch["smem_bytes"] > 0
            assert splitk_mma.grid(top, 8192, N)[1] == -(-8192 // top.launch["tile_tokens"])
            assert not splitk_mma.blocker(top, 65535 * 32, N)


def test_split_kernel_orders():
    from cutlass_router.families.splitk_mma import SplitKSpec

    assert SplitKSpec("bf16", 8, 8, 1, 1, 1).order() == (64, 1, 1)
    assert SplitKSpec("bf16", 4, 16, 1, 2, 1).order() == (64, 1, 1)
    assert SplitKSpec("bf16", 4, 8, 1, 1, 2).order() == (32, 2, 2)   # two accumulator sets: E x T <= 2, U >= 2
    assert SplitKSpec("bf16", 8, 4, 1, 2, 3).order() == (32, 3, 2)
    assert SplitKSpec("bf16", 4, 4, 2, 4, 2).order() == (16, 1, 1)   # one set: the unroll does not matter
    s = SplitKSpec("f32", 4, 1, 2, 2, 1, 32, 2, 2, warps_e=2, stages=3)
    assert s.order() == (32, 2, 2) and s.symbol == "crt_splitk_f32_tiled_we2_wt4_e2_t2_s3_o32x2x2"
    assert "splitk_tiled<32, 2, 2, 2, 4, 2, 2, 3, 1, float>(params)" in s.emit()
    assert "__launch_bounds__(256, 1)" in s.emit()
    assert s.launch() == {"block_threads": 256, "cluster": 1, "tile_tokens": 8 * 2 * 4, "tile_experts": 16 * 2 * 2,
                          "smem_bytes": 3 * ((64 + 64) * 128 + 8)}  # stages of 128 + 128 rows and their mbarriers
    assert "warps_e" not in SplitKSpec("bf16", 8, 8, 1, 1, 1).config()  # split kernels' entries as before
    g = SplitKSpec("bf16", 1, 1, 2, 2, 1, 32, 1, 1, warps_e=1, stages=3, groups=8)
    assert g.symbol == "crt_splitk_bf16_tiled_we1_wt1_e2_t2_s3_g8_o32x1x1"
    assert "splitk_tiled<32, 1, 1, 1, 1, 2, 2, 3, 8, __nv_bfloat16>(params)" in g.emit()
    # 8 groups' stages of 32 + 16 rows (and mbarriers), and the partials of 28 slices (groups 1..7) of the 32 x 16 tile
    assert g.launch() == {"block_threads": 256, "cluster": 1, "tile_tokens": 16, "tile_experts": 32,
                          "smem_bytes": 8 * 3 * (48 * 128 + 8) + 28 * 32 * 16 * 4}
    assert SplitKSpec("bf16", 1, 1, 2, 2, 1, 32, 1, 1, warps_e=1, stages=3, groups=1) == \
        SplitKSpec("bf16", 1, 1, 2, 2, 1, 32, 1, 1, warps_e=1, stages=3)  # one group is no groups
    with pytest.raises(ValueError, match="serial kernel"):
        SplitKSpec("bf16", 1, 1, 2, 2, 1, 32, 1, 1, warps_e=1, stages=3, groups=3)  # 3 does not divide 32 slices
    with pytest.raises(ValueError, match="serial kernel"):
        SplitKSpec("bf16", 4, 2, 1, 1, 2, 32, 2, 2, warps_e=1, stages=3)  # a serial kernel has no cluster
    with pytest.raises(ValueError, match="serial kernel"):
        SplitKSpec("bf16", 4, 1, 1, 1, 2, 32, 2, 2)  # ... and stages
    with pytest.raises(ValueError, match="serial kernel"):
        SplitKSpec("bf16", 4, 1, 1, 1, 2, 0, 0, 0, warps_e=1, stages=3)  # a split kernel has none
    with pytest.raises(ValueError, match="serial kernel"):
        SplitKSpec("bf16", 4, 1, 8, 8, 1, 32, 1, 1, warps_e=4, stages=8)  # too much shared memory
    with pytest.raises(ValueError, match="serial kernel"):
        SplitKSpec("bf16", 1, 1, 1, 40, 1, 32, 1, 1, warps_e=1, stages=3)  # 320 tokens: more than a TMA box
    with pytest.raises(ValueError, match="serial kernel"):
        SplitKSpec("bf16", 4, 1, 1, 1, 2, 32, 2, 3)


def test_one_accumulator_set_keeps_unroll_1_s_order():
    """acc=1: a split kernel with unroll 2 or 4 and one accumulator set computes what unroll 1 computes (the order
    of batch-invariant mode) with more chunks in flight; the symbol and the emitted instantiation say so, and the
    manifest entries of kernels without it are unchanged."""
    from cutlass_router.families.splitk_mma import SplitKSpec

    s = SplitKSpec("bf16", 8, 4, 1, 1, 2, acc=1)
    assert s.order() == SplitKSpec("bf16", 8, 4, 1, 1, 1).order() == (32, 1, 1)
    assert SplitKSpec("bf16", 8, 4, 1, 1, 2).order() == (32, 2, 2)  # without it: two sets, another order
    assert s.symbol == "crt_splitk_bf16_w8_c4_e1_t1_u2_a1" and s.config()["acc"] == 1
    assert "splitk_mma<8, 4, 1, 1, 2, __nv_bfloat16, 1>(params)" in s.emit()
    assert "acc" not in SplitKSpec("bf16", 8, 4, 1, 1, 2).config()
    assert "splitk_mma<8, 4, 1, 1, 2, __nv_bfloat16>(params)" in SplitKSpec("bf16", 8, 4, 1, 1, 2).emit()
    for bad in (dict(acc=2), dict(acc=-1)):
        with pytest.raises(ValueError, match="acc"):
            SplitKSpec("bf16", 8, 4, 1, 1, 2, **bad)
    with pytest.raises(ValueError, match="acc"):  # a serial kernel names its order instead
        SplitKSpec("bf16", 1, 1, 2, 2, 1, 32, 1, 1, warps_e=1, stages=3, acc=1)


def test_invariant_candidates_share_the_order():
    """tune --what invariant times exactly the kernels of the invariant order: split (with and without acc=1) and
    tiled."""
    from cutlass_router import dispatch, manifest, tune
    from cutlass_router.families import splitk_mma

    cands = tune.invariant_candidates()
    assert {splitk_mma.order(manifest.entry(s)) for s in cands} == {dispatch.INVARIANT_ORDER}
    assert "crt_splitk_bf16_w8_c4_e1_t1_u2_a1" in cands and "crt_splitk_bf16_w8_c4_e1_t1_u1" in cands
    assert any("tiled" in s for s in cands) and "crt_splitk_bf16_w4_c8_e1_t1_u2" not in cands  # (32, 2, 2)
    assert all(manifest.entry(s).out_dtype == "bf16" for s in cands)


def test_tiled_pack_writes_both_tensor_maps(monkeypatch):
    """A tiled kernel's launch packs SplitKParams and encodes W's and x's tensor maps at TILED_MAPS (boxes of 64 K by
    the CTA tile's experts and tokens); a failed encode is a LaunchError, which the caller turns into the torch path."""
    import ctypes
    from types import SimpleNamespace

    from cutlass_router import dispatch, launch
    from cutlass_router.families import splitk_mma
    from cutlass_router.manifest import entry

    sym = dispatch.choose_invariant(128, 2880, 8192, "bf16")
    k = SimpleNamespace(entry=entry(sym))
    assert "smem_bytes" in k.entry.launch
    calls = []

    def fake(at, dtype, rank, ptr, dims, strides, box, step, interleave, swizzle, l2, oob):
        calls.append((at, ptr, list(dims), list(strides), list(box)))
        ctypes.memset(at, 0xAB, 128)
        return 0

    monkeypatch.setattr(splitk_mma, "_encode_tiled", lambda: fake)
    buf = ctypes.create_string_buffer(launch.PARAM_CAPACITY)
    grid = splitk_mma.pack_gemm(k, buf, launch.PARAM_CAPACITY, None, 0x1000, 0x2000, 0, 0x3000, 8192, 128, 2880,
                                2888, 2880, 128, 132)
    base = ctypes.addressof(buf)
    lc = k.entry.launch
    assert calls == [(base + 128, 0x2000, [2880, 128], [2880 * 2], [64, lc["tile_experts"]]),
                     (base + 256, 0x1000, [2880, 8192], [2888 * 2], [64, lc["tile_tokens"]])]
    assert splitk_mma.PARAMS.unpack_from(buf, 0)[:4] == (0x1000, 0x2000, 0, 0x3000)
    assert buf.raw[128:384] == b"\xab" * 256 and grid == splitk_mma.grid(k.entry, 8192, 128)

    monkeypatch.setattr(splitk_mma, "_encode_tiled", lambda: lambda *a: 1)  # CUDA_ERROR_INVALID_VALUE
    with pytest.raises(launch.LaunchError, match="cuTensorMapEncodeTiled failed .* box 64 x"):
        splitk_mma.pack_gemm(k, buf, launch.PARAM_CAPACITY, None, 0x1000, 0x2000, 0, 0x3000, 8192, 128, 2880, 2880,
                             2880, 128, 132)

    def no_libcuda():
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(splitk_mma, "_encode_tiled", no_libcuda)
    with pytest.raises(launch.LaunchError, match="cannot encode a TMA tensor map"):
        splitk_mma.pack_gemm(k, buf, launch.PARAM_CAPACITY, None, 0x1000, 0x2000, 0, 0x3000, 8192, 128, 2880, 2880,
                             2880, 128, 132)


def test_gemv_spec_symbol_emit_and_limits():
    from cutlass_router.families import gemv

    s = gemv.GemvSpec("f32", rows=1, tokens=2, vecs=2, threads=192)
    assert s.symbol == "crt_gemv_f32_r1_m2_v2_t192" and s.family == "gemv"
    assert "router_gemv<1, 2, 2, 192, float>(params)" in s.emit() and "__launch_bounds__(192, 1)" in s.emit()
    assert s.launch() == {"block_threads": 192, "cluster": 1, "tile_tokens": 2, "tile_experts": 1,
                          "one_pass_k": 8 * 2 * 192}
    for bad in (dict(threads=100), dict(threads=2048), dict(vecs=0), dict(rows=16, tokens=16, threads=128)):
        with pytest.raises(ValueError):
            gemv.GemvSpec("bf16", **bad)
    with pytest.raises(ValueError, match="out_dtype"):
        gemv.GemvSpec("f16")
    e = manifest.entry(s.symbol)
    assert gemv.grid(e, 5, 33) == (33, 3, 1)
    assert gemv.blocker(e, gemv.MAX_M, 33) is None and "decode sizes" in gemv.blocker(e, gemv.MAX_M + 1, 33)


def test_tune_merge_keeps_the_timings_it_did_not_retake(tmp_path, monkeypatch):
    from cutlass_router import tune

    monkeypatch.setattr(tune.torch.cuda, "get_device_name", lambda *a: "card")
    path = tmp_path / "t.json"
    first = {1: {"a": 2.0, "b": 3.0}, 64: {"a": 5.0, "b": 4.0}, 1024: {"a": 9.0, "b": 7.0}}
    tune.write_table(path, 32, 2880, first, "tune all")
    tune.write_table(path, 32, 2880, {1: {"a": 2.0, "b": 3.0, "g": 1.0}}, "tune --m 1", merge=True)
    rec = json.loads(path.read_text())["shapes"][0]
    assert [(r["max_m"], r["bf16"]) for r in rec["rungs"]] == [(1, "g"), (1 << 62, "b")]
    assert rec["us"]["64"] == {"a": 5.0, "b": 4.0} and rec["us"]["1"]["g"] == 1.0
    assert rec["method"] == {"1": "decode layer", "64": "decode layer", "1024": "isolated"}
    assert rec["command"] == "tune all; then tune --m 1 (merged)"
    tune.write_table(path, 32, 2880, {1: {"a": 2.0}}, "tune --m 1")  # without merge: only what was measured
    assert json.loads(path.read_text())["shapes"][0]["us"] == {"1": {"a": 2.0}}


def test_tune_rungs_switch_as_rarely_as_the_tie_allows():
    """A choice within TIE (3%) of the best is as good: the current one is kept while it stays that close, and a
    switch goes to the close choice that stays close longest (here "c", not the faster-at-M=16 "b", which loses at
    M=64), the faster one among equals."""
    from cutlass_router import tune

    table = {1: {"a": 3.0, "b": 4.0, "c": 4.0},
             8: {"a": 3.0, "b": 3.05, "c": 3.3},      # a is still the best
             16: {"a": 5.0, "b": 4.0, "c": 4.1},      # a is out; b and c close, c stays close longer
             32: {"a": 5.0, "b": 4.0, "c": 4.05},
             64: {"a": 5.0, "b": 4.5, "c": 4.0},
             128: {"a": 1.0, "b": 4.5, "c": 4.0}}
    assert tune._rungs(table) == [(8, "a"), (64, "c"), (1 << 62, "a")]
    assert tune._rungs({1: {"x": 2.0, "y": 2.01}}) == [(1 << 62, "x")]  # equals in reach: the faster
    if tune.TIE:  # b would win everywhere without the tie
        assert tune._rungs({1: {"b": 1.0, "c": 1.01}, 2: {"b": 5.0, "c": 1.0}}) == [(1 << 62, "c")]


def test_tune_writes_the_invariant_ladder_with_its_order(tmp_path, monkeypatch):
    """--what invariant: section "invariant", the order recorded (dispatch reads the rungs; the ladder test checks
    the order); a merge keeps kernels' timings, not the comparison column ("default") older records carry."""
    from cutlass_router import dispatch, tune

    monkeypatch.setattr(tune.torch.cuda, "get_device_name", lambda *a: "card")
    a, b = "crt_splitk_bf16_w8_c4_e1_t1_u2_a1", "crt_splitk_bf16_w4_c8_e2_t2_u2"
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"arch": "sm_90a", "invariant": [
        {"N": 32, "K": 2880, "order": [32, 1, 1], "command": "old", "method": {"64": "isolated"},
         "rungs": [], "us": {"64": {"default": 0.5, a: 5.0, b: 4.0}}}]}))
    try:
        tune.write_table(path, 32, 2880, {1: {a: 2.0, b: 3.0}}, "tune --what invariant --m 1", section="invariant",
                         merge=True)
        rec = json.loads(path.read_text())["invariant"][0]
        assert rec["order"] == list(dispatch.INVARIANT_ORDER)
        assert rec["us"]["64"] == {a: 5.0, b: 4.0}
        assert [(r["max_m"], r["bf16"], r["f32"]) for r in rec["rungs"]] == \
            [(1, a, a.replace("_bf16_", "_f32_")), (1 << 62, b, b.replace("_bf16_", "_f32_"))]
    finally:
        dispatch.reload()
