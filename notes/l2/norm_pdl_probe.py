"""Probe (not shipped): does a router launched with PDL overlap cutlass_router.rms_norm, and does it matter
whether the norm itself is launched with PDL? The decode loop with four producers (F.rms_norm; rms_norm launched
plain; rms_norm launched with PDL; the Triton stand-in, launched with PDL) and, after each, an empty kernel,
router_gemm and route with and without PDL. Reports each row's cost over its own base and the loop's total per
layer (base + row): the totals are comparable across producers, the costs are not.

    python notes/l2/norm_pdl_probe.py [out.json]
"""
import datetime
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / ".anchor"))
import cutlass_router as cr  # noqa: E402
import triton_peers as tp  # noqa: E402
from cutlass_router.yardstick import EPS, DecodeLoop, rms_norm  # noqa: E402

PRODUCERS = {"F.rms_norm": rms_norm,
             "crt": lambda x, w, out: cr.rms_norm(x, w, EPS, out=out),
             "crt pdl": lambda x, w, out: cr.rms_norm(x, w, EPS, out=out, pdl=True),
             "triton_pdl": tp.rms_norm_pdl}


def main():
    import tg2

    ext = tg2.load()
    card = torch.cuda.get_device_name()
    recs = []
    for model, N in (("gpt-oss-20b", 32), ("gpt-oss-120b", 128)):
        for M in (1, 8):
            for prod, fn in PRODUCERS.items():
                loop = DecodeLoop(N, 2880, M, producer=fn)
                rows = {}
                for pdl in (True, False):
                    rows[f"empty {pdl}"] = lambda i, x, w, b, pdl=pdl: ext.empty(pdl, max(1, N // 16))
                    rows[f"router_gemm {pdl}"] = lambda i, x, w, b, pdl=pdl: cr.router_gemm(x, w, b, pdl=pdl)
                    rows[f"route {pdl}"] = lambda i, x, w, b, pdl=pdl: cr.route(x, w, b, 4, pdl=pdl)
                res = loop.measure(rows)
                base = loop.base_us()
                print(f"{model} M={M} {prod:10s} base {base:6.2f} | " +
                      " ".join(f"{k} {v:5.2f} ({base + v:6.2f})" for k, v in res.items()), flush=True)
                recs += [dict(model=model, experts=N, hidden=2880, M=M, producer=prod, provider=k, us=v,
                              total=base + v, base=base, card=card, date=str(datetime.date.today()))
                         for k, v in res.items()]
                del loop
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
