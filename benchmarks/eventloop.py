"""The event loop of the load side (load generator, mock backend, soak): uvloop when installed.

The servers under test pick their own loop; this only decides where the benchmark's own
asyncio code runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: What :func:`run` accepts: ``auto`` is uvloop when it can be imported, else asyncio.
CHOICES = ("auto", "asyncio", "uvloop")


def loop_name(choice: str = "auto") -> str:
    """The loop :func:`run` uses for ``choice``: ``asyncio`` or ``uvloop``."""
    if choice != "auto":
        return choice
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """Run ``main`` to completion on the loop ``choice`` names and return its result.

    ``uvloop`` raises ImportError when uvloop is not installed; ``auto`` never does.
    """
    if loop_name(choice) == "asyncio":
        return asyncio.run(main)
    import uvloop  # type: ignore[import-not-found,unused-ignore]

    if hasattr(uvloop, "run"):
        return uvloop.run(main)  # type: ignore[no-any-return,unused-ignore]
    uvloop.install()  # uvloop before 0.18 has no run()
    return asyncio.run(main)
