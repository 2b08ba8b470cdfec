"""Command line: python -m cutlass_router {emit,build,prebuild,tune,info}."""
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


def _build(args) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from . import build, manifest

    symbols = args.symbols or list(manifest.entries())

    def one(sym):
        e = manifest.entry(sym)
        art = build.build_cubin(e.source(), sym)
        if e.launch["params"] == "host_lib":
            build.build_host_lib(e.source(), sym)
        regs = [ln.split(":", 1)[1].strip() for ln in art.report.splitlines() if "registers" in ln]
        return sym, regs

    failed = 0
    with ThreadPoolExecutor(args.jobs) as ex:
        futures = [ex.submit(one, s) for s in symbols]
        for f in futures:
            try:
                sym, regs = f.result()
                print(f"{sym}: {'; '.join(regs)}", flush=True)
            except build.BuildError as e:
                failed += 1
                print(f"FAILED: {e}", flush=True)
    return 1 if failed else 0


def _prebuild(args) -> int:
    from . import prebuilt

    for symbol in prebuilt.write():
        print(f"prebuilt {symbol}")
    return 0


def _shape(args) -> tuple[int, int]:
    from . import models

    if args.model:
        return models.shape(args.model)
    if not (args.experts and args.hidden):
        raise SystemExit("pass --model NAME or both --experts N and --hidden K")
    return args.experts, args.hidden


def _tune(args) -> int:
    from . import tune

    N, K = _shape(args)
    table = tune.measure(N, K, rep_ms=args.rep_ms)
    path = Path(args.write) if args.write else tune.default_path()
    tune.write_table(path, N, K, table, " ".join(["python -m cutlass_router"] + sys.argv[1:]))
    print(f"wrote {path}")
    return 0


def _info(args) -> int:
    from . import info

    print(info.report())
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cutlass_router", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("emit", help="regenerate emitted/ (kernel sources and manifest)")
    e.add_argument("--out", help="output directory (default: emitted/ of this checkout)")
    e.add_argument("--check", action="store_true", help="fail if the files differ from the generator")
    e.set_defaults(fn=_emit)
    b = sub.add_parser("build", help="compile emitted kernels into the cache; fail on spills or C7510")
    b.add_argument("symbols", nargs="*", help="kernel symbols (default: all)")
    b.add_argument("-j", "--jobs", type=int, default=2)
    b.set_defaults(fn=_build)
    pb = sub.add_parser("prebuild", help="compile every kernel (and the CUTLASS host library) into the package's prebuilt/")
    pb.set_defaults(fn=_prebuild)
    t = sub.add_parser("tune", help="time every candidate per M on this GPU and write the dispatch table")
    t.add_argument("--model", help="gpt-oss-20b or gpt-oss-120b")
    t.add_argument("--experts", type=int)
    t.add_argument("--hidden", type=int)
    t.add_argument("--write", help="table path (default: the package's tuned/sm_90a.json)")
    t.add_argument("--rep-ms", type=int, default=20)
    t.set_defaults(fn=_tune)
    i = sub.add_parser("info", help="GPU, driver, toolkit, cache, built kernels, dispatch per model")
    i.set_defaults(fn=_info)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
