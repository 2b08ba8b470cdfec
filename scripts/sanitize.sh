#!/usr/bin/env bash
# compute-sanitizer memcheck, racecheck, synccheck and initcheck over every kernel dispatch can pick.
# Run on the GPU from the repo root (the package importable, kernels built or nvcc present).
set -uo pipefail
status=0
# --report-api-errors no: cuda-bindings resolves every driver entry point it knows with cuGetProcAddress at its
# first call, and the ones newer than the installed driver answer CUDA_ERROR_INVALID_VALUE; memcheck counts those
# probes as errors (34 with cuda-bindings 13.4 on driver 580). Kernel memory errors are still reported.
# synccheck (compute-sanitizer 2025.3.1, driver 580) faults on the st.async + mbarrier exchange when clusters hold 16
# CTAs and 8 or more clusters run, in our kernels and in a standalone kernel alike, while the same code is
# correct without the tool and with clusters of 8 (notes/synccheck-cluster16/). memcheck, racecheck and initcheck
# cover the cluster-16 kernels; synccheck checks the rest. The fused route kernels size their cluster by N (up to
# 16 CTAs): under synccheck they run only the shapes whose clusters hold at most 8 (SANITIZE_MAX_CLUSTER).
CLUSTER16=$(python3 -c "from cutlass_router import dispatch; print(','.join(sorted(s for s in dispatch.reachable() if '_c16_' in s)))")
for tool in ${SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}; do
  echo "=== compute-sanitizer --tool $tool"
  if [ "$tool" = synccheck ]; then export SANITIZE_EXCLUDE=$CLUSTER16 SANITIZE_MAX_CLUSTER=8; echo "excluded: $CLUSTER16"
  else unset SANITIZE_EXCLUDE SANITIZE_MAX_CLUSTER; fi
  timeout ${SANITIZE_TOOL_S:-300} compute-sanitizer --tool "$tool" --report-api-errors no --error-exitcode 99 --print-limit 10 \
    python3 scripts/sanitize_cases.py 2>&1 | grep -v "^========= COMPUTE-SANITIZER$" | tail -8
  rc=${PIPESTATUS[0]}
  echo "$tool exit code: $rc"
  [ "$rc" -eq 0 ] || status=1
done
exit $status
