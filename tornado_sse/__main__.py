"""The ``tornado-sse`` command.

``tornado-sse [flags]`` runs the gateway; ``tornado-sse demo [flags]`` runs it with the bundled
demo backend and page; ``tornado-sse check [flags]`` validates the settings and probes the
backend and Redis. Bad settings print one line and exit with status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from . import check, demo
from . import log as logsetup
from .config import ConfigError
from .server import parse, run, run_processes, serve


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tornado-sse`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        return demo.main(argv[1:])
    if argv and argv[0] == "check":
        return check.main(argv[1:])
    try:
        settings = parse(argv)
    except ConfigError as exc:
        print("tornado-sse: error: %s" % exc, file=sys.stderr)
        return 2
    logsetup.configure(settings.log_format, settings.log_level)
    if settings.processes != 1:
        return run_processes(settings)
    return run(serve(settings), settings)


if __name__ == "__main__":
    sys.exit(main())
