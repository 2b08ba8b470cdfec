"""Peers for the decode-layer benchmark, never used by the library.

Triton stand-ins for the routing kernels serving engines run after the router GEMM (vLLM's topk_softmax and
grouped_topk, FlashInfer's): one program per token row, top-k by k rounds of argmax (lowest index wins a tie),
then the weights. The torch_* functions are what Hugging Face transformers runs (gpt-oss: topk then softmax;
DeepSeek-V3: sigmoid, grouped top-k). rms_norm_pdl is an RMSNorm producer that lets its dependents launch early,
so a PDL-launched consumer can overlap it. Set TRITON_INTERPRET=1 to run the kernels on CPU tensors.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
try:  # launch_pdl is a compile option since Triton 3.3; an unknown option would raise at the first launch
    from triton.backends.nvidia.compiler import CUDAOptions

    PDL_LAUNCH = "launch_pdl" in CUDAOptions.__dataclass_fields__ and hasattr(tl.extra.cuda, "gdc_wait")
except (ImportError, AttributeError):
    PDL_LAUNCH = False
NEG = tl.constexpr(float("-inf"))


@triton.jit
def _topk_kernel(logits, weights, ids, N, stride, K: tl.constexpr, KP: tl.constexpr, BLOCK_N: tl.constexpr,
                 SOFTMAX_FIRST: tl.constexpr, RENORM: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_N)
    v = tl.load(logits + row * stride + offs, mask=offs < N, other=NEG).to(tl.float32)
    if SOFTMAX_FIRST:
        e = tl.exp(v - tl.max(v, 0))
        v = tl.where(offs < N, e / tl.sum(e, 0), NEG)
    kk = tl.arange(0, KP)
    top_v = tl.full([KP], NEG, tl.float32)
    top_i = tl.zeros([KP], tl.int32)
    for j in tl.static_range(K):
        m = tl.max(v, 0)
        i = tl.min(tl.where(v == m, offs, BLOCK_N), 0)
        top_v = tl.where(kk == j, m, top_v)
        top_i = tl.where(kk == j, i, top_i)
        v = tl.where(offs == i, NEG, v)
    if SOFTMAX_FIRST:
        w = tl.where(kk < K, top_v, 0.0)
        if RENORM:
            w = w / tl.sum(w, 0)
    else:
        e = tl.exp(top_v - tl.max(top_v, 0))  # padding slots hold -inf: exp gives 0
        w = e / tl.sum(e, 0)
    tl.store(weights + row * K + kk, w, mask=kk < K)
    tl.store(ids + row * K + kk, top_i, mask=kk < K)


def _topk(logits, k, softmax_first, renormalize):
    M, N = logits.shape
    assert logits.stride(1) == 1 and k <= N <= 4096, (logits.shape, logits.stride(), k)
    weights = torch.empty(M, k, device=logits.device, dtype=torch.float32)
    ids = torch.empty(M, k, device=logits.device, dtype=torch.int32)
    if M:
        _topk_kernel[(M,)](logits, weights, ids, N, logits.stride(0), K=k, KP=triton.next_power_of_2(k),
                           BLOCK_N=triton.next_power_of_2(N), SOFTMAX_FIRST=softmax_first, RENORM=renormalize,
                           num_warps=1)
    return weights, ids


def topk_softmax(logits: torch.Tensor, k: int):
    """Top-k of logits [M, N] (bf16 or fp32), softmax over those k: (weights fp32 [M, k], ids int32 [M, k])."""
    return _topk(logits, k, False, False)


def softmax_topk(logits: torch.Tensor, k: int, renormalize: bool = False):
    """Softmax over all N, then the top k probabilities (renormalised to sum 1 if asked)."""
    return _topk(logits, k, True, renormalize)


@triton.jit
def _sigmoid_grouped_kernel(logits, bias, weights, ids, stride, scaling, K: tl.constexpr, KP: tl.constexpr,
                            G: tl.constexpr, GS: tl.constexpr, GSP: tl.constexpr, TOPK_GROUP: tl.constexpr,
                            RENORM: tl.constexpr):
    row = tl.program_id(0)
    col = tl.arange(0, GSP)[None, :]
    valid = col < GS
    e = tl.where(valid, tl.arange(0, G)[:, None] * GS + col, G * GS)  # expert index; padding: out of range
    s = tl.sigmoid(tl.load(logits + row * stride + e, mask=valid, other=0.0).to(tl.float32))
    c = tl.where(valid, s + tl.load(bias + e, mask=valid, other=0.0), NEG)  # corrected: used to choose only
    # group score: the sum of the group's two best corrected scores (a duplicated best counts twice, as topk(2))
    m1 = tl.max(c, 1)
    j1 = tl.min(tl.where(c == m1[:, None], col, GSP), 1)
    gs = m1 + tl.max(tl.where(col == j1[:, None], NEG, c), 1)
    gi = tl.arange(0, G)
    keep = tl.zeros([G], tl.int32)
    for _ in tl.static_range(TOPK_GROUP):
        i = tl.min(tl.where(gs == tl.max(gs, 0), gi, G), 0)
        keep = tl.where(gi == i, 1, keep)
        gs = tl.where(gi == i, NEG, gs)
    c = tl.where(keep[:, None] != 0, c, 0.0)  # experts of dropped groups score 0.0, as transformers' masked_fill
    c = tl.where(valid, c, NEG)
    kk = tl.arange(0, KP)
    top_w = tl.zeros([KP], tl.float32)
    top_i = tl.zeros([KP], tl.int32)
    for j in tl.static_range(K):
        m = tl.max(tl.max(c, 1), 0)
        i = tl.min(tl.min(tl.where(c == m, e, G * GS), 1), 0)
        top_i = tl.where(kk == j, i, top_i)
        top_w = tl.where(kk == j, tl.sum(tl.sum(tl.where(e == i, s, 0.0), 1), 0), top_w)  # uncorrected score
        c = tl.where(e == i, NEG, c)
    if RENORM:
        top_w = top_w / (tl.sum(top_w, 0) + 1e-20)
    tl.store(weights + row * K + kk, top_w * scaling, mask=kk < K)
    tl.store(ids + row * K + kk, top_i, mask=kk < K)


def sigmoid_grouped_topk(logits: torch.Tensor, k: int, n_group: int, topk_group: int,
                         correction_bias: torch.Tensor, scaling: float = 1.0, renormalize: bool = True):
    """DeepSeek-V3 routing of logits [M, N]: scores = sigmoid(logits); experts chosen on scores + correction_bias
    [N] fp32 within the topk_group best groups (group score = sum of its top 2); weights = the chosen experts'
    uncorrected scores, renormalised (+1e-20) if asked, times scaling. (weights fp32 [M, k], ids int32 [M, k])."""
    M, N = logits.shape
    assert logits.stride(1) == 1 and N % n_group == 0 and n_group & (n_group - 1) == 0, (logits.shape, n_group)
    weights = torch.empty(M, k, device=logits.device, dtype=torch.float32)
    ids = torch.empty(M, k, device=logits.device, dtype=torch.int32)
    if M:
        _sigmoid_grouped_kernel[(M,)](logits, correction_bias, weights, ids, logits.stride(0), float(scaling), K=k,
                                      KP=triton.next_power_of_2(k), G=n_group, GS=N // n_group,
                                      GSP=triton.next_power_of_2(N // n_group), TOPK_GROUP=topk_group,
                                      RENORM=renormalize, num_warps=1)
    return weights, ids


@triton.jit
def _rms_norm_kernel(x, w, out, K, stride_x, stride_o, eps, BLOCK: tl.constexpr, GDC: tl.constexpr):
    if GDC:
        tl.extra.cuda.gdc_launch_dependents()  # let the next kernel launch now (it waits for us before reading)
        tl.extra.cuda.gdc_wait()  # our input, from the kernel before us, is complete and visible
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < K
    v = tl.load(x + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    r = tl.rsqrt(tl.sum(v * v, 0) / K + eps)
    y = v * r * tl.load(w + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + row * stride_o + offs, y.to(out.dtype.element_ty), mask=mask)


def rms_norm_pdl(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm of x [M, K] into out, launched with PDL when this Triton can (PDL_LAUNCH); returns out."""
    M, K = x.shape
    assert x.stride(1) == 1 and out.stride(1) == 1 and out.shape == x.shape
    pdl = PDL_LAUNCH and not _INTERPRET  # the interpreter has no griddepcontrol
    extra = {"launch_pdl": True} if pdl else {}
    block = triton.next_power_of_2(K)
    if M:
        _rms_norm_kernel[(M,)](x, weight, out, K, x.stride(0), out.stride(0), eps, BLOCK=block, GDC=pdl,
                               num_warps=8 if block > 4096 else 4, **extra)
    return out


def torch_topk_softmax(logits: torch.Tensor, k: int):
    """gpt-oss in transformers: topk of the logits, softmax over those k (ids int64, as torch gives them)."""
    vals, ids = torch.topk(logits, k, dim=-1)
    return torch.softmax(vals, dim=-1, dtype=torch.float32), ids


def torch_softmax_topk(logits: torch.Tensor, k: int, renormalize: bool = False):
    """Mixtral/Qwen-MoE in transformers: softmax over all experts, the top k, optionally renormalised."""
    weights, ids = torch.topk(torch.softmax(logits, dim=-1, dtype=torch.float32), k, dim=-1)
    return (weights / weights.sum(dim=-1, keepdim=True) if renormalize else weights), ids


def torch_sigmoid_grouped(logits: torch.Tensor, k: int, n_group: int, topk_group: int,
                          correction_bias: torch.Tensor, scaling: float = 1.0, renormalize: bool = True):
    """DeepseekV3TopkRouter's selection in transformers, on given logits (ids int64, unsorted as it leaves them)."""
    M, N = logits.shape
    scores = logits.float().sigmoid()
    choice = scores + correction_bias.unsqueeze(0)
    group_scores = choice.view(M, n_group, N // n_group).topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(M, n_group, N // n_group).reshape(M, N)
    ids = torch.topk(choice.masked_fill(~score_mask.bool(), 0.0), k=k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * scaling, ids
