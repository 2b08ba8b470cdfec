nvcc -arch=sm_90a -O2 -o /tmp/cluster_min notes/synccheck-cluster16/repro.cu || exit 1
for c in 8 16; do for n in 2 8 64; do for v in 0 2; do
  /tmp/cluster_min $c $n $v | tr '\n' ' '
  echo -n " | synccheck: "; compute-sanitizer --tool synccheck /tmp/cluster_min $c $n $v 2>&1 | grep -E "sync |ERROR SUMMARY" | tr '\n' ' '; echo
done; done; done
