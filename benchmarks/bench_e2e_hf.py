"""End-to-end decode throughput of a gpt-oss-20b-shaped transformers model, its MoE gates patched or not.

    python benchmarks/bench_e2e_hf.py                           # H100: 24 layers, batch 1 and 8, 128 new tokens
    python benchmarks/bench_e2e_hf.py --layers 12 --modes graph
    python benchmarks/bench_e2e_hf.py --device cpu --tiny --new-tokens 8 --rounds 2 --out /tmp/e2e   # a check

The model is transformers' GptOssForCausalLM with gpt-oss-20b's config (hidden 2880, 24 layers, 32 experts,
top-4, vocab 201088, hard-coded: no network) and random bf16 weights initialized on the device with a fixed seed.
One model object serves every variant, so the same weights do:
  unpatched  transformers' GptOssTopKRouter (F.linear, torch.topk, softmax)
  gemm       cutlass_router.hf.patch_routers(mode="gemm"): router_gemm, then transformers' topk and softmax
  route      cutlass_router.hf.patch_routers(mode="route"): GEMM + top-4 + softmax in one op
Variants are switched by swapping the gates' forwards (hf.unpatch_routers / patch_routers) and interleaved: one
warm-up round (excluded; it also compiles), then --rounds rounds, each running every variant once, in an order
rotated each round. Per run: generate(max_new_tokens=1) (the prefill and its token) and generate(max_new_tokens=N,
min_new_tokens=N); decode tokens/s = batch x (N - 1) / (t_N - t_1); end-to-end tokens/s = batch x N / t_N.
Execution modes (--modes, default eager,cudagraph):
  eager      model.generate(do_sample=False) as is (dynamic cache, no compilation)
  cudagraph  greedy decoding with a static cache, every decode step a CUDA graph captured by hand (GraphDecoder),
             as serving engines do without a compiler; at most sliding window - prompt tokens (112)
  graph  transformers' own compile path: a static cache (one StaticCache per batch size, reset before each call,
         so its addresses never change) and generate's automatic torch.compile of the decode step with
         CompileConfig(mode="reduce-overhead") = Inductor + CUDA graphs (the prefill runs eagerly). The
         warm-up round is long: 2-3 compiles per variant and batch size (gpt-oss's sliding-window cache keeps its
         length in a Python int, so dynamo makes it dynamic) and a CUDA graph recorded per decode position (one
         per value of that int); the timed rounds replay them (the positions repeat in every call).
All use the experts implementation --experts (default "grouped_mm": no host synchronization, capturable; the
old per-expert loop "eager" syncs every layer), printed at start. A mode or variant that fails (a compile error)
is reported and skipped; the others go on.
Profiler pass (after the timings): a few decode steps per variant under torch.profiler (CPU + CUDA activities),
the GPU time per step and the share spent in the router gate (see gate_time()).
Writes <out>/<date>-<card-slug>-e2e-gpt-oss-20b.{json,md,png} (-e2e-gpt-oss-tiny with --tiny) and prints a table.
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime
import gc
import inspect
import json
import math
import platform
import re
import statistics
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import torch
import torch._dynamo

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # a checkout without install; an installed cutlass_router comes first
import cutlass_router  # noqa: E402
from cutlass_router import hf  # noqa: E402

VARIANTS = ("unpatched", "gemm", "route")
MODES = ("eager", "cudagraph", "graph")
GATE_CLASS = "GptOssTopKRouter"
GATE_LABEL = "cutlass_router_bench::gate"  # the record_function range around every gate call (profiler pass)
# openai/gpt-oss-20b's config.json (quantization aside). Its rope (yarn, factor 32, original 4096 positions,
# theta 150000, beta_fast 32, beta_slow 1) and swiglu_alpha are GptOssConfig's defaults, recorded in the JSON.
GPT_OSS_20B = dict(hidden_size=2880, intermediate_size=2880, num_hidden_layers=24, num_local_experts=32,
                   num_experts_per_tok=4, num_attention_heads=64, num_key_value_heads=8, head_dim=64,
                   vocab_size=201088, sliding_window=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
                   swiglu_limit=7.0, attention_bias=True, tie_word_embeddings=False, initializer_range=0.02,
                   eos_token_id=200002, pad_token_id=199999)
TINY = dict(GPT_OSS_20B, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=256, sliding_window=64, eos_token_id=255,
            pad_token_id=0)


def first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- the model ----------------------------------------------------------------------------------------------------

def param_count(c: dict, layers: int) -> int:
    """Parameters of GptOssForCausalLM with config values c and `layers` layers (for the memory check)."""
    H, I, N, V = c["hidden_size"], c["intermediate_size"], c["num_local_experts"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    attn = (H * q + q) + 2 * (H * kv + kv) + (q * H + H) + c["num_attention_heads"]  # q, k, v, o (+ biases), sinks
    experts = N * (H * 2 * I + 2 * I + I * H + H)
    per_layer = attn + experts + (N * H + N) + 2 * H  # + router, 2 norms
    return layers * per_layer + V * H * (1 if c["tie_word_embeddings"] else 2) + H


def choose_layers(c: dict, wanted: int, device: torch.device, notes: list) -> int:
    """`wanted`, or fewer when the bf16 weights would not fit the free device memory with headroom for the
    activations, the compiler and the CUDA graph pools."""
    if device.type != "cuda":
        return wanted
    free, total = torch.cuda.mem_get_info(device)
    budget = free - max(6 << 30, int(0.08 * total))
    layers = wanted
    while layers > 1 and 2 * param_count(c, layers) > budget:
        layers -= 1
    if layers != wanted:
        notes.append(f"--layers {wanted} needs {2 * param_count(c, wanted) / 2**30:.1f} GiB of weights, "
                     f"{free / 2**30:.1f} GiB free: ran {layers} layers")
    return layers


def build_model(args, device: torch.device, notes: list):
    from transformers import GptOssConfig, GptOssForCausalLM

    values = dict(TINY if args.tiny else GPT_OSS_20B)
    layers = choose_layers(values, args.layers if args.layers else values["num_hidden_layers"], device, notes)
    values["num_hidden_layers"] = layers
    values["layer_types"] = [("sliding_attention", "full_attention")[i % 2] for i in range(layers)]
    cfg = GptOssConfig(**values)
    torch.manual_seed(args.seed)  # seeds the device's generator too: transformers' init runs there
    t0 = time.time()
    with torch.device(device):
        model = GptOssForCausalLM._from_config(cfg, dtype=torch.bfloat16, experts_implementation=args.experts)
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation(args.experts)
    else:  # older transformers: the config attribute the experts' forward dispatches on
        model.config._experts_implementation = args.experts
    model.eval()
    sync(device)
    gates = [m for m in model.modules() if type(m).__name__ == GATE_CLASS]
    print(f"model: GptOssForCausalLM, {layers} layers ({len(gates)} gates), {param_count(values, layers) / 1e9:.2f}B "
          f"parameters in bf16, built on {device} in {time.time() - t0:.1f} s; experts implementation "
          f"{model.config._experts_implementation!r}, attention {model.config._attn_implementation!r}", flush=True)
    if device.type == "cuda":
        print(f"device memory allocated: {torch.cuda.memory_allocated(device) / 2**30:.1f} GiB", flush=True)
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None)
    return model, len(gates), dict(values, rope=rope, experts_implementation=model.config._experts_implementation,
                                   attn_implementation=model.config._attn_implementation)


def set_variant(model, variant: str, n_gates: int) -> None:
    """Give every gate the forward of this variant (the same weights serve all)."""
    model._bench_variant = variant  # GraphDecoder keys its graphs on it
    hf.unpatch_routers(model)
    if variant != "unpatched":
        report = hf.patch_routers(model, mode=variant)
        if len(report.patched) != n_gates:
            raise RuntimeError(f"variant {variant}: expected {n_gates} gates patched, got\n{report}")


# ---- generation -------------------------------------------------------------------------------------------------

class Runner:
    """model.generate in one execution mode, for one batch size."""

    def __init__(self, model, mode: str, batch: int, args, device: torch.device):
        self.model, self.mode = model, mode
        self.kw = dict(do_sample=False)
        self.cache = None
        if mode == "graph":
            from transformers import CompileConfig, StaticCache

            inductor = args.compile_backend == "inductor"
            # transformers' defaults (fullgraph=False, dynamic=None: Inductor, CUDA graphs), the backend aside.
            # Not dynamic=False: gpt-oss's sliding-window layers keep their cache length in a Python int, which
            # dynamo then specializes on at every decode step (a recompile per token).
            cc = CompileConfig(backend=args.compile_backend, mode="reduce-overhead" if inductor else None)
            if device.type != "cuda":
                cc._compile_all_devices = True  # transformers compiles on CUDA only unless told (for the CPU check)
            longest = max(args.new_tokens, args.profile_steps + 3)  # the timed runs, the profiler pass
            self.cache = StaticCache(config=model.config, max_cache_len=args.prompt_len + longest + 8)
            params = inspect.signature(model.forward).parameters
            cache_kw = "cache" if "cache" in params else "past_key_values"
            self.kw.update(compile_config=cc, **{cache_kw: self.cache})
        else:
            self.kw.update(disable_compile=True)  # never auto-compile in this mode

    def generate(self, ids, mask, n: int, **extra):
        if self.cache is not None:
            self.cache.reset()
        return self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                   **self.kw, **extra)


class GraphDecoder:
    """Mode "cudagraph": greedy decoding with a static cache, each decode step replayed from a CUDA graph captured
    by hand (torch.cuda.graph), as serving engines capture their decode step; no compiler: the kernels are the
    eager ones. One graph per decode position (gpt-oss's sliding-window layers keep their length in a Python int,
    which a capture bakes in), captured once per variant after an eager warm-up pass, all in one memory pool. The
    prefill runs eagerly. The graph of step i reads the token the previous step (or the prefill) left in a static
    buffer and leaves its argmax there, so replays run back to back with no host synchronization.

    The sliding-window cache rolls once prompt + new tokens exceed the window (128), and that path copies a host
    tensor to the device (no capture can hold it): this mode decodes at most window - prompt tokens (max_new)."""

    def __init__(self, model, batch: int, args, device: torch.device):
        from transformers import StaticCache

        self.model, self.mode, self.device, self.batch = model, "cudagraph", device, batch
        window = getattr(model.config, "sliding_window", None) or 1 << 30
        self.max_new = max(2, min(max(args.new_tokens, args.profile_steps + 3), window - args.prompt_len))
        self.cache = StaticCache(config=model.config, max_cache_len=args.prompt_len + self.max_new + 8)
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.tok = torch.zeros(batch, 1, dtype=torch.long, device=device)     # the token the next step reads
        self.out = torch.zeros(batch, self.max_new, dtype=torch.long, device=device)  # every token emitted
        self.capture = device.type == "cuda"  # elsewhere (the --tiny CPU check) the steps run eagerly
        self.pool = torch.cuda.graph_pool_handle() if self.capture else None
        # One stream for the warm-up and every capture, as serving engines capture (torch.cuda.graph makes a new
        # stream per graph otherwise).
        self.stream = torch.cuda.Stream(device) if self.capture else None
        self.graphs: dict = {}  # (variant, prompt length) -> [graph of decode step i]

    # Without grad, as generate() runs: with autograd on, the cache's in-place updates chained every step's
    # activations into one graph (0.4 GB per decode step kept at batch 8: out of memory before the captures ended).
    @torch.no_grad()
    def _advance(self, ids, start: int, slot: int) -> None:
        """Run ids from position start, leave the next token in self.tok and in self.out[:, slot]."""
        pos = torch.arange(start, start + ids.shape[1], device=self.device)
        out = self.model(input_ids=ids, cache_position=pos, use_cache=True, logits_to_keep=1,
                         **{self.cache_kw: self.cache})
        nxt = out.logits[:, -1].argmax(-1)
        self.tok.copy_(nxt[:, None])
        self.out[:, slot].copy_(nxt)

    def _prefill(self, ids) -> None:
        self.cache.reset()
        self._advance(ids, 0, 0)

    def _step(self, i: int, prompt: int) -> None:  # decode step i: self.tok at position prompt + i
        self._advance(self.tok, prompt + i, i + 1)

    def _graphs(self, ids) -> list:
        key = (getattr(self.model, "_bench_variant", None), ids.shape[1])
        if key not in self.graphs and self.capture:
            steps = self.max_new - 1
            side = self.stream
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up: every position once, eagerly
                self._prefill(ids)
                for i in range(steps):
                    self._step(i, ids.shape[1])
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._memory(f"warm-up of {steps} steps ({key[0]})")
            self._prefill(ids)  # the cache's Python state at the first position again; captures then advance it
            graphs = []
            for i in range(steps):
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=self.pool, stream=self.stream):
                    self._step(i, ids.shape[1])
                graphs.append(g)
                if i in (0, steps // 2):
                    self._memory(f"{i + 1} graphs captured ({key[0]})")
            self.graphs[key] = graphs
            self._memory(f"{steps} graphs captured ({key[0]})")
        return self.graphs.get(key, [])

    def _memory(self, when: str) -> None:
        gib = 2 ** 30
        print(f"  after {when}: {torch.cuda.memory_allocated(self.device) / gib:.1f} GiB allocated, "
              f"{torch.cuda.memory_reserved(self.device) / gib:.1f} reserved", flush=True)

    def generate(self, ids, mask, n: int, logits_processor=None, **extra):
        if n > self.max_new:
            raise ValueError(f"cudagraph mode decodes at most {self.max_new} tokens here, not {n}")
        graphs = self._graphs(ids)
        self._prefill(ids)
        for i in range(n - 1):
            if self.capture:
                graphs[i].replay()
            else:
                self._step(i, ids.shape[1])
            for proc in logits_processor or ():  # the profiler's stepper
                proc(None, None)
        return torch.cat([ids, self.out[:, :n]], dim=1)


def release(runner, device: torch.device) -> None:
    """Let a runner's captured graphs, static cache and compiled code go, and give the memory back."""
    if runner is not None:
        getattr(runner, "graphs", {}).clear()  # GraphDecoder's
        runner.cache = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def timed(fn, device):
    """(seconds, result) of fn with the device synchronized at both ends; the garbage collector paused meanwhile
    (as timeit does: a collection inside one variant's run would land on that variant alone)."""
    gc.collect()
    sync(device)
    gc.disable()
    try:
        t = time.perf_counter()
        out = fn()
        sync(device)
        return time.perf_counter() - t, out
    finally:
        gc.enable()


class StepClock:
    """A logits processor that notes the host clock at each call: once per generated token, after its forward.
    generate() synchronizes with the device at every step (its stopping check reads a device tensor), so in the
    eager and graph modes the differences are the decode steps' times. Not for mode cudagraph, whose replays run
    ahead of the device."""

    def __init__(self):
        self.times: list = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores

    def steps_ms(self) -> list:
        return [(b - a) * 1e3 for a, b in zip(self.times, self.times[1:])]


@contextlib.contextmanager
def host_timed_gates(model):
    """Every gate call timed on the host clock (eager mode: the host is the bottleneck there, and the gate's cost
    is the Python and launches it runs). Yields a dict: calls, seconds."""
    acc = {"calls": 0, "seconds": 0.0}

    def wrap(inner):
        def forward(*a, **k):
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                acc["seconds"] += time.perf_counter() - t
                acc["calls"] += 1
        return forward

    with wrapped_gates(model, wrap):
        yield acc


def run_mode(model, runner: Runner, batch: int, args, device, n_gates: int, variants: list, notes: list):
    """Interleaved timings of the variants in one mode and batch: (records, first outputs per variant)."""
    g = torch.Generator().manual_seed(args.seed + batch)
    ids = torch.randint(0, model.config.vocab_size, (batch, args.prompt_len), generator=g).to(device)
    mask = torch.ones_like(ids)
    N = min(args.new_tokens, getattr(runner, "max_new", args.new_tokens))
    if N != args.new_tokens:
        notes.append(f"{runner.mode} batch {batch}: {N} new tokens, not {args.new_tokens} (see GraphDecoder)")
    records, outputs, failed = [], {}, {}
    from transformers import LogitsProcessorList

    for rnd in range(args.rounds + 1):
        shift = rnd % len(variants)
        for v in variants[shift:] + variants[:shift]:
            if v in failed:
                continue
            clock = StepClock() if runner.mode != "cudagraph" else None
            extra = {} if clock is None else {"logits_processor": LogitsProcessorList([clock])}
            try:
                set_variant(model, v, n_gates)
                t_1, _ = timed(lambda: runner.generate(ids, mask, 1), device)
                t_n, out = timed(lambda: runner.generate(ids, mask, N, **extra), device)
            except Exception as e:  # a compile error, say: report it, go on with the others
                failed[v] = first_line(e)
                notes.append(f"{runner.mode} batch {batch} {v}: FAILED ({failed[v]}); not timed")
                print(f"  {v}: FAILED\n{traceback.format_exc()}", flush=True)
                continue
            if out.shape[1] != args.prompt_len + N:
                raise RuntimeError(f"generate returned {out.shape[1] - args.prompt_len} new tokens, not {N}")
            decode = batch * (N - 1) / (t_n - t_1) if N > 1 and t_n > t_1 else float("nan")
            rec = dict(mode=runner.mode, batch=batch, variant=v, round=rnd, t_prefill_s=round(t_1, 6),
                       t_generate_s=round(t_n, 6), decode_tok_s=round(decode, 3),
                       e2e_tok_s=round(batch * N / t_n, 3),
                       step_ms=None if clock is None else [round(x, 4) for x in clock.steps_ms()])
            if rnd == 0:
                outputs[v] = out[:, args.prompt_len:].cpu()
                print(f"  warm-up {v}: generate {t_n:.2f} s (prefill {t_1:.2f} s)", flush=True)
            else:
                records.append(rec)
        if rnd == 0 and runner.mode == "graph" and getattr(model, "_compiled_call", None) is None:
            notes.append(f"graph batch {batch}: transformers did not compile the decode step (its auto-compile "
                         "criteria were not met); these are eager timings with a static cache")
        if rnd == 0:
            print(f"  timing {args.rounds} rounds ...", flush=True)
    return records, outputs, failed


# ---- profiler pass --------------------------------------------------------------------------------------------

class ProfilerStep:
    """A logits processor (called once per generated token, after its forward) that steps the profiler, so that
    the profiler's schedule windows whole decode steps."""

    def __init__(self):
        self.prof = None

    def __call__(self, input_ids, scores):
        if self.prof is not None:
            self.prof.step()
        return scores


@contextlib.contextmanager
def wrapped_gates(model, wrap):
    """Every gate's forward replaced by wrap(its forward now) for the duration, then put back as it was (an
    instance attribute, as patch_routers sets, or the class's)."""
    saved = []
    for m in model.modules():
        if type(m).__name__ == GATE_CLASS:
            saved.append((m, "forward" in m.__dict__, m.forward))
            m.forward = wrap(m.forward)
    try:
        yield
    finally:
        for m, had, inner in saved:
            if had:
                m.forward = inner
            else:
                del m.forward


@contextlib.contextmanager
def annotated_gates(model):
    """Every gate call inside record_function(GATE_LABEL), whatever forward the gate has now (eager mode only:
    CUDA graph replays run no Python)."""
    def wrap(inner):
        def forward(*a, **k):
            with torch.profiler.record_function(GATE_LABEL):
                return inner(*a, **k)
        return forward

    with wrapped_gates(model, wrap):
        yield


def gate_time(events, annotated: bool, device: torch.device) -> dict:
    """GPU time (µs, over the profiled steps) of the whole window and of the router gates.

    The whole: every device event (kernels, memcpy, memset). The gates:
      - eager mode (annotated): the kernels the profiler attributes (through CUPTI's correlation ids) to the CPU
        ops that ran inside a gate's record_function range: F.linear's GEMM, topk's and softmax's kernels for
        transformers' gate; router_gemm's or route's own kernels (launched through the driver API, attributed to
        the range itself) for the patched ones. Plus, should that attribution miss them, our kernels by name:
        every cutlass_router kernel is named crt_* (extern "C", see emitted/ and templates/), and in this model
        only the gates run them.
      - graph mode: replays run no Python, so nothing is attributed to the gate's range; the gate's kernels are
        found by name only: crt_* for the patched variants. transformers' own gate (F.linear + topk + softmax)
        compiles into Inductor/cuBLAS kernels whose names do not say where they come from (topk and softmax
        names also match the attention's softmax and the experts' sort): not reported (None).
    On a CPU device (the --tiny check) the same is computed from CPU op self times instead."""
    from torch.autograd import DeviceType

    on_gpu = device.type == "cuda"
    cpu = [e for e in events if e.device_type == DeviceType.CPU and not getattr(e, "is_async", False)]
    spans = sorted((e.time_range.start, e.time_range.end, e.thread) for e in cpu if e.name == GATE_LABEL)
    starts = [s[0] for s in spans]

    def inside(e) -> bool:  # within a gate's range, on the same thread (ranges of one thread nest)
        i = bisect.bisect_right(starts, e.time_range.start) - 1
        while i >= 0:
            s, t, thread = spans[i]
            if thread == e.thread and e.time_range.end <= t:
                return True
            if s < e.time_range.start - 1e7:  # far before: no enclosing range
                return False
            i -= 1
        return False

    names: Counter = Counter()
    if on_gpu:
        # Device records only: not the GPU-side spans the profiler draws for user annotations (ProfilerStep#N over
        # each step's kernels, the gate's record_function range), which would count those kernels twice.
        dev = [e for e in events if e.device_type != DeviceType.CPU and not getattr(e, "is_user_annotation", False)
               and not e.name.startswith("ProfilerStep#") and e.name != GATE_LABEL]
        total = sum(e.time_range.elapsed_us() for e in dev)
        crt = sum(e.time_range.elapsed_us() for e in dev if e.name.startswith("crt_"))
        count = len(dev)
        if annotated:
            for e in cpu:
                if e.kernels and inside(e):
                    for k in e.kernels:
                        names[k.name] += k.duration
            gate = sum(names.values())
            crt_attributed = sum(d for n, d in names.items() if n.startswith("crt_"))
            gate += max(0.0, crt - crt_attributed)
        else:
            gate = crt if crt > 0 else None
    else:  # CPU: self CPU time of the ops, those inside a gate's range for the gate
        total = sum(e.self_cpu_time_total for e in cpu)
        count = len(cpu)
        crt = 0.0
        gate = sum(e.self_cpu_time_total for e in cpu if inside(e)) if annotated else None
        for e in cpu:
            if annotated and inside(e):
                names[e.name] += e.self_cpu_time_total
    return dict(total_us=total, gate_us=gate, crt_us=crt, events=count, gate_kernels=dict(names.most_common(8)))


def profile_variant(model, runner: Runner, variant: str, n_gates: int, batch: int, args, device) -> dict:
    set_variant(model, variant, n_gates)
    g = torch.Generator().manual_seed(args.seed + 1000 + batch)
    ids = torch.randint(0, model.config.vocab_size, (batch, args.prompt_len), generator=g).to(device)
    steps = args.profile_steps
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    result = {}
    stepper = ProfilerStep()
    annotate = runner.mode == "eager"
    from transformers import LogitsProcessorList

    def ready(prof):
        result.update(gate_time(prof.events(), annotate, device))

    # step 0: the prefill (not recorded); step 1: the first decode step (warm-up); then `steps` decode steps
    sched = torch.profiler.schedule(wait=1, warmup=1, active=steps, repeat=1)
    with annotated_gates(model) if annotate else contextlib.nullcontext():
        with torch.profiler.profile(activities=activities, schedule=sched, on_trace_ready=ready) as prof:
            stepper.prof = prof
            runner.generate(ids, torch.ones_like(ids), steps + 3, logits_processor=LogitsProcessorList([stepper]))
            sync(device)
        stepper.prof = None
    if not result:
        raise RuntimeError("the profiler's window did not close")
    host = {}
    if annotate:  # eager: the gates' host time per decode step, without the profiler's overhead
        clock = StepClock()
        forwards = steps + 3  # tokens generated: the prefill and every decode step call each gate once
        with host_timed_gates(model) as acc:
            runner.generate(ids, torch.ones_like(ids), forwards, logits_processor=LogitsProcessorList([clock]))
            sync(device)
        host = dict(gate_host_us=acc["seconds"] * 1e6 / forwards if acc["calls"] else None,
                    step_host_us=statistics.median(clock.steps_ms()) * 1e3 if len(clock.times) > 1 else None)
    step_us = result["total_us"] / steps
    gate_us = None if result["gate_us"] is None else result["gate_us"] / steps
    share = gate_us / step_us if gate_us is not None and step_us else None
    return dict(mode=runner.mode, batch=batch, variant=variant, steps=steps, step_us=step_us, gate_us=gate_us,
                crt_us=result["crt_us"] / steps, gate_share=share, events_per_step=result["events"] / steps,
                unit="GPU µs" if device.type == "cuda" else "CPU µs",
                gate_kernels_us_per_step={k: v / steps for k, v in result["gate_kernels"].items()}, **host)


# ---- summary and outputs ----------------------------------------------------------------------------------------

def summarize(records: list) -> list:
    out = []
    rank = {v: i for i, v in enumerate(VARIANTS)}
    keys = sorted(dict.fromkeys((r["mode"], r["batch"], r["variant"]) for r in records),
                  key=lambda k: (MODES.index(k[0]) if k[0] in MODES else len(MODES), k[1], rank.get(k[2], len(rank))))
    for mode, batch, variant in keys:
        rs = [r for r in records if (r["mode"], r["batch"], r["variant"]) == (mode, batch, variant)]
        dec = [r["decode_tok_s"] for r in rs if math.isfinite(r["decode_tok_s"])]
        e2e = [r["e2e_tok_s"] for r in rs]
        steps = [t for r in rs for t in (r.get("step_ms") or ())]
        step = statistics.median(steps) if steps else None
        out.append(dict(mode=mode, batch=batch, variant=variant, rounds=len(rs),
                        decode_tok_s_median=statistics.median(dec) if dec else float("nan"),
                        decode_tok_s_min=min(dec) if dec else float("nan"),
                        decode_tok_s_max=max(dec) if dec else float("nan"),
                        e2e_tok_s_median=statistics.median(e2e),
                        steps_timed=len(steps), step_ms_median=step,
                        step_tok_s=batch * 1e3 / step if step else None))
    by_round = {(r["mode"], r["batch"], r["variant"], r["round"]): r["decode_tok_s"] for r in records}
    for s in out:
        base = next((b for b in out if (b["mode"], b["batch"], b["variant"]) == (s["mode"], s["batch"], "unpatched")),
                    None)
        s["vs_unpatched"] = (s["decode_tok_s_median"] / base["decode_tok_s_median"]
                             if base and base["decode_tok_s_median"] else None)
        # The same round's variants ran back to back: the median of their ratios cancels drifts between rounds.
        pairs = [v / by_round[k[:2] + ("unpatched", k[3])] for k, v in by_round.items()
                 if k[:3] == (s["mode"], s["batch"], s["variant"]) and by_round.get(k[:2] + ("unpatched", k[3]))
                 and math.isfinite(v)]
        s["paired_vs_unpatched"] = statistics.median(pairs) if pairs else None
        s["step_vs_unpatched"] = (base["step_ms_median"] / s["step_ms_median"]
                                  if base and base.get("step_ms_median") and s["step_ms_median"] else None)
    return out


def _fmt(v, spec=".1f"):
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _pct(share) -> str:
    return "–" if share is None else f"{100 * share:.2f}%"


def table(summary: list, profiles: list) -> list:
    prof = {(p["mode"], p["batch"], p["variant"]): p for p in profiles}
    lines = ["| mode | batch | variant | decode tok/s median | min | max | vs unpatched | paired vs unpatched | "
             "step ms, per-token median | vs unpatched (per token) | end-to-end tok/s | step µs (profiled) | "
             "gate µs | gate share | gate host µs/step |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        p = prof.get((s["mode"], s["batch"], s["variant"]), {})
        lines.append(f"| {s['mode']} | {s['batch']} | {s['variant']} | {_fmt(s['decode_tok_s_median'])} | "
                     f"{_fmt(s['decode_tok_s_min'])} | {_fmt(s['decode_tok_s_max'])} | "
                     f"{_fmt(s['vs_unpatched'], '.3f')} | {_fmt(s.get('paired_vs_unpatched'), '.3f')} | "
                     f"{_fmt(s.get('step_ms_median'), '.2f')} | {_fmt(s.get('step_vs_unpatched'), '.3f')} | "
                     f"{_fmt(s['e2e_tok_s_median'])} | {_fmt(p.get('step_us'))} | {_fmt(p.get('gate_us'), '.2f')} | "
                     f"{_pct(p.get('gate_share'))} | {_fmt(p.get('gate_host_us'))} |")
    return lines


def write_outputs(out_dir: Path, stem: str, doc: dict, md: list) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out_dir / f"{stem}.md").write_text("\n".join(md) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    summary = doc["summary"]
    batches = sorted({s["batch"] for s in summary})
    if not batches:
        return
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        mine = [s for s in summary if s["batch"] == batch]
        modes = list(dict.fromkeys(s["mode"] for s in mine))
        variants = list(dict.fromkeys(s["variant"] for s in mine))
        width = 0.8 / max(1, len(variants))
        for j, v in enumerate(variants):
            xs, ys, lo, hi = [], [], [], []
            for i, m in enumerate(modes):
                s = next((s for s in mine if (s["mode"], s["variant"]) == (m, v)), None)
                if s is None or not math.isfinite(s["decode_tok_s_median"]):
                    continue
                xs.append(i + (j - (len(variants) - 1) / 2) * width)
                ys.append(s["decode_tok_s_median"])
                lo.append(s["decode_tok_s_median"] - s["decode_tok_s_min"])
                hi.append(s["decode_tok_s_max"] - s["decode_tok_s_median"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=v)
        ax.set_xticks(range(len(modes)), modes)
        ax.set_ylabel("decode tokens/s (median, min-max)")
        ax.set_title(f"batch {batch}")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(doc["title"], fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    plt.close(fig)


# ---- main ---------------------------------------------------------------------------------------------------------

def _csv(kind, choices=None):
    def parse(s):
        vals = [kind(v) for v in s.split(",") if v]
        if choices is not None and any(v not in choices for v in vals):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return vals
    return parse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a 2-layer, hidden-64 gpt-oss (checks the script on a CPU)")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default 24; 2 with --tiny); fewer "
                   "are run, and said, when the weights do not fit the device")
    p.add_argument("--batches", type=_csv(int), default=[1, 8])
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10, help="timed rounds after the warm-up round")
    p.add_argument("--variants", type=_csv(str, VARIANTS), default=list(VARIANTS))
    p.add_argument("--modes", type=_csv(str, MODES), default=["eager", "cudagraph"],
                   help="eager, cudagraph (hand-captured CUDA graphs), graph (torch.compile reduce-overhead: "
                        "minutes of compiling per variant and batch at 24 layers)")
    p.add_argument("--experts", default="grouped_mm", help="transformers experts implementation: grouped_mm "
                   "(default), batched_mm, or eager (the per-expert loop, which syncs with the host)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the graph mode (inductor: mode reduce-overhead, CUDA graphs)")
    p.add_argument("--profile-steps", type=int, default=8, help="decode steps per variant in the profiler pass "
                   "(0: no profiler pass)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.new_tokens < 2:
        p.error("--new-tokens must be at least 2 (decode tokens/s needs a decode step)")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device: run with --device cpu --tiny to check the script")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    # One compiled decode step per (variant, batch) is cached at once: the guards select it when the gates'
    # forwards are swapped. Leave room beyond the default limit of 8.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
    import transformers

    command = " ".join(["python benchmarks/bench_e2e_hf.py", *(sys.argv[1:] if argv is None else argv)])
    date = datetime.date.today().isoformat()
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu {platform.machine()}"
    slug = re.sub("[^A-Za-z0-9]+", "-", card).strip("-").lower()
    stem = f"{date}-{slug}-e2e-gpt-oss-{'tiny' if args.tiny else '20b'}"
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "cutlass_router": cutlass_router.__version__, "python": platform.python_version()}
    print(f"{command}\non {card}; " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    notes: list = []
    start = time.time()
    if device.type == "cuda" and args.profile_steps > 0 and {"graph", "cudagraph"} & set(args.modes):
        try:  # CUPTI started once before any CUDA graph is captured (starting it after a capture can fail)
            acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            with torch.profiler.profile(activities=acts):
                torch.ones(1, device=device).add_(1)
                sync(device)
        except Exception as e:
            notes.append(f"could not initialize the profiler before the CUDA graphs ({first_line(e)})")
    model, n_gates, cfg = build_model(args, device, notes)

    records, outputs, profiles = [], {}, []
    for mode in args.modes:
        for batch in args.batches:
            print(f"[{mode}] batch {batch}: {len(args.variants)} variants, {args.new_tokens} new tokens after "
                  f"{args.prompt_len}, warm-up + {args.rounds} rounds", flush=True)
            t0 = time.time()
            runner = None
            try:
                runner = (GraphDecoder(model, batch, args, device) if mode == "cudagraph"
                          else Runner(model, mode, batch, args, device))
                recs, outs, failed = run_mode(model, runner, batch, args, device, n_gates, list(args.variants), notes)
            except Exception as e:
                notes.append(f"{mode} batch {batch}: FAILED ({first_line(e)})")
                print(f"  FAILED\n{traceback.format_exc()}", flush=True)
                release(runner, device)
                continue
            records += recs
            for v, o in outs.items():
                outputs[mode, batch, v] = o
            for s in summarize(recs):
                print(f"  {s['variant']:>9}: decode {s['decode_tok_s_median']:.1f} tok/s (min "
                      f"{s['decode_tok_s_min']:.1f}, max {s['decode_tok_s_max']:.1f}), paired vs unpatched "
                      f"{_fmt(s['paired_vs_unpatched'], '.3f')}, per-token median step "
                      f"{_fmt(s['step_ms_median'], '.2f')} ms", flush=True)
            # The profiler pass of this mode and batch now, while its graphs exist; then they are let go (one set of
            # graphs per variant and batch would otherwise pile up across the run).
            for v in [v for v in args.variants if v not in failed] if args.profile_steps > 0 else []:
                try:
                    profiles.append(profile_variant(model, runner, v, n_gates, batch, args, device))
                    q = profiles[-1]
                    print(f"  profiled {v}: step {_fmt(q['step_us'])} {q['unit']}, gate "
                          f"{_fmt(q['gate_us'], '.2f')} ({_pct(q['gate_share'])})" + (
                              f"; host: step {_fmt(q['step_host_us'])} µs, gates {_fmt(q['gate_host_us'])} µs"
                              if q.get("gate_host_us") is not None else ""), flush=True)
                except Exception as e:
                    notes.append(f"profiler pass {mode} batch {batch} {v}: FAILED ({first_line(e)})")
                    print(f"  profiled {v}: FAILED\n{traceback.format_exc()}", flush=True)
            release(runner, device)
            print(f"  done in {time.time() - t0:.0f} s" + (
                f"; {torch.cuda.memory_allocated(device) / 2**30:.1f} GiB allocated after release"
                if device.type == "cuda" else ""), flush=True)

    # Greedy decoding with the same weights: the variants should emit the same tokens, except after a near-tie
    # in a gate (bf16 logits ranked by another GEMM's rounding) or an argmax near-tie.
    agreement = {}
    for (mode, batch, v), o in outputs.items():
        ref = outputs.get((mode, batch, "unpatched"))
        if ref is not None and v != "unpatched":
            agreement[f"{mode} batch {batch} {v}"] = round((o == ref).float().mean().item(), 4)
    for (mode, batch, v), o in outputs.items():  # the hand-captured graphs decode what generate decodes
        ref = outputs.get(("eager", batch, v))
        if mode == "cudagraph" and ref is not None:
            n = min(o.shape[1], ref.shape[1])
            agreement[f"cudagraph batch {batch} {v} vs eager"] = round((o[:, :n] == ref[:, :n]).float().mean().item(), 4)
    if agreement:
        print("greedy tokens equal to unpatched's: " + ", ".join(f"{k} {100 * a:.1f}%" for k, a in agreement.items()))

    hf.unpatch_routers(model)
    # A replayed graph runs no Python, so nothing attributes the unpatched gate's kernels (cuBLAS, topk, softmax:
    # names that other layers share) to the gate: take the GPU time the eager profile attributed to the gate (the
    # same kernels, now launched from a graph) over the graph's step time, and say so.
    for q in profiles:
        e = next((r for r in profiles if (r["mode"], r["batch"], r["variant"]) == ("eager", q["batch"], q["variant"])),
                 None)
        if q["mode"] == "cudagraph" and q["gate_us"] is None and e is not None and e["gate_us"] is not None:
            q.update(gate_us=e["gate_us"], gate_share=e["gate_us"] / q["step_us"], gate_from="eager profile")
            notes.append(f"cudagraph batch {q['batch']} {q['variant']}: gate µs taken from the eager profile")

    summary = summarize(records)
    title = (f"gpt-oss-20b-shaped transformers model ({cfg['num_hidden_layers']} layers, random bf16 weights), "
             f"decode on {card}, {date}")
    head = [f"# {title}", "",
            f"Command: `{command}` ({', '.join(f'{k} {v}' for k, v in versions.items())}). "
            f"Batches {args.batches}, prompt {args.prompt_len} tokens, {args.new_tokens} new tokens (greedy), "
            f"experts implementation `{cfg['experts_implementation']}`, attention `{cfg['attn_implementation']}`. "
            f"Variants interleaved, order rotated per round; warm-up round excluded, {args.rounds} timed rounds. "
            "Decode tok/s = batch x (N - 1) / (t(generate N) - t(generate 1)). eager: generate as is; cudagraph: "
            "static cache, each decode step replayed from a hand-captured CUDA graph (eager kernels, no compiler); "
            "graph: "
            f"static cache + transformers' auto-compile (backend {args.compile_backend}"
            f"{', mode reduce-overhead: CUDA graphs' if args.compile_backend == 'inductor' else ''}). "
            f"Profiler columns: {args.profile_steps} decode steps per variant; gate = the router's kernels "
            "(eager: attributed to the gate's calls; graphs: cutlass_router's crt_* kernels by name, and for the "
            "unpatched gate in cudagraph mode the eager profile's gate time), share of all GPU time in the step. "
            "Paired vs unpatched: the median over rounds of the variant's tok/s over the unpatched tok/s of the "
            "same round (the variants of a round run back to back). Step ms, per-token median: every decode step "
            "of every timed round, by the host clock at each token (eager and graph modes; generate synchronizes "
            "once per step). Gate host µs/step (eager): the gates' host time per decode step, timed around each "
            "gate call in a separate pass. The garbage collector is paused during each timed generate.", ""]
    md = head + table(summary, profiles) + [""]
    if agreement:
        md.append("Greedy tokens equal to the unpatched variant's (same mode and batch): "
                  + ", ".join(f"{k} {100 * a:.1f}%" for k, a in agreement.items()) + ".")
        md.append("")
    for q in profiles:
        if q["gate_kernels_us_per_step"]:
            md.append(f"- gate kernels, {q['mode']} batch {q['batch']} {q['variant']} ({q['unit']} per step): "
                      + ", ".join(f"`{k[:90]}` {v:.2f}" for k, v in q["gate_kernels_us_per_step"].items()))
    md += [f"- {n}" for n in notes] + [""]
    doc = dict(title=title, command=command, date=date, card=card, versions=versions, config=cfg,
               args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, summary=summary,
               runs=records, profiles=profiles, token_agreement=agreement, notes=notes,
               seconds=round(time.time() - start, 1))
    write_outputs(args.out, stem, doc, md)
    print(f"wrote {args.out / stem}.{{json,md,png}}")
    print("\n".join(table(summary, profiles)))
    for n in notes:
        print("note:", n)
    print(f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
