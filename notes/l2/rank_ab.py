"""A/B in the decode loop (not shipped): select_row's choice for one expert per lane (N <= 32) by ranks (32
shuffles, a ballot per choice) against the rounds of two warp reductions it replaced, in the GEMV route kernel that
gpt-oss-20b's route runs at M <= 32 (route.cuh route_gemv). The "rounds" kernel was the same template with the rank
branch compiled out (`if constexpr (kMaxP == 1)` -> false); both checked bit for bit against each other and against
the reference first, then timed in the same loop, interleaved, through the library's route plan.

Run 3 of 2026-11-29 (thirteenth session, H200; rank-ab-2026-11-29-h200.json): ranks 3.67 / 3.77 / 3.73 / 3.82 /
4.02 / 4.64 us against rounds 3.60 / 3.47 / 3.51 / 3.62 / 3.79 / 4.32 at M = 1 / 2 / 4 / 8 / 16 / 32: the ranks were
slower at every M, and were not kept (route.cuh's select_row has the rounds only).

This file is now the record only: the harness that ran it is notes/l2/smem_rank_ab.py's (the same code, which the
fourteenth session's A/B of ranks over shared-memory keys reused), and the shuffle-rank branch it compiled out is
no longer in the template. The script as run is in git history (commit 8ddc5ce).
"""
