"""Progress a user can see, on a terminal and in a job log.

``progress_bar`` wraps tqdm: on a terminal it redraws in place; in a log file (Snakemake sends
each job's stderr to ``results/logs/``) it writes a plain ASCII line at most every
``log_interval`` seconds, with done/total, rate and the time left, so ``tail -f`` on a log
shows whether a long batch is moving.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: float, description: str, unit: str = "it", log_interval: float = 30.0) -> tqdm:
    """A tqdm bar on stderr; updates throttled to ``log_interval`` seconds when not a terminal."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        ascii=not interactive,
        dynamic_ncols=interactive,
        mininterval=0.5 if interactive else log_interval,
        maxinterval=max(log_interval, 10.0),
        leave=True,
    )
