"""Measure every candidate kernel per M on this GPU and write the dispatch table (tuned/<arch>.json).

Each candidate is checked against an fp64 reference before it is timed; timing is CUDA-graph replay, median,
like the benchmarks. A rung's kernel serves every M from the previous measured M (exclusive) to its own.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import torch

from . import dispatch, manifest, ops

M_LADDER = tuple(2 ** i for i in range(14))  # 1 .. 8192


def candidates() -> list[str]:
    return [s for s, e in manifest.entries().items() if e.out_dtype == "bf16"]


def twin_f32(symbol: str) -> str:
    return symbol.replace("_bf16_", "_f32_", 1)


def _bench(fn, rep_ms: int) -> float:
    import triton.testing

    return triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median") * 1000.0


def measure(N: int, K: int, ms=M_LADDER, rep_ms: int = 20, log=print) -> dict[int, dict[str, float]]:
    """{M: {symbol: microseconds}} for every candidate that computes the right answer."""
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16, generator=g) * K ** -0.5
    b = torch.randn(N, device=dev, dtype=torch.bfloat16, generator=g)
    table: dict[int, dict[str, float]] = {}
    for M in ms:
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16, generator=g)
        ref = x.double() @ w.double().T + b.double()
        row = {}
        for sym in candidates():
            out = torch.full((M, N), float("nan"), device=dev, dtype=torch.bfloat16)
            try:
                ops.run_kernel(sym, x, w, b, torch.bfloat16, out=out)
            except Exception as e:  # a kernel that cannot take this shape is simply not a candidate
                log(f"  skip {sym} at M={M}: {e}")
                continue
            err = ((out.double() - ref).norm() / ref.norm()).item()
            if not err < 1e-2:
                raise RuntimeError(f"{sym} is wrong at M={M} N={N} K={K}: relative error {err}")
            row[sym] = _bench(lambda: ops.run_kernel(sym, x, w, b, torch.bfloat16, out=out), rep_ms)
        table[M] = row
        best = min(row, key=row.get)
        log(f"N={N} K={K} M={M:5d}: best {best} {row[best]:.2f} us")
    return table


TIE = 0.03  # a kernel within 3% of the best at this M is as good: keep the previous rung's kernel then


def rungs(table: dict[int, dict[str, float]]) -> list[dict]:
    """Best kernel per measured M, adjacent equal choices merged; the last rung serves every larger M.

    Differences under TIE are run-to-run noise, so the previous rung's kernel is kept when it is that close:
    fewer switches between kernels as M grows, and a table that does not flip between tuning runs.
    """
    out: list[dict] = []
    for M in sorted(table):
        best = min(table[M], key=table[M].get)
        if out and table[M].get(out[-1]["bf16"], float("inf")) <= table[M][best] * (1 + TIE):
            best = out[-1]["bf16"]
        if out and out[-1]["bf16"] == best:
            out[-1]["max_m"] = M
        else:
            out.append({"max_m": M, "bf16": best, "f32": twin_f32(best)})
    out[-1]["max_m"] = 1 << 62
    return out


def write_table(path: Path, N: int, K: int, table: dict, command: str) -> None:
    data = json.loads(path.read_text()) if path.exists() else {"arch": "sm_90a", "shapes": []}
    data["shapes"] = [s for s in data["shapes"] if (s["N"], s["K"]) != (N, K)]
    data["shapes"].append({
        "N": N, "K": K, "card": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
        "command": command, "rungs": rungs(table),
        "us": {str(M): {s: round(t, 3) for s, t in sorted(row.items())} for M, row in sorted(table.items())},
    })
    data["shapes"].sort(key=lambda s: (s["N"], s["K"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    dispatch.tuned_table.cache_clear()


def default_path() -> Path:
    return Path(__file__).resolve().parent / "tuned" / "sm_90a.json"

