"""Shared test settings.

One intra-op thread: the suite's networks are tiny, and on a small machine shared with other
jobs, OpenMP threads spinning against each other make a 6-step run take 15 s instead of 0.3 s.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
