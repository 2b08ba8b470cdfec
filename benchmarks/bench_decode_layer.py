"""Decode-layer benchmark, the project's yardstick: the router's cost per layer inside a model's decode loop.

    python benchmarks/bench_decode_layer.py                      # all three models, M = 1 .. 4096
    python benchmarks/bench_decode_layer.py --model gpt-oss-120b --quick

Each row is one way to route (GEMM, then top-k and weights) timed by cutlass_router.yardstick.DecodeLoop:
L layers of out-projection + residual, RMSNorm, routing; cost = (loop - loop without routing) / L, CUDA graphs,
replayed interleaved. Peers in the same process: F.linear (cuBLAS), tinygemm2 (TensorRT-LLM's router GEMM, the
one vLLM and FlashInfer ship; built from .anchor/, see shared/anchor/make_tg2.sh), torch routing as transformers
runs it, Triton stand-ins for the engines' fused routing kernels (triton_peers.py), and an empty kernel (the floor).
Rows that take a pdl flag run with it on and off; route also with its default (pdl=None: the tuned table's choice
per M, labelled plain "route"). The router_gemm, route, tinygemm2 and empty rows also run after
a Triton RMSNorm that triggers its dependents early (producer triton_pdl), and after cutlass_router.rms_norm, which
does the same (producer crt_rms_norm, launched with PDL as its docs advise before route(pdl=True)), where PDL can
overlap the producer. A row's cost is over its own producer's base loop, and a producer launched with PDL makes
its base pay for the kernel after it not being launched with PDL (0.5-1.5 us): compare producers by the loop's
total per layer, base + row.
Writes <out>/<date>-<card>-decode-<model>.{json,md,png} and prints the tables.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # a checkout without install; an installed cutlass_router comes first
import cutlass_router  # noqa: E402
import cutlass_router.models  # noqa: E402
import triton_peers as tp  # noqa: E402
from cutlass_router.yardstick import EPS, DecodeLoop, rms_norm  # noqa: E402

# The shapes and expert choice of each model come from the package (the tuner uses the same).
MODELS = {name: dict(N=m.experts, K=m.hidden, top_k=m.top_k, bias=m.bias, fp32_logits=m.fp32_logits, route=m.route)
          for name, m in cutlass_router.models.MODELS.items()}
# (provider, its pdl values), in table order; "A+B" is GEMM A then routing B; pdl None: the provider's default
# (route: the tuned table's choice per M; the others take no flag)
FLAGS = (True, False)
ROWS = [("F.linear+torch", (None,)), ("F.linear+triton", (None,)), ("router_gemm+torch", FLAGS),
        ("router_gemm+triton", FLAGS), ("tinygemm2+triton", FLAGS), ("route", (None, True, False)),
        ("router_gemm", FLAGS), ("tinygemm2", FLAGS), ("F.linear", (None,)), ("empty", FLAGS)]
PRODUCERS = {"rms_norm": rms_norm, "triton_pdl": tp.rms_norm_pdl,
             "crt_rms_norm": lambda x, w, out: cutlass_router.rms_norm(x, w, EPS, out=out, pdl=True)}
PDL_PRODUCER_ROWS = ("router_gemm", "route", "tinygemm2", "empty")  # the rows also run after the early producers
DEFAULT_M = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096]
VALIDATE_M = 64
BASE = "base (no routing)"
DEVICE = "cuda"


def label(provider: str, pdl) -> str:
    return provider if pdl is None else f"{provider} {'pdl' if pdl else 'no-pdl'}"


def rows(cfg: dict, producer: str, have_tg2: bool, have_route: bool) -> list:
    """[(provider, pdl)] this model, producer and these peers allow (pdl None: the provider takes no flag)."""
    out = []
    for provider, pdls in ROWS:
        if producer != "rms_norm" and provider not in PDL_PRODUCER_ROWS:
            continue
        if ("tinygemm2" in provider or provider == "empty") and not have_tg2:
            continue
        if "tinygemm2" in provider and not cfg["bias"]:  # tinygemm2 requires a bias; DeepSeek's gate has none
            continue
        if provider == "route" and not have_route:
            continue
        out += [(provider, pdl) for pdl in pdls]
    return out


def scorers(cfg: dict, correction_bias):
    """(torch routing, Triton routing) of this model: logits -> (weights, ids)."""
    k = cfg["top_k"]
    if cfg["route"]["scoring"] == "sigmoid":
        r = cfg["route"]
        args = (k, r["n_group"], r["topk_group"], correction_bias, r["routed_scaling_factor"], r["renormalize"])
        return (lambda logits: tp.torch_sigmoid_grouped(logits, *args),
                lambda logits: tp.sigmoid_grouped_topk(logits, *args))
    return lambda logits: tp.torch_topk_softmax(logits, k), lambda logits: tp.topk_softmax(logits, k)


def gemm(name: str, pdl, fp32: bool, tg2):
    """x, w, b -> logits (fp32 for DeepSeek: router_gemm straight from its accumulator, the others as engines
    do, bf16 then .float())."""
    if name == "F.linear":
        return (lambda x, w, b: F.linear(x, w, b).float()) if fp32 else F.linear
    if name == "router_gemm":
        dtype = torch.float32 if fp32 else None
        return lambda x, w, b: cutlass_router.router_gemm(x, w, b, out_dtype=dtype, pdl=pdl)
    return lambda x, w, b: tg2.tg2(x, w, b, pdl)  # bf16 only: never asked for DeepSeek (see rows)


def routing(cfg: dict, provider: str, pdl, peers: dict):
    """The routing(layer, x, w, b) callable of one row; peers: tg2 (extension or None), route, correction_bias."""
    fp32 = cfg.get("fp32_logits", False)
    if provider == "empty":
        blocks = max(1, cfg["N"] // 16)
        return lambda i, x, w, b: peers["tg2"].empty(pdl, blocks)
    if provider == "route":
        kw = dict(cfg["route"], correction_bias=peers["correction_bias"]) if fp32 else cfg["route"]
        return lambda i, x, w, b: peers["route"](x, w, b, top_k=cfg["top_k"], pdl=pdl, **kw)
    g = gemm(provider.split("+")[0], pdl, fp32, peers["tg2"])
    if "+" not in provider:
        return lambda i, x, w, b: g(x, w, b)
    by_torch, by_triton = scorers(cfg, peers["correction_bias"])
    score = by_torch if provider.endswith("+torch") else by_triton
    return lambda i, x, w, b: score(g(x, w, b))


def validate(cfg: dict, fns: dict, peers: dict, dev) -> tuple[list, set]:
    """Run every row once at M = VALIDATE_M; compare its expert ids with torch routing of F.linear's logits (not
    an assert: bf16 GEMMs that sum in another order may flip near-ties). Returns (report lines, failed rows)."""
    N, K = cfg["N"], cfg["K"]
    g = torch.Generator(device=dev).manual_seed(1)
    x = torch.randn(VALIDATE_M, K, generator=g, device=dev).to(torch.bfloat16)
    w = (torch.randn(N, K, generator=g, device=dev) * K ** -0.5).to(torch.bfloat16)
    b = (torch.randn(N, generator=g, device=dev) * 0.5).to(torch.bfloat16) if cfg["bias"] else None
    by_torch, _ = scorers(cfg, peers["correction_bias"])
    ref_w, ref_ids = _sorted(*by_torch(gemm("F.linear", None, cfg.get("fp32_logits", False), None)(x, w, b)))
    lines, failed = [], set()
    for key, fn in fns.items():
        try:
            out = fn(0, x, w, b)
            if out is None:  # the empty kernel
                continue
            wts, ids = _sorted(*(by_torch(out) if isinstance(out, torch.Tensor) else out[:2]))
        except Exception as e:
            failed.add(key)
            lines.append(f"{label(*key)}: FAILED ({first_line(e)}); not timed")
            continue
        same = (ids == ref_ids).all(dim=1)
        dw = (wts.float() - ref_w.float())[same].abs().max().item() if same.any() else float("nan")
        lines.append(f"{label(*key)}: expert ids agree on {int(same.sum())}/{VALIDATE_M} rows, max |weight diff| "
                     f"on those {dw:.1e}")
    xn = torch.empty_like(x)
    err = (tp.rms_norm_pdl(x, peers["rms_w"], xn).float() - rms_norm(x, peers["rms_w"], None).float()).abs().max()
    lines.append(f"producer triton_pdl vs F.rms_norm: max |diff| {err.item():.1e} (bf16 rounding: ~1e-2)")
    mine = cutlass_router.rms_norm(x, peers["rms_w"], EPS).float()
    err = (mine - rms_norm(x, peers["rms_w"], None).float()).abs().max()
    lines.append(f"producer crt_rms_norm vs F.rms_norm: max |diff| {err.item():.1e} (bf16 rounding: ~1e-2)")
    return lines, failed


def _sorted(weights, ids):
    """Both ordered by expert id, so that routings that order their top k differently compare equal."""
    order = ids.long().argsort(dim=1)
    return weights.float().gather(1, order), ids.long().gather(1, order)


def first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def load_tg2(notes: list):
    """The tinygemm2 extension from .anchor/ (built here, about a minute), or None with a note."""
    try:
        sys.path.insert(0, str(ROOT / ".anchor"))
        import tg2

        return tg2.load()
    except Exception as e:
        notes.append(f"tinygemm2 peer unavailable ({first_line(e)}): its rows and the empty-kernel floor are skipped "
                     "(run shared/anchor/make_tg2.sh, carry .anchor)")
        return None


def md_tables(recs: list, producers) -> list:
    """One markdown table per producer: rows = M, columns = providers (pdl variants marked), µs per layer."""
    out = []
    for producer in producers:
        mine = [r for r in recs if r["producer"] == producer]
        if not mine:
            continue
        cols = list(dict.fromkeys(label(r["provider"], r["pdl"]) for r in mine))
        val = {(r["M"], label(r["provider"], r["pdl"])): r["us"] for r in mine}
        out += [f"Producer `{producer}`, µs per layer:", "", "| M | " + " | ".join(cols) + " |",
                "|---:|" + "---:|" * len(cols)]
        for M in sorted({r["M"] for r in mine}):
            out.append(f"| {M} | " + " | ".join(f"{val[M, c]:.2f}" if (M, c) in val else "–" for c in cols) + " |")
        out.append("")
    return out


def write_outputs(out_dir: Path, stem: str, recs: list, head: list, notes: list) -> list:
    """<stem>.json, .md (returned as lines) and .png (if matplotlib is importable) in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(recs, indent=1) + "\n")
    md = head + [""] + md_tables(recs, PRODUCERS) + [f"- {n}" for n in notes] + [""]
    (out_dir / f"{stem}.md").write_text("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return md
    producers = [p for p in PRODUCERS if any(r["producer"] == p for r in recs)]
    fig, axes = plt.subplots(1, len(producers), figsize=(8 * len(producers), 6), squeeze=False)
    color = {prov: plt.get_cmap("tab10")(i % 10) for i, (prov, _) in enumerate(ROWS)}  # one per provider
    for ax, producer in zip(axes[0], producers):
        mine = [r for r in recs if r["producer"] == producer and r["provider"] != BASE]  # base: in the table
        for prov, pdl in dict.fromkeys((r["provider"], r["pdl"]) for r in mine):
            pts = sorted((r["M"], r["us"]) for r in mine if (r["provider"], r["pdl"]) == (prov, pdl) and r["us"] > 0)
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, color=color[prov], ls="--" if pdl is False else ":" if pdl is None and prov == "route" else "-",
                        label=label(prov, pdl))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens M")
        ax.set_ylabel("µs per layer (decode loop, graph replay)")
        ax.set_title(f"producer {producer}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(head[0].lstrip("# "))
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    plt.close(fig)
    return md


def time_point(cfg: dict, M: int, keys: dict, peers: dict, args, dev) -> list:
    """[(producer, provider, pdl, µs per layer)] at one M, the base loop's own time per layer included; NaN for a
    row that failed to run or to be captured (DecodeLoop warns why)."""
    out = []
    for prod, producer in PRODUCERS.items():
        if args.dry_run:  # fake but plausible numbers: grow with M, PDL a little cheaper
            res = {key: 2.0 + 0.3 * len(key[0]) + M / 64 - 0.4 * bool(key[1]) for key in keys[prod]}
            base = 20.0 + M / 8
        else:
            loop = DecodeLoop(cfg["N"], cfg["K"], M, layers=args.layers, producer=producer, device=dev,
                              with_bias=cfg["bias"])
            res = loop.measure({key: routing(cfg, *key, peers) for key in keys[prod]}, rep_ms=args.rep_ms,
                               rounds=args.rounds, skip_errors=True)
            base = loop.base_us()
        out.append((prod, BASE, None, base))
        out += [(prod, provider, pdl, us) for (provider, pdl), us in res.items()]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--m", type=lambda s: [int(v) for v in s.split(",")], default=DEFAULT_M,
                   help="token counts, comma-separated (default: 1,2,4,...,256,1024,4096)")
    p.add_argument("--quick", action="store_true", help="M in 1, 8, 64 only")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--rep-ms", type=float, default=40.0, help="GPU ms of replays per graph and point")
    p.add_argument("--rounds", type=int, default=10, help="interleaved replays per graph and point")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--dry-run", action="store_true", help="no GPU: fake timings, to check the outputs")
    args = p.parse_args(argv)
    Ms = [1, 8, 64] if args.quick else args.m
    command = " ".join(["python benchmarks/bench_decode_layer.py", *(sys.argv[1:] if argv is None else argv)])
    date = datetime.date.today().isoformat()
    card = "dry-run" if args.dry_run else torch.cuda.get_device_name()
    slug = re.sub("[^A-Za-z0-9]+", "-", card).strip("-").lower()
    versions = {"torch": torch.__version__, "triton": triton.__version__}
    dev = "cpu" if args.dry_run else DEVICE
    start = time.time()
    notes = []
    route = getattr(cutlass_router, "route", None)
    if route is None:
        notes.append("cutlass_router.route does not exist in this build: the route rows are skipped")
    tg2 = object() if args.dry_run else load_tg2(notes)
    if not tp.PDL_LAUNCH:
        notes.append(f"Triton {triton.__version__} cannot launch with PDL: producer triton_pdl ran as a plain launch")
    for n in notes:
        print("note:", n)
    tables = []
    for model in args.model:
        cfg = MODELS[model]
        N, K = cfg["N"], cfg["K"]
        g = torch.Generator(device=dev).manual_seed(2)
        peers = {"tg2": tg2, "route": route, "correction_bias": torch.randn(N, generator=g, device=dev) * 0.1,
                 "rms_w": (1 + 0.1 * torch.randn(K, generator=g, device=dev)).to(torch.bfloat16)}
        keys = {prod: rows(cfg, prod, tg2 is not None, route is not None) for prod in PRODUCERS}
        model_notes = list(notes)
        if cfg.get("fp32_logits"):
            model_notes.append("DeepSeek-V3 routes on fp32 logits: router_gemm writes them from its fp32 accumulator "
                               "(out_dtype=float32); F.linear runs in bf16 then .float(), as serving engines do "
                               "(transformers casts both operands to fp32 first, much slower, not timed here); "
                               "tinygemm2 is not run (it requires a bias; this gate has none)")
        if not args.dry_run:
            lines, failed = validate(cfg, {key: routing(cfg, *key, peers) for key in keys["rms_norm"]}, peers, dev)
            print(f"{model}: validation at M={VALIDATE_M}, against torch routing of F.linear's logits (ties in "
                  "bf16 logits are broken differently: the Triton kernels take the lowest index)")
            print("\n".join("  " + line for line in lines))
            model_notes += [f"validation at M={VALIDATE_M}: {line}" for line in lines]
            keys = {prod: [key for key in ks if key not in failed] for prod, ks in keys.items()}
        recs = []
        for M in Ms:
            t0 = time.time()
            for prod, provider, pdl, us in time_point(cfg, M, keys, peers, args, dev):
                if not math.isfinite(us):
                    model_notes.append(f"{label(provider, pdl)} after {prod} at M={M}: failed (see the log)")
                    continue
                recs.append({"model": model, "experts": N, "hidden": K, "top_k": cfg["top_k"], "M": M,
                             "provider": provider, "pdl": pdl, "producer": prod, "us": round(us, 3),
                             "layers": args.layers, "card": card, "date": date, **versions, "command": command})
            print(f"{model} M={M}: {sum(r['M'] == M for r in recs)} rows in {time.time() - t0:.1f} s", flush=True)
        head = [f"# {model} router inside a decode layer (N={N}, K={K}, top-{cfg['top_k']}) on {card}, {date}", "",
                f"Command: `{command}` (torch {versions['torch']}, triton {versions['triton']}). "
                f"{args.layers} distinct layers of out-projection GEMM (4096 -> {K}) + residual add, RMSNorm "
                "(producer), routing; µs per layer = (loop with the row - loop without routing) / layers, CUDA "
                f"graphs replayed interleaved, medians of {args.rounds} replays of about "
                f"{args.rep_ms / args.rounds:g} ms each. `{BASE}` is the loop's own time per layer. Producer "
                "`rms_norm` is F.rms_norm; `triton_pdl` a Triton RMSNorm launched with PDL that lets its dependents "
                "launch early; `crt_rms_norm` is cutlass_router.rms_norm launched with PDL (it lets its dependents "
                "launch early). `empty` is an empty kernel (the floor of one launch). Costs are over each "
                "producer's own base; across producers compare totals (base + row): a producer launched with PDL "
                "pays in its base for a next kernel launched without it."]
        stem = f"{date}-{slug}-decode-{model}"
        tables += write_outputs(args.out, stem, recs, head, model_notes)
        print(f"wrote {args.out / stem}.{{json,md,png}}")
    print("\n".join(tables))
    print(f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
