"""Which torchrun rank this process is, from the environment alone (no torch import): the CLI's error
path asks it before it prints, and must answer in milliseconds."""
from __future__ import annotations

import os

QUIET_EXIT_DELAY_S = 2.0


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def speaks() -> bool:
    """Whether this process prints user-facing lines: always, except a torchrun rank other than 0
    (every rank validates the same input, so rank 0's one line says it for all of them)."""
    return env_int("RANK", 0) == 0


def quiet_rank_exit() -> bool:
    """On a torchrun rank other than 0 that is about to exit on bad input: wait a moment, so that
    rank 0 (which found the same problem) prints its line before torchrun stops the job, and say
    True (print nothing). False on rank 0 and outside torchrun."""
    import time

    if speaks():
        return False
    time.sleep(QUIET_EXIT_DELAY_S)
    return True
