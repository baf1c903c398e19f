"""tornado_sse: a Server-Sent Events gateway for backends that cannot hold open connections.

The package is a command (``tornado-sse``), an embeddable application
(:func:`tornado_sse.app.make_app`), and two small libraries for backends:
:mod:`tornado_sse.client` (push events) and :mod:`tornado_sse.signing` (verify callbacks).
Importing the package itself imports nothing else, so backends can use those libraries without
pulling in Tornado.
"""

__version__ = "2.0.0.dev0"
