"""Benchmarks of tornado_sse, with nginx + nchan on loopback as a native baseline.

``python -m benchmarks`` runs every scenario (``--help`` lists the options); see
``docs/benchmarks.md`` for the method and the figures measured on a reference machine.
"""
