# A/B of the tiled kernels' template: the working tree's, then notes/invariant/tmp_old.cuh, tiles.py each (no ncu).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD CUTLASS_ROUTER_CACHE_DIR=$PWD/.cubins PYTHONUNBUFFERED=1
echo "=== new template"; timeout 200 python3 notes/invariant/tiles.py --min-m ${MIN_M:-512} --json $OUT/tiles-new.json 2>&1 | grep -E "M=|mismatch"
cp notes/invariant/tmp_old.cuh cutlass_router/templates/splitk_mma.cuh
echo "=== old template"; timeout 200 python3 notes/invariant/tiles.py --min-m ${MIN_M:-512} --json $OUT/tiles-old.json 2>&1 | grep -E "M=|mismatch"
