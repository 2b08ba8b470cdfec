# Warp stall breakdown of tiled kernels: bash notes/invariant/ncu_stalls.sh "SYMBOL M N K" ...
for c in "$@"; do
  echo "=== ncu stalls $c"
  timeout 120 ncu --section WarpStateStats --section SchedulerStats --print-details all -k regex:tiled -s 2 -c 1 \
    python3 notes/invariant/ncu_tiled.py $c 2>&1 | grep -v "^==PROF==" | grep -E "Duration|Stall|Warp Cycles|Issued Warp|Eligible Warps|Active Warps" | grep -v "^ *$" | head -40
done
