#!/usr/bin/env bash
# One device session on the lent GPU (carry .whl, .cubins and .anchor): steps in order, everything logged to
# $OUT/run.log; result files (tables, JSON, plots, the tuned table) come back in $OUT/results.tgz.
#   bash scripts/device_run.sh [steps...]     steps: test routetest harness profile tune bench iso invariant eager
#                                             examples e2e sanitize installed
set -uo pipefail
OUT=${OUT:-/tmp/out}
RES=/tmp/results
mkdir -p "$OUT" "$RES"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
export CUTLASS_ROUTER_CACHE_DIR=${CUTLASS_ROUTER_CACHE_DIR:-$PWD/.cubins}
steps=${*:-test tune bench}
exec > >(tee -a "$OUT/run.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
for step in $steps; do
  echo "=== $step ($(date -u +%H:%M:%S))"
  case $step in
    test) timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider -x tests/ 2>&1 | tail -30 ;;
    harness) (cd notes/route-kernel && nvcc -std=c++17 -O3 -DNDEBUG --expt-relaxed-constexpr \
                -I "$(python3 -c 'import cutlass_library;print(cutlass_library.source_path)')/include" \
                -I ../../cutlass_router/templates -gencode=arch=compute_90a,code=sm_90a -o /tmp/harness harness.cu \
                && /tmp/harness --quick > "$RES/harness.log" 2>&1; echo "harness rc=$?"; grep -v "^FAIL: w" "$RES/harness.log" | tail -8) ;;
    routetest) timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_route_gpu.py tests/test_torture.py \
                 tests/test_gpu.py 2>&1 | tail -15 ;;
    profile)  # the select kernel before (scripts/tmp/route_old.cuh, if there) and after the template change
      if [ -f scripts/tmp/route_old.cuh ]; then
        cp cutlass_router/templates/route.cuh /tmp/route_new.cuh; cp scripts/tmp/route_old.cuh cutlass_router/templates/route.cuh
        echo "--- old template"; timeout 120 python3 scripts/profile_route.py 2>&1 | tail -16
        cp /tmp/route_new.cuh cutlass_router/templates/route.cuh; echo "--- new template"; fi
      timeout 120 python3 scripts/profile_route.py 2>&1 | tail -16 ;;
    tune) timeout ${TUNE_S:-380} python3 -m cutlass_router tune --model ${TUNE_MODELS:-gpt-oss-20b gpt-oss-120b deepseek-v3} ${TUNE_ARGS:-} \
            2>&1 | grep -v "  skip"; cp cutlass_router/tuned/sm_90a.json "$RES/" ;;
    bench) python3 benchmarks/bench_decode_layer.py --out "$RES" 2>&1 | tail -80 ;;
    iso) for m in openai/gpt-oss-120b openai/gpt-oss-20b; do
           python3 benchmarks/bench_router_gemm.py --model $m --out "$RES" 2>&1 | tail -18; done ;;
    invariant) python3 benchmarks/bench_invariant.py --out "$RES" 2>&1 | tail -40 ;;
    eager) python3 scripts/eager_cost.py --json "$RES/eager-cost.json" 2>&1 ;;
    examples) for m in 120b 20b; do python3 examples/gpt_oss_$m.py 2>&1; done ;;
    e2e)  # E2E_RUNS: ';'-separated argument sets, one process each, results in $RES/e2e-<i>/
      i=0; IFS=';' read -ra runs <<< "${E2E_RUNS:-}"; [ ${#runs[@]} -eq 0 ] && runs=("")
      for a in "${runs[@]}"; do i=$((i+1)); echo "--- e2e run $i: $a"
        timeout ${E2E_S:-560} python3 benchmarks/bench_e2e_hf.py --out "$RES/e2e-$i" $a 2>&1 \
          | grep -v -E "^USDT|^  File |^    |^ +\^" | tail -40; done ;;
    sanitize) bash scripts/sanitize.sh ;;
    installed)  # the wheel installed apart from the checkout, compiling off, an empty cache: a toolkit-less machine
      rm -rf /tmp/crt-wheel /tmp/crt-site
      python3 -m pip wheel -q --no-deps --no-build-isolation --no-index . -w /tmp/crt-wheel 2>&1 | tail -3
      python3 -m pip install -q --no-deps --no-index --target /tmp/crt-site /tmp/crt-wheel/*.whl
      repo=$PWD
      (cd /tmp && PYTHONPATH=/tmp/crt-site:/tmp/site CUTLASS_ROUTER_NVCC=none CUTLASS_ROUTER_CACHE_DIR=$(mktemp -d) \
        bash -c "python3 -c 'import cutlass_router; print(cutlass_router.__file__)'; python3 -m cutlass_router info;
                 python3 -m pytest -q -m gpu -p no:cacheprovider $repo/tests -k 'not forced and not candidate' 2>&1 | tail -4;
                 ls \$CUTLASS_ROUTER_CACHE_DIR | wc -l") ;;
  esac
done
tar czf "$OUT/results.tgz" -C "$RES" . && ls -la "$RES"
