"""Shared body of the per-model examples: build the gate, run token counts, compare with fp64 and F.linear."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import cutlass_router

DEFAULT_TOKENS = (1, 3, 16, 64, 256, 1000, 4096)


def load_router(checkpoint: Path, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One layer's router weight [experts, hidden] and bias from a local safetensors checkpoint (any shard)."""
    from safetensors import safe_open

    prefix = f"model.layers.{layer}.mlp.router."
    files = sorted(checkpoint.glob("*.safetensors")) if checkpoint.is_dir() else [checkpoint]
    found: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                if key.startswith(prefix):
                    found[key[len(prefix):]] = st.get_tensor(key)
    if "weight" not in found:
        raise SystemExit(f"no {prefix}weight in {checkpoint} ({len(files)} safetensors files)")
    bias = found.get("bias")
    return found["weight"].to(torch.bfloat16), None if bias is None else bias.to(torch.bfloat16)


def _time_us(fn) -> float:
    try:
        import triton.testing

        return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median") * 1000.0
    except ImportError:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(10):
            fn()
        start.record()
        for _ in range(200):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) * 1000.0 / 200


def run(model: str, experts: int, hidden: int, argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=f"cutlass_router example: the {model} router GEMM")
    p.add_argument("--checkpoint", type=Path, help="local safetensors checkpoint (file or directory)")
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--tokens", default=",".join(map(str, DEFAULT_TOKENS)), help="comma-separated token counts")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    if args.checkpoint:
        w, b = load_router(args.checkpoint, args.layer)
        experts, hidden = w.shape
        source = f"{args.checkpoint} layer {args.layer}"
    else:
        g = torch.Generator().manual_seed(0)
        w = (torch.randn(experts, hidden, generator=g) * hidden ** -0.5).to(torch.bfloat16)
        b = (torch.randn(experts, generator=g) * 0.1).to(torch.bfloat16)
        source = "seeded random weights"
    gate = cutlass_router.RouterLinear(hidden, experts, bias=b is not None, device=dev)
    with torch.no_grad():
        gate.weight.copy_(w)
        if b is not None:
            gate.bias.copy_(b)
    on_gpu = dev.type == "cuda"
    print(f"{model}: N={experts} experts, K={hidden} hidden, {source}, on "
          + (torch.cuda.get_device_name(dev) if on_gpu else "CPU (torch path; the emitted kernels need an sm90 GPU)"))
    header = f"{'M':>6} {'max err':>9} {'top-4 agree':>11}"
    if on_gpu:
        header += f" {'ours us':>8} {'F.linear us':>11} {'speedup':>7}"
    print(header)
    rows = []
    with torch.no_grad():
        for M in map(int, args.tokens.split(",")):
            # seeded per M, so a run (and the test that checks its agreement) is reproducible
            x = torch.randn(M, hidden, generator=torch.Generator().manual_seed(M)).to(dev, torch.bfloat16)
            y = gate(x)
            ref = x.double() @ gate.weight.double().T + (0 if b is None else gate.bias.double())
            err = (y.double() - ref).abs().max().item()
            k = min(4, experts)
            agree = (y.float().topk(k, dim=-1).indices.sort(-1).values
                     == ref.topk(k, dim=-1).indices.sort(-1).values).all(-1).float().mean().item()
            row = {"M": M, "max_err": err, "top4_agree": agree}
            line = f"{M:>6} {err:9.2e} {agree:11.1%}"
            if on_gpu:
                row["us"] = _time_us(lambda: gate(x))
                row["f_linear_us"] = _time_us(lambda: F.linear(x, gate.weight, gate.bias))
                line += f" {row['us']:8.2f} {row['f_linear_us']:11.2f} {row['f_linear_us'] / row['us']:6.2f}x"
            rows.append(row)
            print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows
