"""Shared body of the per-model examples: build the gate, run token counts, check against fp64, time on a GPU.

What "checked" means, per token count M:
  logits  router_gemm's logits against an fp64 x @ W.T + b: max |error| within bf16 output rounding (2^-8 of the
          largest |logit|, plus the fp32 accumulation's share) -> PASS/FAIL;
  route   cutlass_router.route's top-4 experts and weights against the same choice made on those very logits by
          the reference (routing_ref.select): ids equal, weights within 1e-5 -> PASS/FAIL;
  top-4   how often route's top-4 set equals the one chosen on exact fp64 logits. Not a pass/fail: rounding the
          logits to bf16 (as the model does) can swap two experts whose logits differ by less than a bf16 step.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import cutlass_router
from cutlass_router.routing_ref import select

DEFAULT_TOKENS = (1, 3, 16, 64, 256, 1000, 4096)


def load_router(checkpoint: Path, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One layer's router weight [experts, hidden] and bias from a local safetensors checkpoint (any shard)."""
    from safetensors import safe_open

    prefix = f"model.layers.{layer}.mlp.router."
    if not checkpoint.exists():
        raise SystemExit(f"--checkpoint {checkpoint}: no such file or directory (give a .safetensors file or the "
                         "directory holding the shards)")
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
    p = argparse.ArgumentParser(description=f"cutlass_router example: the {model} router (GEMM and expert choice), checked and timed")
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
    k = min(4, experts)
    header = f"{'M':>6} {'logits err':>10} {'logits':>6} {'route':>6} {f'top-{k} vs fp64':>14}"
    if on_gpu:
        header += f" {'gemm us':>8} {'F.linear us':>11} {'route us':>9}"
    print(header)
    rows, failed = [], 0
    with torch.no_grad():
        for M in map(int, args.tokens.split(",")):
            # seeded per M, so a run (and the test that checks its agreement) is reproducible
            x = torch.randn(M, hidden, generator=torch.Generator().manual_seed(M)).to(dev, torch.bfloat16)
            y = gate(x)
            r = cutlass_router.route(x, gate.weight, gate.bias, k, logits_dtype=torch.float32)
            if M == 0:
                ok = y.shape == (0, experts) and r.ids.shape == (0, k)
                failed += not ok
                rows.append({"M": 0, "max_err": 0.0, "top4_agree": 1.0, "pass": ok})
                print(f"{0:>6} {'-':>10} {'PASS' if ok else 'FAIL':>6} {'PASS' if ok else 'FAIL':>6} {'(empty)':>14}")
                continue
            ref = x.double() @ gate.weight.double().T + (0 if b is None else gate.bias.double())
            err = (y.double() - ref).abs().max().item()
            tol = ref.abs().max().item() * 2 ** -8 + 1e-3
            sel_w, sel_i = select(r.logits, k)
            route_ok = torch.equal(r.ids.long().cpu(), sel_i.cpu()) and torch.allclose(r.weights, sel_w, rtol=1e-5,
                                                                                     atol=1e-6)
            agree = (r.ids.long().sort(-1).values.cpu() == ref.topk(k, dim=-1).indices.sort(-1).values.cpu()
                     ).all(-1).float().mean().item()
            ok = err <= tol and route_ok
            failed += not ok
            row = {"M": M, "max_err": err, "top4_agree": agree, "pass": ok}
            line = (f"{M:>6} {err:10.2e} {'PASS' if err <= tol else 'FAIL':>6} {'PASS' if route_ok else 'FAIL':>6} "
                    f"{agree:14.1%}")
            if on_gpu:
                row["us"] = _time_us(lambda: gate(x))
                row["f_linear_us"] = _time_us(lambda: F.linear(x, gate.weight, gate.bias))
                row["route_us"] = _time_us(lambda: cutlass_router.route(x, gate.weight, gate.bias, k))
                line += f" {row['us']:8.2f} {row['f_linear_us']:11.2f} {row['route_us']:9.2f}"
            rows.append(row)
            print(line, flush=True)
    print(f"top-{k} vs fp64: agreement with a choice on exact logits; below 100% only where bf16 rounding of the "
          "logits ties or swaps two experts (see this file's docstring)")
    print("all checks passed" if not failed else f"{failed} token counts FAILED")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if failed:
        raise SystemExit(1)
    return rows
