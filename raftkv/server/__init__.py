"""The real node runtime: drive loop, KV state machine, HTTP API, configuration.

Rule: this package imports :mod:`raftkv.core`, :mod:`raftkv.storage` and
:mod:`raftkv.transport`; the core inside :class:`~raftkv.server.node.RaftNode`
is a field pumped by the runtime, and every state change stays synchronous.
"""
