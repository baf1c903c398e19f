"""The ``tornado-sse`` command.

``tornado-sse [settings]`` runs the gateway; ``tornado-sse demo [settings]`` runs it with the
bundled demo backend and page; ``tornado-sse check [settings]`` validates the settings and
probes the backend and Redis. A bad setting, or a port that cannot be listened on, prints one
line and exits with status 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from . import check, demo
from . import log as logsetup
from .config import ConfigError
from .server import parse, run, run_processes, serve

#: What ``tornado-sse --help`` says first.
DESCRIPTION = """\
tornado_sse: a Server-Sent Events gateway for WSGI backends.

commands:
  tornado-sse [settings]         run the gateway
  tornado-sse demo [settings]    run it with a bundled demo backend and page on PORT
  tornado-sse check [settings]   check the settings, CALLBACK_URL (a signed probe) and Redis

Each command takes --help; the settings below apply to all three."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tornado-sse`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        return demo.main(argv[1:])
    if argv and argv[0] == "check":
        return check.main(argv[1:])
    try:
        settings = parse(argv, description=DESCRIPTION)
        if settings.processes == 1:
            logsetup.configure(settings.log_format, settings.log_level)
            return run(serve(settings), settings)
        # Several processes: every line says which one wrote it.
        logsetup.configure(settings.log_format, settings.log_level, {"pid": os.getpid()})

        def label(index: int) -> None:
            context = {"worker": index, "pid": os.getpid()}
            logsetup.configure(settings.log_format, settings.log_level, context)

        return run_processes(settings, forked=label)
    except ConfigError as exc:  # a bad setting, or a port in use (server.ListenError)
        print("tornado-sse: error: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
