# Seventh session's invariant experiments: ncu on the large-M tiled kernels and the default, then tiles.py at M >= 512.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD CUTLASS_ROUTER_CACHE_DIR=$PWD/.cubins PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SECS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats"
if [ "${NCU:-1}" = 1 ]; then
for c in "crt_splitk_bf16_tiled_we4_wt2_e2_t4_s4_o32x1x1 8192 128 2880" "crt_splitk_bf16_tiled_we2_wt2_e2_t2_s3_o32x1x1 4096 128 2880"; do
  set -- $c
  echo "=== ncu $c"
  timeout 120 ncu $SECS -k regex:tiled -s 2 -c 1 python3 notes/invariant/ncu_tiled.py $c 2>&1 | grep -v "^==PROF==" | grep -E "Duration|Throughput|Occupancy|Registers|Stall|Warp Cycles|Issued|Eligible|Active Warps|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Waves|Block Limit|One or More|No Eligible|Shared Memory Configuration|Dynamic Shared" | head -40
done
echo "=== ncu default 8192 128 2880"
timeout 120 ncu $SECS -s 2 -c 1 python3 notes/invariant/ncu_default.py 8192 128 2880 2>&1 | grep -v "^==PROF==" | grep -E "crt_|Duration|Throughput|Occupancy|Registers|Warp Cycles|Issued|Eligible|Active Warps|L2 Hit|Mem Busy|Max Bandwidth|Waves|No Eligible" | head -30
fi
timeout ${TILES_S:-300} python3 notes/invariant/tiles.py --min-m ${MIN_M:-512} --json $OUT/tiles.json ${TILES_ARGS:-} 2>&1 | grep -v "^ *$"
