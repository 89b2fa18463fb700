"""The protocol's vocabulary: messages, member records, guarantees, capabilities.

A leaf package: it imports nothing else from zcluster, so the pure core
and the wire codec both build on it without importing each other.
"""
