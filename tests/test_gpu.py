"""On an sm90 GPU: the emitted kernels against fp64, through dispatch and forced one by one.

Every check draws fresh inputs and poisons the output first (NaN), so an unwritten element fails.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import fp64_ref, rel_err

from cutlass_router import RouterLinear, dispatch, families, manifest, ops, plan, prebuilt, router_gemm

pytestmark = pytest.mark.gpu
BF16, F32 = torch.bfloat16, torch.float32
TOL = {BF16: 1e-2, F32: 1e-5}
M_SWEEP = [0, 1, 2, 3, 7, 8, 13, 16, 31, 64, 100, 127, 128, 256, 1000, 4096]


def inputs(M, N, K, with_bias=True, seed=None):
    g = torch.Generator(device="cuda")
    g.manual_seed(seed if seed is not None else torch.randint(0, 2 ** 31, ()).item())
    x = torch.randn(M, K, device="cuda", dtype=BF16, generator=g)
    w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(BF16)
    b = torch.randn(N, device="cuda", dtype=BF16, generator=g) if with_bias else None
    return x, w, b


def poison_allocator(M, N, dtype):
    """Fill the caching allocator's next block of this size with NaN, so the op's output starts poisoned."""
    t = torch.full((M, N), float("nan"), device="cuda", dtype=dtype)
    del t


def check(y, x, w, b, dtype):
    assert y.dtype == dtype and y.shape == (x.shape[0], w.shape[0])
    if y.numel():
        err = rel_err(y, fp64_ref(x, w, b))
        assert err < TOL[dtype], f"relative error {err}"


@pytest.mark.parametrize("M", M_SWEEP)
@pytest.mark.parametrize("N,K", [(32, 2880), (128, 2880), (60, 2880), (128, 1000)])
@pytest.mark.parametrize("out_dtype", [BF16, F32])
def test_dispatch_matches_fp64(M, N, K, out_dtype):
    for with_bias in (True, False):
        x, w, b = inputs(M, N, K, with_bias)
        poison_allocator(M, N, out_dtype)
        check(router_gemm(x, w, b, out_dtype=out_dtype), x, w, b, out_dtype)


@pytest.mark.parametrize("symbol", sorted(s for s, e in manifest.entries().items()
                                    if hasattr(families.of(e.family), "pack_gemm")))  # the GEMM kernels
def test_every_kernel_forced_at_odd_sizes(symbol):
    e = manifest.entry(symbol)
    dtype = BF16 if e.out_dtype == "bf16" else F32
    n_multiple = e.launch.get("n_multiple", 1)
    shapes = [(1, 32, 2880), (7, 60, 1000), (13, 128, 2880), (127, 36, 2888), (1000, 128, 2880), (333, 40, 2880)]
    fam = families.of(e.family)  # a family that serves decode sizes only (gemv) refuses prefill shapes
    for M, N, K in [s for s in shapes if s[1] % n_multiple == 0 and not fam.blocker(e, s[0], s[1])]:
        for with_bias in (True, False):
            x, w, b = inputs(M, N, K, with_bias)
            out = torch.full((M, N), float("nan"), device="cuda", dtype=dtype)
            ops.run_kernel(symbol, x, w, b, dtype, out=out)
            check(out, x, w, b, dtype)


def test_tuned_rung_boundaries():
    for (N, K), ladder in dispatch.tuned_table("sm_90a").items():
        for r in ladder[:-1]:
            for M in (r.max_m, r.max_m + 1):
                x, w, b = inputs(M, N, K)
                poison_allocator(M, N, BF16)
                check(router_gemm(x, w, b), x, w, b, BF16)


def test_pdl_off_and_env(monkeypatch):
    x, w, b = inputs(5, 128, 2880)
    check(router_gemm(x, w, b, pdl=False), x, w, b, BF16)
    monkeypatch.setenv("CUTLASS_ROUTER_PDL", "0")
    check(router_gemm(x, w, b), x, w, b, BF16)


def test_non_default_stream():
    x, w, b = inputs(13, 128, 2880)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        poison_allocator(13, 128, F32)
        y = router_gemm(x, w, b, out_dtype=F32)
    torch.cuda.current_stream().wait_stream(s)
    check(y, x, w, b, F32)


@pytest.mark.parametrize("M", [1, 16, 100, 2048])
def test_cuda_graph_replay_after_inputs_change(M):
    x, w, b = inputs(M, 128, 2880)
    gate = RouterLinear(2880, 128, device="cuda")
    with torch.no_grad():
        gate.weight.copy_(w)
        gate.bias.copy_(b)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            gate(x)  # warm up (build, load) outside capture
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            y = gate(x)
        for _ in range(3):
            x.copy_(inputs(M, 128, 2880)[0])
            y.fill_(float("nan"))
            g.replay()
            torch.cuda.synchronize()
            check(y, x, w, b, BF16)


def test_strided_and_misaligned_inputs_are_read_correctly():
    x_wide, w, b = inputs(9, 128, 2880 + 64)
    x = x_wide[:, :2880]  # row stride 2944: the kernel takes it as is
    check(router_gemm(x, w[:, :2880], b), x, w[:, :2880], b, BF16)
    xt = torch.randn(2880, 9, device="cuda", dtype=BF16).T  # column-major: falls back, still right
    w2 = w[:, :2880].contiguous()
    check(router_gemm(xt, w2, b), xt, w2, b, BF16)
    flat = torch.randn(9 * 2880 + 1, device="cuda", dtype=BF16)
    xm = flat[1:].view(9, 2880)  # 2-byte offset: not 16-byte aligned, falls back
    check(router_gemm(xm, w2, b), xm, w2, b, BF16)
    check(router_gemm(x, w2, b[::1]), x, w2, b, BF16)


def test_k_not_multiple_of_8_falls_back_correctly():
    x, w, b = inputs(5, 32, 2883)
    check(router_gemm(x, w, b), x, w, b, BF16)


def test_matches_f_linear_closely():
    x, w, b = inputs(64, 128, 2880)
    y, ref = router_gemm(x, w, b), F.linear(x, w, b)
    assert (y.float() - ref.float()).abs().max().item() <= 2 * ref.float().abs().max().item() * 2 ** -8


def test_kernel_refuses_unsupported_n():
    big = [s for s, e in manifest.entries().items() if e.launch.get("n_multiple", 1) == 8]
    x, w, b = inputs(4, 60, 2880)
    for symbol in big:
        with pytest.raises(ValueError, match="multiple of 8"):
            ops.run_kernel(symbol, x, w, b)


def test_disable_env_uses_fallback(monkeypatch):
    monkeypatch.setenv("CUTLASS_ROUTER_DISABLE", "1")
    x, w, b = inputs(3, 32, 2880)
    check(router_gemm(x, w, b), x, w, b, BF16)


def test_torch_compile_fullgraph_dynamic_on_gpu():
    gate = RouterLinear(2880, 32, device="cuda")
    compiled = torch.compile(gate, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for M in (1, 7, 300):
            x = inputs(M, 32, 2880)[0]
            assert torch.equal(compiled(x), gate(x))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    with torch.cuda.device(1):
        x, w, b = inputs(7, 128, 2880)
    x, w, b = x.to("cuda:1"), w.to("cuda:1"), b.to("cuda:1")
    y = router_gemm(x, w, b)
    assert y.device == x.device
    check(y, x, w, b, BF16)


@pytest.mark.parametrize("M,N", [(1, 128), (16, 32), (300, 128)])
def test_pdl_never_reads_x_early(M, N):
    """Producer then router, 10,000 times with x changing each time: every output must be the one for the x just
    produced. The producers do not use PDL: a torch copy, and a cuBLAS GEMM (x = source @ I). A PDL launch that
    read x before its producer finished would fail here."""
    K = 2880
    _, w, b = inputs(M, N, K)
    sources = [inputs(M, N, K)[0] for _ in range(8)]
    expected = [router_gemm(s, w, b, pdl=False) for s in sources]  # the same kernel, launched without PDL
    eye = torch.eye(K, device="cuda", dtype=BF16)
    x = torch.empty_like(sources[0])
    mismatches = torch.zeros((), dtype=torch.int64, device="cuda")
    for i in range(10_000):
        if i % 2:
            torch.mm(sources[i % 8], eye, out=x)  # exact: one product per output element
        else:
            x.copy_(sources[i % 8])
        y = router_gemm(x, w, b, pdl=True)
        mismatches += (y != expected[i % 8]).sum()
    assert mismatches.item() == 0


@pytest.mark.parametrize("M,N", [(1, 128), (13, 32), (3000, 128)])
@pytest.mark.parametrize("out_dtype", [BF16, F32])
def test_out_variant_allocates_nothing(M, N, out_dtype):
    x, w, b = inputs(M, N, 2880)
    wide = torch.full((M, N + 16), float("nan"), device="cuda", dtype=out_dtype)
    out = wide[:, :N]  # row stride N + 16: written in place, the padding untouched
    router_gemm(x, w, b, out=out)  # warm up: build, load, plan
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    out.fill_(float("nan"))
    y = router_gemm(x, w, b, out=out)
    torch.cuda.synchronize()
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before
    assert y is out
    check(out, x, w, b, out_dtype)
    assert torch.isnan(wide[:, N:]).all()


@pytest.mark.parametrize("N,K", [(32, 2880), (128, 2880), (256, 7168), (60, 1000)])
@pytest.mark.parametrize("out_dtype", [BF16, F32])
@pytest.mark.parametrize("with_bias", [True, False])
def test_batch_invariant_rows_do_not_depend_on_the_batch(N, K, out_dtype, with_bias):
    """Bitwise: every M from 1 to 8192 gives a row the bits it has at M = 1, across the kernels invariant mode
    picks (split kernels of one order at decode sizes, tiled serial kernels of the same order above), each side of
    every rung's end. Rows of -0.0 and exact zeros included (the sign of a zero sum is part of the bits)."""
    x, w, b = inputs(8192, N, K)
    x[5] = -0.0
    x[6] = 0.0
    b = b if with_bias else None
    full = router_gemm(x, w, b, out_dtype=out_dtype, batch_invariant=True)
    check(full, x, w, b, out_dtype)
    ends = [r.max_m for r in dispatch.invariant_ladder(N, K)[:-1]]
    ms = sorted({1, 2, 3, 7, 13, 17, 64, 65, 127, 255, 256, 1000, 4096} | {m + d for m in ends for d in (0, 1)})
    dt = "bf16" if out_dtype == BF16 else "f32"
    picked = {dispatch.choose_invariant(N, K, M, dt) for M in ms + [8192]}
    assert picked == {getattr(r, dt) for r in dispatch.invariant_ladder(N, K)}, picked  # every rung reached
    assert any("tiled" in s for s in picked), picked
    for M in ms:
        assert torch.equal(router_gemm(x[:M], w, b, out_dtype=out_dtype, batch_invariant=True), full[:M]), M
    for M in (1, 7, 300):  # each row alone, against the full batch
        row = router_gemm(x[M - 1:M], w, b, out_dtype=out_dtype, batch_invariant=True)
        assert torch.equal(row, full[M - 1:M]), M
    other = x.clone()
    other[1:] = inputs(8191, N, K)[0]
    assert torch.equal(router_gemm(other, w, b, out_dtype=out_dtype, batch_invariant=True)[0], full[0])


@pytest.mark.parametrize("symbol", sorted(s for s, e in manifest.entries().items()
                                          if e.family == "splitk_mma" and e.config.get("order_slices")))
def test_a_serial_kernel_computes_its_split_kernel_s_bits(symbol):
    """Each tiled serial kernel against every split kernel of the same order (families/splitk_mma.py: order),
    forced on the same inputs at odd sizes (N not a multiple of 16, K not of the 64-wide chunk, M not of the tile):
    equal bits, not just close."""
    from cutlass_router.families import splitk_mma

    e = manifest.entry(symbol)
    twins = [s for s, f in manifest.entries().items() if f.family == "splitk_mma" and s != symbol
             and not f.config.get("order_slices") and f.out_dtype == e.out_dtype
             and splitk_mma.order(f) == splitk_mma.order(e)]
    assert twins, symbol
    dtype = BF16 if e.out_dtype == "bf16" else F32
    for N, K in ((32, 2880), (60, 1000), (128, 2888), (256, 7168)):
        for M in (1, 13, 300):
            x, w, b = inputs(M, N, K)
            ref = torch.full((M, N), float("nan"), device="cuda", dtype=dtype)
            ops.run_kernel(symbol, x, w, b, dtype, out=ref)
            check(ref, x, w, b, dtype)
            for twin in twins:
                out = torch.full((M, N), float("nan"), device="cuda", dtype=dtype)
                ops.run_kernel(twin, x, w, b, dtype, out=out)
                assert torch.equal(out, ref), (twin, N, K, M)


def test_non_hopper_gpu_falls_back_with_a_logged_reason(monkeypatch, caplog):
    """What an sm80/sm89 GPU gets: the torch path, the same numbers, one log line saying why."""
    monkeypatch.setattr(plan, "device_blocker", lambda index: "GPU 0 is sm_89; the emitted kernels are sm_90a")
    plan.clear()
    plan.log_once.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="cutlass_router"):
            for M in (1, 300):
                x, w, b = inputs(M, 128, 2880)
                check(router_gemm(x, w, b), x, w, b, BF16)
                check(router_gemm(x, w, b, out_dtype=F32), x, w, b, F32)
        assert caplog.text.count("sm_89") == 1
    finally:
        plan.clear()


def test_refused_cubin_falls_back(monkeypatch, caplog):
    """A driver that refuses the cubins: the torch path, the same numbers, the driver's reason in the log."""
    from cutlass_router import launch

    def refuse(symbol):
        raise launch.LaunchError(f"cuLibraryLoadData({symbol}) failed: CUDA_ERROR_UNSUPPORTED_PTX_VERSION")

    monkeypatch.setattr(launch, "load", refuse)
    plan.clear()
    plan.log_once.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="cutlass_router"):
            for M, N in ((7, 32), (4096, 128)):
                x, w, b = inputs(M, N, 2880)
                check(router_gemm(x, w, b), x, w, b, BF16)
        assert "UNSUPPORTED_PTX" in caplog.text
    finally:
        plan.clear()


def _no_toolkit(monkeypatch, tmp_path, hide_nvcc):
    from cutlass_router import launch

    hide_nvcc()
    monkeypatch.setattr(launch, "load", launch.load.__wrapped__)  # no in-process cache of loaded kernels
    monkeypatch.setenv("CUTLASS_ROUTER_CACHE_DIR", str(tmp_path))
    plan.clear()
    plan.log_once.cache_clear()


def test_without_a_toolkit_the_shipped_kernels_run(monkeypatch, caplog, tmp_path, hide_nvcc):
    """No nvcc and an empty cache: every tuned kernel, split-K and CUTLASS TMA (with the shipped host library),
    comes from the package, silently."""
    _no_toolkit(monkeypatch, tmp_path, hide_nvcc)
    try:
        with caplog.at_level("WARNING", logger="cutlass_router"):
            for M, N, dt in ((7, 32, BF16), (4096, 128, BF16), (2048, 32, F32), (100, 128, F32)):
                name = "bf16" if dt == BF16 else "f32"
                x, w, b = inputs(M, N, 2880)
                check(router_gemm(x, w, b, out_dtype=dt), x, w, b, dt)
                k, why = plan.kernel_for(x.device.index, N, 2880, M, name)
                assert why is None and k.entry.symbol == dispatch.choose(N, 2880, M, name)
        assert dispatch.choose(128, 2880, 4096, "bf16") in prebuilt.index()["host_library"]["sources"]
        assert caplog.text == ""
    finally:
        plan.clear()


def test_without_a_toolkit_or_shipped_files_the_op_falls_back(monkeypatch, caplog, tmp_path, hide_nvcc):
    """Neither nvcc nor a shipped file for these sources: correct results from the torch fallback, and a log
    line that says why. A CUTLASS kernel without its host library first gives way to the split-K ladder."""
    _no_toolkit(monkeypatch, tmp_path, hide_nvcc)
    data = prebuilt.index()
    kept = {s: v for s, v in data["kernels"].items() if s.startswith("crt_splitk_")}
    monkeypatch.setattr(prebuilt, "index", lambda: {"arch": data["arch"], "kernels": kept})
    try:
        with caplog.at_level("WARNING", logger="cutlass_router"):
            x, w, b = inputs(4096, 128, 2880)
            check(router_gemm(x, w, b), x, w, b, BF16)
        assert "nvcc not found" in caplog.text and "using crt_splitk_" in caplog.text
        assert "torch fallback" not in caplog.text
        monkeypatch.setattr(prebuilt, "index", lambda: {"arch": None, "kernels": {}})
        plan.clear()
        caplog.clear()
        with caplog.at_level("WARNING", logger="cutlass_router"):
            x, w, b = inputs(7, 32, 2880)
            check(router_gemm(x, w, b), x, w, b, BF16)
        assert "torch fallback" in caplog.text and "nvcc not found" in caplog.text
    finally:
        plan.clear()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_all_gpus_at_once():
    """One thread per GPU, each launching on its own device and stream at the same time, every result checked."""
    import threading

    errors = []

    def worker(dev):
        try:
            with torch.cuda.device(dev):
                stream = torch.cuda.Stream()
                with torch.cuda.stream(stream):
                    for i in range(300):
                        M, N = (1, 7, 64, 1000)[i % 4], (32, 128)[i % 2]
                        x, w, b = (t.to(f"cuda:{dev}") for t in inputs(M, N, 2880, seed=dev * 1000 + i))
                        y = router_gemm(x, w, b, out_dtype=F32 if i % 3 == 0 else BF16)
                        assert y.device == x.device
                        err = rel_err(y, fp64_ref(x, w, b))
                        assert err < TOL[y.dtype], (dev, i, err)
        except Exception as e:  # surfaced by the main thread
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(d,)) for d in range(torch.cuda.device_count())]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("M,N,out_dtype", [(1, 128, BF16), (8, 32, BF16), (64, 128, F32), (300, 128, BF16),
                                           (1000, 128, BF16), (4096, 32, F32)])
def test_pdl_after_a_producer_that_triggers_early(M, N, out_dtype):
    """The producer lets router_gemm launch at once, then writes x 20 us later (x poisoned with NaN until then):
    with PDL, every read of x must wait for it. The compiler once hoisted x's read-only loads above
    griddepcontrol.wait; only a producer that triggers early shows that (torch kernels never do)."""
    from conftest import early_trigger_copy

    copy = early_trigger_copy()
    K = 2880
    _, w, b = inputs(M, N, K)
    sources = [inputs(M, N, K)[0] for _ in range(4)]
    expected = [router_gemm(s, w, b, out_dtype=out_dtype, pdl=False) for s in sources]
    x = torch.empty_like(sources[0])
    bad = torch.zeros((), dtype=torch.int64, device="cuda")
    for i in range(200):
        x.fill_(float("nan"))
        copy(sources[i % 4], x)
        y = router_gemm(x, w, b, out_dtype=out_dtype, pdl=True)
        bad += (y != expected[i % 4]).sum()
    assert bad.item() == 0


def test_the_kernels_run_not_the_fallback(monkeypatch):
    """Dispatch on an sm90 GPU runs the emitted kernels: a refused launch would fall back to torch and give the
    same numbers, so the fallback is made to fail here."""
    def no_fallback(*args, **kwargs):
        raise AssertionError("the torch fallback ran")

    monkeypatch.setattr(plan, "torch_gemm", no_fallback)
    for M, N in ((1, 32), (8, 128), (300, 128), (4096, 128), (1000, 60)):
        for dt in (BF16, F32):
            x, w, b = inputs(M, N, 2880)
            check(router_gemm(x, w, b, out_dtype=dt), x, w, b, dt)
