#!/usr/bin/env bash
# One device session: build every kernel, GPU tests, tune both models, eager cost, benchmarks, examples,
# sanitizers, the installed wheel without a compiler (steps: build test tune eager bench examples profile sanitize
# installed). Logs to $OUT/run.log.
# Usage on the lent GPU (carry .whl; every kernel ships, so .cubins only saves compiles when sources changed):
# bash scripts/device_run.sh [steps...]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
export CUTLASS_ROUTER_CACHE_DIR=${CUTLASS_ROUTER_CACHE_DIR:-$PWD/.cubins}
steps=${*:-build test tune eager bench}
# $OUT returns at most 8 files: one log, the tuned table, and json/md/png per benchmarked model.
exec > >(tee -a "$OUT/run.log") 2>&1
for step in $steps; do
  echo "=== $step ($(date -u +%H:%M:%S))"
  case $step in
    build) python3 -m cutlass_router build -j 16 2>&1 | tail -3 ;;
    test) python3 -m pytest -q -m gpu tests/ 2>&1 | tail -6 ;;
    examples) for m in 120b 20b; do python3 examples/gpt_oss_$m.py 2>&1; done ;;
    tune) for m in gpt-oss-120b gpt-oss-20b; do python3 -m cutlass_router tune --model $m 2>&1 | grep -v skip; done
          cp cutlass_router/tuned/sm_90a.json "$OUT/" ;;
    eager) python3 scripts/eager_cost.py 2>&1 ;;
    bench) for m in openai/gpt-oss-120b openai/gpt-oss-20b; do
             python3 benchmarks/bench_router_gemm.py --model $m --out "$OUT" 2>&1 | tail -18; done ;;
    profile) python3 scripts/profile_splitk.py 2>&1 | tail -14 ;;
    sanitize) bash scripts/sanitize.sh ;;
    installed)  # the wheel installed apart from the checkout, compiling off, an empty cache: a toolkit-less machine
      rm -rf /tmp/crt-wheel /tmp/crt-site
      python3 -m pip wheel -q --no-deps --no-build-isolation --no-index . -w /tmp/crt-wheel 2>&1 | tail -3
      python3 -m pip install -q --no-deps --no-index --target /tmp/crt-site /tmp/crt-wheel/*.whl
      repo=$PWD
      (cd /tmp && PYTHONPATH=/tmp/crt-site:/tmp/site CUTLASS_ROUTER_NVCC=none CUTLASS_ROUTER_CACHE_DIR=$(mktemp -d) \
        bash -c "python3 -c 'import cutlass_router; print(cutlass_router.__file__)'; python3 -m cutlass_router info;
                 python3 -m pytest -q -m gpu -p no:cacheprovider $repo/tests 2>&1 | tail -4; ls \$CUTLASS_ROUTER_CACHE_DIR | wc -l") ;;
  esac
done
