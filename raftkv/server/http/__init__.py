"""The HTTP API of one node: handlers, the guard, forwarding, and two front ends.

Modules, each with its rule in its docstring:

- :mod:`.answers`: ``answer_for(exception)``, the one mapping of error kinds
  to status codes and bodies.
- :mod:`.guard`: tokens (401/403) and the in-flight limit (503), before any work.
- :mod:`.request`: what a handler reads of a request (:class:`.request.Request`),
  whichever front end parsed it; body JSON and sessions.
- :mod:`.forwarding`: writes, lease calls and membership changes handed to
  the leader (peer link or HTTP), and the leader's side of them.
- :mod:`.handlers`: one method per route, request in, answer out.
- :mod:`.routes`: the one route table both front ends are built from.
- :mod:`.aio`: the aiohttp front end (every route); :mod:`.fast`: the fast
  path's (the hot routes, parsed by :mod:`raftkv.server.fasthttp`).
- :mod:`.connections`: every connection to the port (cap, deadlines, hand-off).
- :mod:`.server`: :class:`.server.ApiServer` and :func:`.server.serve`.

This file imports none of them: the node imports :mod:`.answers`, and the
rest import the node.
"""
