"""tornado_sse: a Server-Sent Events gateway for backends that cannot hold open connections.

The package is a command (``tornado-sse``) and an embeddable application
(:func:`tornado_sse.app.make_app`). Backends use the client distribution ``tornado_sse_client``
(``clients/python``: push events, verify callbacks; standard library only), which
:mod:`tornado_sse.client` and :mod:`tornado_sse.signing` re-export. Importing the package itself
imports nothing else. ``__version__`` is the one place the version is written.
"""

__version__ = "2.0.0.dev0"
