"""OpenMP threads that spin only briefly before sleeping, chosen before torch loads (importing this does it).

OpenMP reads its wait settings once, when torch is imported. By default GNU OpenMP (torch's on
Linux) lets an idle thread spin for 300,000 iterations before sleeping. On a machine shared with
other busy processes a spinning thread holds a core that the thread it waits for needs, and each
of the hundreds of parallel regions in a forward pass can stall for a scheduler time slice.
Measured on the 2-core machine with other processes busy (docs/performance.md): the decoder's
prefill over 905 tokens took 2.8 s with the default, 1.4 s with GOMP_SPINCOUNT=10000, 1.0 s with
OMP_WAIT_POLICY=PASSIVE; on a quiet machine PASSIVE slowed two-thread decode steps 2-3x (a
wake-up per region) while 10,000 spins matched the default. A setting the user made wins.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = "10000"
APPLIED = "torch" not in sys.modules  # too late once torch (and so OpenMP) is loaded
if APPLIED and "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
