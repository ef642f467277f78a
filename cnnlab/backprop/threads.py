"""How many threads NumPy's BLAS may use while the engine runs.

The engine's matrix products are small (seednet's largest is 20×250 by 250×4096), so extra
BLAS threads buy almost nothing, and when other processes compete for the cores, OpenBLAS's
spinning threads can make each step several times slower. The engine therefore runs its
loops with BLAS limited to one thread by default (via ``threadpoolctl``, which scikit-learn,
a cnnlab dependency, installs; without it nothing is changed).
"""

from __future__ import annotations

import contextlib
from typing import Any


def blas_threads(limit: int | None = 1) -> Any:
    """Context manager limiting BLAS to ``limit`` threads (``None``: leave as is)."""
    if limit is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")
