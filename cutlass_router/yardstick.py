"""The decode-layer yardstick: what a routing step costs inside a model's decode loop, not back to back.

Isolated replay of one kernel flatters PDL (each call overlaps the previous call of the same kernel) and keeps
the weights in L2. Here the routing runs where it runs in a model: after an out-projection GEMM, the residual add
and the RMSNorm that produces its input, in L distinct layers, so its weights are cold. Its cost is the loop's
time with the routing minus the same loop's time without it, divided by L; both loops are CUDA graphs, replayed
interleaved (base, a, b, ..., base, a, b, ...) so that clock drift falls on both sides of the subtraction.

    loop = DecodeLoop(N=128, K=2880, M=8)
    us = loop.per_layer_us(lambda i, x, w, b: cutlass_router.router_gemm(x, w, b))
"""
from __future__ import annotations

import statistics
import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F

EPS = 1e-5
_BASE = object()  # the key of the loop without routing


def rms_norm(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The default producer: F.rms_norm, as models run it. It returns a new tensor and leaves out untouched:
    copying into out would put a copy kernel, not the RMSNorm, right before the routing."""
    return F.rms_norm(x, (x.shape[-1],), weight, EPS)


class DecodeLoop:
    """L layers of [out-projection GEMM (hidden -> K) + residual add, producer (RMSNorm), routing].

    producer(x, rms_weight, out) returns the normed activations (out, or a tensor of its own).
    routing(layer, xn, W, b) is called on each layer's normed activations [M, K] bf16, router weight [N, K] bf16
    and bias [N] bf16 (None with with_bias=False); what it returns is dropped. It may allocate (inside capture,
    allocations come from the graph's pool) but must not synchronise with the host.
    """

    def __init__(self, N: int, K: int, M: int, *, layers: int = 8, hidden: int = 4096,
                 producer: Optional[Callable] = None, seed: int = 0, device="cuda", with_bias: bool = True):
        self.N, self.K, self.M, self.layers = N, K, M, layers
        self.producer = producer or rms_norm
        g = torch.Generator(device=device).manual_seed(seed)

        def randn(*shape, scale=1.0):  # random, never zeros: a kernel must not profit from sparse inputs
            return (torch.randn(*shape, generator=g, device=device) * scale).to(torch.bfloat16)

        self.h = randn(M, hidden)
        self.residual = randn(M, K)
        self.wo = [randn(K, hidden, scale=hidden ** -0.5) for _ in range(layers)]
        self.rms_w = [(1 + randn(K, scale=0.1).float()).to(torch.bfloat16) for _ in range(layers)]
        self.w = [randn(N, K, scale=K ** -0.5) for _ in range(layers)]
        self.b = [randn(N, scale=0.5) if with_bias else None for _ in range(layers)]
        self.xn = [torch.empty(M, K, device=device, dtype=torch.bfloat16) for _ in range(layers)]
        self._base_us = None

    def run(self, routing: Optional[Callable] = None) -> None:
        """One pass through the L layers (the body of the timed graphs)."""
        r = self.residual
        for i in range(self.layers):
            r = r + F.linear(self.h, self.wo[i])
            xn = self.producer(r, self.rms_w[i], self.xn[i])
            if routing is not None:
                routing(i, xn, self.w[i], self.b[i])

    def measure(self, routings: dict, *, rep_ms: float = 40.0, rounds: int = 10,
                skip_errors: bool = False) -> dict:
        """Per-layer cost in µs of each routing in {key: routing}, against one base loop timed in the same rounds.

        Every graph holds the same n loops, n chosen so that one replay of the base takes about rep_ms / rounds;
        each graph is replayed once per round, rounds times, and the medians are subtracted. With skip_errors, a
        routing that fails to run or to be captured is warned about and reported as NaN instead of raising.
        """
        result = {}
        ok = {}
        for key, fn in routings.items():
            try:
                self.run(fn)  # outside capture: kernels build, load and plan lazily on their first call
                ok[key] = fn
            except Exception as e:
                if not skip_errors:
                    raise
                warnings.warn(f"{key}: {type(e).__name__}: {e}")
                result[key] = float("nan")
        torch.cuda.synchronize()
        one = self._graph(None, 1)
        self._replay_ms(one)
        loop_ms = statistics.median(self._replay_ms(one) for _ in range(3))
        del one
        n = max(1, round(rep_ms / rounds / loop_ms))
        graphs = {_BASE: self._graph(None, n)}
        for key, fn in ok.items():
            try:
                graphs[key] = self._graph(fn, n)
            except Exception as e:
                if not skip_errors:
                    raise
                warnings.warn(f"{key}: capture failed: {type(e).__name__}: {e}")
                result[key] = float("nan")
        times = {key: [] for key in graphs}
        for g in graphs.values():  # the first replay of a graph uploads it: not timed
            self._replay_ms(g)
        for _ in range(rounds):
            for key, g in graphs.items():
                times[key].append(self._replay_ms(g))
        loop = {key: statistics.median(t) / n * 1000.0 for key, t in times.items()}  # µs per loop
        self._base_us = loop[_BASE] / self.layers
        for key in graphs:
            if key is not _BASE:
                result[key] = (loop[key] - loop[_BASE]) / self.layers
        return {key: result[key] for key in routings}

    def per_layer_us(self, routing: Callable, **kw) -> float:
        """Per-layer cost in µs of one routing (see measure)."""
        return self.measure({"routing": routing}, **kw)["routing"]

    def base_us(self, **kw) -> float:
        """Per-layer time in µs of the loop without routing, from the last measure (timed now if none ran)."""
        if self._base_us is None:
            self.measure({}, **kw)
        return self._base_us

    def _graph(self, routing, n: int):
        """A CUDA graph of n loops, after one warm-up loop on a side stream (as torch's capture docs ask)."""
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            self.run(routing)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                self.run(routing)
        return g

    @staticmethod
    def _replay_ms(g) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        g.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
