"""rms_norm: the router's producer that lets the router start early (families/rmsnorm.py, norm.py).

CPU: arguments, the torch path (== F.rms_norm), out= and in place, autograd, the custom ops (opcheck, compile).
GPU: the kernels against an fp64 reference at odd sizes with poisoned outputs, the layouts they leave to torch,
NaN and Inf rows, and route launched with PDL right after it in a CUDA graph, replayed while another stream
saturates memory, every replay compared.
"""
import pytest
import torch
import torch.nn.functional as F

import cutlass_router as cr
from conftest import replay_under_memory_traffic
from cutlass_router import dispatch, norm, ops, plan
from cutlass_router.families import rmsnorm as fam

BF16 = torch.bfloat16


def data(M, K, seed=0, device="cpu", lead=()):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(*lead, M, K, generator=g, device=device).to(BF16)
    w = (1 + 0.1 * torch.randn(K, generator=g, device=device)).to(BF16)
    return x, w


# ---- CPU -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 8), (3, 64), (7, 2880), (2, 5, 100)])
@pytest.mark.parametrize("eps", [1e-6, 1e-5, 0.0])
def test_cpu_path_equals_f_rms_norm(shape, eps):
    x, w = data(shape[-2], shape[-1], lead=shape[:-2])
    y = cr.rms_norm(x, w, eps)
    assert y.dtype == BF16 and y.shape == x.shape
    assert torch.equal(y, F.rms_norm(x, (shape[-1],), w, eps))


def test_out_and_in_place():
    x, w = data(5, 64)
    want = cr.rms_norm(x, w, 1e-5)
    out = torch.full_like(x, float("nan"))
    assert cr.rms_norm(x, w, 1e-5, out=out) is out and torch.equal(out, want)
    y = x.clone()
    assert cr.rms_norm(y, w, 1e-5, out=y) is y and torch.equal(y, want)
    assert cr.rms_norm(x[:0], w, 1e-5).shape == (0, 64)


def test_autograd_takes_the_differentiable_torch_path():
    x, w = data(4, 64)
    xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
    xb, wb = x.clone().requires_grad_(), w.clone().requires_grad_()
    cr.rms_norm(xa, wa, 1e-5).float().square().sum().backward()
    norm.torch_rms_norm(xb, wb, 1e-5).float().square().sum().backward()
    assert torch.equal(xa.grad, xb.grad) and torch.equal(wa.grad, wb.grad)
    with pytest.raises(RuntimeError, match="out= does not support automatic differentiation"):
        cr.rms_norm(xa, wa, 1e-5, out=torch.empty_like(x))


@pytest.mark.parametrize("call, error, match", [
    (lambda x, w: cr.rms_norm(x.float(), w, 1e-5), TypeError, "x must be torch.bfloat16"),
    (lambda x, w: cr.rms_norm(x, w.float(), 1e-5), TypeError, "weight must be torch.bfloat16"),
    (lambda x, w: cr.rms_norm([1.0], w, 1e-5), TypeError, "x must be a torch.Tensor"),
    (lambda x, w: cr.rms_norm(x, w[:10], 1e-5), ValueError, "weight must be 1-D of length 64"),
    (lambda x, w: cr.rms_norm(x[:, :0], w[:0], 1e-5), ValueError, "hidden >= 1"),
    (lambda x, w: cr.rms_norm(x[0, 0], w, 1e-5), ValueError, r"x must be \[..., hidden\]"),
    (lambda x, w: cr.rms_norm(x, w, -1.0), ValueError, "eps must be finite and >= 0"),
    (lambda x, w: cr.rms_norm(x, w, float("nan")), ValueError, "eps must be finite and >= 0"),
    (lambda x, w: cr.rms_norm(x, w, float("inf")), ValueError, "eps must be finite and >= 0"),
    (lambda x, w: cr.rms_norm(x, w, True), TypeError, "eps must be a float"),
    (lambda x, w: cr.rms_norm(x, w, "1e-5"), TypeError, "eps must be a float"),
    (lambda x, w: cr.rms_norm(x, w, 1e-5, pdl="no"), TypeError, "pdl must be True, False or None"),
    (lambda x, w: cr.rms_norm(x, w, 1e-5, out=torch.empty(5, 64)), TypeError, "out must be torch.bfloat16"),
    (lambda x, w: cr.rms_norm(x, w, 1e-5, out=torch.empty(4, 64, dtype=BF16)), ValueError, "out must have x's shape"),
    (lambda x, w: cr.rms_norm(x, w, 1e-5, out=torch.empty(1, 64, dtype=BF16).expand(5, 64)), ValueError,
     "rows overlap each other"),
])
def test_bad_arguments_are_named(call, error, match):
    x, w = data(5, 64)
    with pytest.raises(error, match=match):
        call(x, w)


def test_an_out_that_overlaps_x_without_being_x_is_refused():
    buf = torch.randn(6 * 64).to(BF16)
    x, w = buf[:5 * 64].view(5, 64), data(5, 64)[1]
    with pytest.raises(ValueError, match="out overlaps x without being x"):
        cr.rms_norm(x, w, 1e-5, out=buf[64:].view(5, 64))


def test_custom_ops_pass_opcheck_and_compile():
    x, w = data(3, 64)
    torch.library.opcheck(torch.ops.cutlass_router.rms_norm.default, (x, w, 1e-5))
    torch.library.opcheck(torch.ops.cutlass_router.rms_norm_out.default, (x, w, 1e-5, torch.empty_like(x)))
    f = torch.compile(lambda x, w: cr.rms_norm(x, w, 1e-5), fullgraph=True, dynamic=True)
    assert torch.equal(f(x, w), cr.rms_norm(x, w, 1e-5))


def test_each_kernel_takes_the_smallest_k_range_and_ships():
    assert fam.choose(8) == fam.SPECS[0].symbol and fam.choose(2880) == "crt_rmsnorm_v1_t384"
    assert fam.choose(7168) == "crt_rmsnorm_v2_t512" and fam.choose(fam.MAX_K) == fam.SPECS[-1].symbol
    assert fam.choose(fam.MAX_K + 8) is None
    assert {s.symbol for s in fam.SPECS} <= dispatch.reachable()
    for s in fam.SPECS:
        assert f"rms_norm_rows<{s.threads}, {s.vecs}>(params)" in s.emit() and s.max_k == 8 * s.vecs * s.threads
    with pytest.raises(ValueError):
        fam.RmsNormSpec(1, 100)


def test_run_kernel_refuses_a_kernel_that_is_not_a_gemm():
    from cutlass_router import ops

    x, w = data(2, 64)
    with pytest.raises(ValueError, match="is not a GEMM kernel"):
        ops.run_kernel(fam.SPECS[0].symbol, x, torch.ones(8, 64, dtype=BF16))


# ---- GPU -------------------------------------------------------------------------------------------------------

def ref64(x, w, eps):
    xd = x.double()
    return w.double() * (xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps))


@pytest.fixture
def kernels_only(monkeypatch):
    def no_fallback(*args, **kwargs):
        raise AssertionError("the torch fallback ran")

    monkeypatch.setattr(norm, "torch_rms_norm", no_fallback)


@pytest.mark.gpu
@pytest.mark.parametrize("M", [1, 3, 7, 13, 127, 1000])
@pytest.mark.parametrize("K", [8, 1000, 1024, 2880, 4096, 7168, 16384])
def test_kernel_matches_fp64(M, K, kernels_only):
    x, w = data(M, K, seed=M * 7 + K, device="cuda")
    x[0, : min(K, 16)] *= 1000  # a row far from unit scale
    for eps in (1e-6, 1e-5):
        out = torch.full_like(x, float("nan"))
        y = cr.rms_norm(x, w, eps, out=out)
        r = ref64(x, w, eps)
        # fp32 inside: within one bf16 step of the fp64 value, and equal to its rounding nearly everywhere
        assert ((y.double() - r).abs() <= r.abs() * 2 ** -8 + 1e-30).all()
        assert (y == r.to(BF16)).double().mean().item() > 0.999


@pytest.mark.gpu
def test_layouts_the_kernels_do_not_take_run_the_torch_path():
    x, w = data(9, 2888, device="cuda")
    cases = [(x[:, :100], w[:100]),                      # K % 8
             (x[:, 1:2881], w[1:2881]),                  # a misaligned pointer
             (x.t().contiguous().t()[:, :2880], w[:2880]),  # x not contiguous along K
             (torch.randn(2, 16392, device="cuda").to(BF16), torch.ones(16392, device="cuda", dtype=BF16))]
    for xs, ws in cases:
        assert torch.equal(cr.rms_norm(xs, ws, 1e-5), norm.torch_rms_norm(xs, ws, 1e-5))


@pytest.mark.gpu
def test_nan_and_inf_rows_follow_torch(kernels_only):
    x, w = data(4, 2880, device="cuda")
    x[1, 5] = float("nan")
    x[2, 7] = float("inf")
    x[3].zero_()
    y = cr.rms_norm(x, w, 1e-5).float()
    r = F.rms_norm(x.float(), (2880,), w.float(), 1e-5)
    assert torch.equal(y.isnan(), r.isnan()) and torch.equal(y.isinf(), r.isinf())
    assert y[1].isnan().all() and (y[3] == 0).all()
    assert torch.allclose(y[0], r[0], rtol=2 ** -7, atol=0)


@pytest.mark.gpu
def test_out_in_place_and_leading_dims(kernels_only):
    x, w = data(6, 2880, device="cuda", lead=(2,))
    want = ref64(x, w, 1e-5).to(BF16)
    y = x.clone()
    cr.rms_norm(y, w, 1e-5, out=y)
    z = cr.rms_norm(x, w, 1e-5)
    assert torch.equal(y, z) and z.shape == x.shape and (z == want).double().mean().item() > 0.999


@pytest.mark.gpu
def test_route_with_pdl_right_after_it_in_a_cuda_graph_under_memory_traffic(monkeypatch):
    """h -> poison xn (a torch fill) -> rms_norm (triggers its dependents at once) -> route(pdl=True), captured and
    replayed 2,000 times while another stream copies 512 MB. route launches before the norm has written xn, so a
    route that read x before its griddepcontrol.wait would see the poison; every replay is compared with the
    same calls made without PDL."""
    M, N, K = 8, 128, 2880
    g = torch.Generator(device="cuda").manual_seed(4)
    sources = [torch.randn(M, K, device="cuda", generator=g).to(BF16) for _ in range(4)]
    rms_w = (1 + 0.1 * torch.randn(K, device="cuda", generator=g)).to(BF16)
    w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(BF16)
    b = torch.randn(N, device="cuda", generator=g).to(BF16)
    with monkeypatch.context() as m:  # the kernels a capture takes (eager, route would run a fused kernel)
        m.setattr(ops, "_capturing", lambda: True)
        expected = [cr.route(cr.rms_norm(s, rms_w, 1e-5), w, b, 4, pdl=False) for s in sources]
    plan.clear()  # the capture's plan comes from the warm-up below
    h = torch.empty_like(sources[0])
    xn = torch.empty_like(h)

    def step():
        xn.fill_(float("nan"))
        cr.rms_norm(h, rms_w, 1e-5, out=xn)
        return cr.route(xn, w, b, 4, pdl=True)

    def wrong(i, out):
        return (out.ids != expected[i % 4].ids).sum() + (out.weights != expected[i % 4].weights).sum()

    h.copy_(sources[0])
    assert replay_under_memory_traffic(step, lambda i: h.copy_(sources[i % 4]), wrong) == 0
