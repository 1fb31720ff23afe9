"""OpenMP threads that sleep while they wait, chosen before torch loads (importing this sets it).

OpenMP reads OMP_WAIT_POLICY once, when torch is imported; by default its idle threads spin for
a while before sleeping. On a machine shared with other busy processes a spinning thread holds
a core the thread it waits for needs, and each of the hundreds of parallel regions in a forward
pass can stall for a scheduler time slice: measured on the 2-core machine under load, the
decoder's prefill took 10 s instead of 1.5 s, and a decode step 1.1 s instead of 0.14 s
(docs/performance.md). Sleeping costs a wake-up per region, which is small next to prefill's
large operations, and decode runs on one thread (`decode_threads`). A value the user set wins.
"""

from __future__ import annotations

import os
import sys

APPLIED = "torch" not in sys.modules  # too late once torch (and so OpenMP) is loaded
if APPLIED:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
