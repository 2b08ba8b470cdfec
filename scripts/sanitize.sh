#!/usr/bin/env bash
# compute-sanitizer memcheck, racecheck, synccheck and initcheck over every kernel dispatch can pick.
# Run on the GPU from the repo root (the package importable, kernels built or nvcc present).
set -uo pipefail
status=0
# --report-api-errors no: cuda-bindings resolves every driver entry point it knows with cuGetProcAddress at its
# first call, and the ones newer than the installed driver answer CUDA_ERROR_INVALID_VALUE; memcheck counts those
# probes as errors (34 with cuda-bindings 13.4 on driver 580). Kernel memory errors are still reported.
for tool in memcheck racecheck synccheck initcheck; do
  echo "=== compute-sanitizer --tool $tool"
  timeout 300 compute-sanitizer --tool "$tool" --report-api-errors no --error-exitcode 99 --print-limit 10 \
    python3 scripts/sanitize_cases.py 2>&1 | grep -v "^========= COMPUTE-SANITIZER$" | tail -8
  rc=${PIPESTATUS[0]}
  echo "$tool exit code: $rc"
  [ "$rc" -eq 0 ] || status=1
done
exit $status
