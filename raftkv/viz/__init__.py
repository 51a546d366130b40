"""Pictures of Raft at work: the replayable timeline of a simulation trace.

Rule: presentation only. Nothing here runs Raft or the simulator; it reads what
they wrote (trace lines) and renders self-contained pages, so it may read its
own asset files, which the deterministic layers may not.
"""
