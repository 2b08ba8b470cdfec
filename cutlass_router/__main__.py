"""python -m cutlass_router {emit,build,prebuild,tune,info}: the kernels' life cycle from the command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _emit(args) -> int:
    from . import emit

    out = Path(args.out) if args.out else emit.default_dir()
    if out is None:
        print("no emitted/ beside this package (not a source checkout): pass --out DIR", file=sys.stderr)
        return 2
    if args.check:
        stale = emit.diff(out)
        for name in stale:
            print(f"differs from the generator: {out / name}")
        return 1 if stale else 0
    for name in emit.write(out):
        print(f"wrote {out / name}")
    return 0


def _known(symbols: list[str]) -> list[str] | None:
    from . import manifest

    bad = []
    for s in symbols:
        try:
            manifest.entry(s)
        except KeyError as e:
            bad.append(str(e.args[0]))
    for message in bad:
        print(message, file=sys.stderr)
    return None if bad else symbols


def _build(args) -> int:
    """Compile with nvcc into the cache (never the shipped files), gate on spills and C7510, say what happened."""
    from concurrent.futures import ThreadPoolExecutor

    from . import build, families, manifest, resolve

    symbols = _known(args.symbols) if args.symbols else sorted(manifest.entries())
    if symbols is None:
        return 2
    try:
        build.find_toolchain()
    except build.ToolkitNotFound as e:
        print(f"cannot build: {e}", file=sys.stderr)
        return 2

    def one(sym):
        e = manifest.entry(sym)
        art = resolve.cubin(e.source(), sym, shipped=False)
        if families.of(e.family).HOST_LIB:
            resolve.host_library(e.source(), sym, shipped=False)
        facts = [ln.split(":", 1)[-1].strip() for ln in art.report.splitlines() if "registers" in ln or "spill" in ln]
        return sym, art, facts

    failed = 0
    with ThreadPoolExecutor(args.jobs) as ex:
        for f in [ex.submit(one, s) for s in symbols]:
            try:
                sym, art, facts = f.result()
                verb = "compiled" if art.origin == resolve.BUILT else "already in the cache"
                print(f"{sym}: {verb} ({art.path}); {'; '.join(facts)}", flush=True)
            except build.BuildError as e:
                failed += 1
                print(f"FAILED: {e}", flush=True)
    print(f"{len(symbols) - failed} of {len(symbols)} kernels built clean (no spills, no C7510)"
          + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def _prebuild(args) -> int:
    from . import ship

    for symbol in ship.write(args.jobs):
        print(f"prebuilt {symbol}")
    return 0


def _tune(args) -> int:
    import torch

    from . import models, target, tune

    names = args.model or []
    if not names and not (args.experts and args.hidden):
        raise SystemExit("pass --model NAME [NAME ...] or both --experts N and --hidden K")
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != target.CAPABILITY:
        print(f"tune times the kernels on the GPU: it needs an {target.ARCH} (Hopper) GPU, and this machine has "
              + (torch.cuda.get_device_name() if torch.cuda.is_available() else "none"), file=sys.stderr)
        return 2
    path = Path(args.write) if args.write else tune.default_path()
    command = " ".join(["python -m cutlass_router"] + sys.argv[1:])
    ms = tuple(int(m) for m in args.m.split(",")) if args.m else tune.M_LADDER
    shapes = [(models.get(n).shape, models.get(n)) for n in names] or [((args.experts, args.hidden), None)]
    for (N, K), model in shapes:
        if args.what in ("gemm", "both"):
            table = tune.measure(N, K, ms, rep_ms=args.rep_ms, method=args.method)
            tune.write_table(path, N, K, table, command, args.method, "shapes", args.merge)
        if args.what == "invariant":
            table = tune.measure(N, K, ms, rep_ms=args.rep_ms, method=args.method, invariant=True)
            tune.write_table(path, N, K, table, command, args.method, "invariant", args.merge)
        if args.what in ("route", "both") and model is not None:
            table = tune.measure_route(model, ms, rep_ms=args.rep_ms, method=args.method)
            tune.write_table(path, N, K, table, command, args.method, "route", args.merge)
    print(f"wrote {path}")
    return 0


def _info(args) -> int:
    from . import info

    print(info.report())
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cutlass_router", description=__doc__)
    sub = p.add_subparsers(dest="cmd", metavar="{emit,build,prebuild,tune,info}")
    e = sub.add_parser("emit", help="regenerate emitted/ (kernel sources and manifest)",
                       description="Run every family's generator over the catalog and write emitted/ (one .cu per "
                                   "kernel and manifest.json), byte for byte reproducible.")
    e.add_argument("--out", help="output directory (default: emitted/ of this checkout)")
    e.add_argument("--check", action="store_true", help="fail if the files differ from the generator")
    e.set_defaults(fn=_emit)
    b = sub.add_parser("build", help="compile kernels with nvcc into the cache; fail on spills or C7510",
                       description="Compile emitted kernels with nvcc into the build cache (not the shipped files), "
                                   "refusing local-memory spills and serialized wgmma (C7510), and print each "
                                   "kernel's registers and spills.")
    b.add_argument("symbols", nargs="*", help="kernel symbols (default: every kernel of the manifest)")
    b.add_argument("-j", "--jobs", type=int, default=2)
    b.set_defaults(fn=_build)
    pb = sub.add_parser("prebuild", help="refresh the package's prebuilt/ (what dispatch can reach)",
                        description="Compile every kernel dispatch can reach into the package's prebuilt/, link "
                                    "the CUTLASS host library for this platform and write prebuilt/index.json.")
    pb.add_argument("-j", "--jobs", type=int, default=2)
    pb.set_defaults(fn=_prebuild)
    t = sub.add_parser("tune", help="time every candidate per M on this GPU and write the dispatch tables",
                       description="On an sm90 GPU: check and time every candidate per M and write the dispatch "
                                   "tables (tuned/sm_90a.json): the GEMM ladder and, for a known model, the route "
                                   "ladder (--what invariant: batch-invariant mode's ladder). By default inside "
                                   "the decode-layer loop (cold weights, a producer before the router); --method "
                                   "isolated times back-to-back replays instead.")
    t.add_argument("--model", nargs="+", help="known models: gpt-oss-20b, gpt-oss-120b, deepseek-v3")
    t.add_argument("--experts", type=int)
    t.add_argument("--hidden", type=int)
    t.add_argument("--what", choices=("gemm", "route", "both", "invariant"), default="both",
                   help="both: the GEMM and route ladders; invariant: batch-invariant mode's ladder (its order's "
                        "kernels, checked to give each other's bits)")
    t.add_argument("--method", choices=("decode", "isolated"), default="decode")
    t.add_argument("--m", help="comma-separated M to measure (default 1, 2, 4, ... 8192)")
    t.add_argument("--write", help="table path (default: the package's tuned/sm_90a.json)")
    t.add_argument("--merge", action="store_true",
                   help="keep the table's timings of the M not measured now and choose the rungs from both")
    t.add_argument("--rep-ms", type=int, default=20)
    t.set_defaults(fn=_tune)
    i = sub.add_parser("info", help="GPU, driver, toolkit, switches, cache, kernels, dispatch per model",
                       description="Print the environment and which kernel each known model size takes, and "
                                   "where it comes from.")
    i.set_defaults(fn=_info)
    args = p.parse_args(argv)
    if args.cmd is None:
        p.print_help()
        return 0
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
