"""The pure protocol core: state machines fed with events and the time.

Nothing in this package performs I/O, reads a clock, starts a thread or
uses the global random generator (``tests/core/test_purity.py`` enforces
it), so the same code runs on real sockets and on the simulated network.
"""
