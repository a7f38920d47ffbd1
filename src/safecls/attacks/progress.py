"""Progress of the per-request searches (GCG, AutoDAN) in a piped log, where their tqdm bars are off."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

SEARCH_LOG_POINTS = 10  # a per-request search logs its progress this many times (the tqdm bar is off in a piped log)


def log_search_step(name: str, step: int, total: int, best_loss: float) -> None:
    """Progress of a per-request search (GCG, AutoDAN) in a piped log: every tenth of its steps, and the last."""
    if (step + 1) % max(1, total // SEARCH_LOG_POINTS) == 0 or step + 1 == total:
        logger.info("%s: step %d of %d, best loss %.4f", name, step + 1, total, best_loss)
