"""One-line descriptions of what the simulated network carries, for traces and counters.

Rule: these strings are part of the golden output (traces, the run summary's
message counters); change one and every recorded trace changes.
"""

from __future__ import annotations

from raftkv.core import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    describe_message,
)
from raftkv.history.revhistory import describe_answer
from raftkv.history.revhistory import describe_command as _describe_command
from raftkv.replica.kv import (
    ABSENT,
    Cas,
    Command,
    Delete,
    Get,
    MultiPut,
    Put,
    decode_command,
)
from raftkv.sim.workload import ClientReply, ClientRequest

_KINDS: dict[type, str] = {
    AppendEntries: "AppendEntries",
    AppendEntriesResponse: "AppendEntriesResponse",
    Heartbeat: "Heartbeat",
    HeartbeatResponse: "HeartbeatResponse",
}
"""Counter names of the payloads whose name does not depend on their fields."""

_VOTE_KINDS: dict[type, tuple[str, str]] = {
    RequestVote: ("RequestVote", "PreVote"),
    RequestVoteResponse: ("RequestVoteResponse", "PreVoteResponse"),
}


def message_kind(msg: object) -> str:
    """The counter name of a payload: its class, with PreVote split from RequestVote."""
    kind = _KINDS.get(type(msg))
    if kind is not None:
        return kind
    names = _VOTE_KINDS.get(type(msg))
    if names is not None:
        return names[1] if msg.pre_vote else names[0]  # type: ignore[attr-defined]
    return type(msg).__name__


def describe_command(cmd: Command) -> str:
    """A stable one-line description of a KV command (for traces)."""
    if isinstance(cmd, MultiPut):
        return "multi_put " + ",".join(f"{k}={v!r}" for k, v in sorted(cmd.pairs.items()))
    if isinstance(cmd, Put):
        return f"put {cmd.key}={cmd.value!r}"
    if isinstance(cmd, Cas):
        expect = "absent" if cmd.expect is ABSENT else repr(cmd.expect)
        return f"cas {cmd.key} {expect}->{cmd.value!r}"
    if isinstance(cmd, Delete | Get):
        return f"{cmd.op} {cmd.key}"
    return _describe_command(cmd)  # ranges, transactions, compaction


def describe_payload(payload: object, *, results: bool = False) -> str:
    """A stable one-line description of anything the network carries (for traces).

    With ``results``, a client reply also shows the state machine's whole answer.
    """
    if isinstance(
        payload,
        (
            AppendEntries,
            AppendEntriesResponse,
            Heartbeat,
            HeartbeatResponse,
            RequestVote,
            RequestVoteResponse,
        ),
    ):
        msg: Message = payload
        return describe_message(msg)
    if isinstance(payload, ClientRequest):
        head = f"c{payload.client_id} request {payload.request_id}"
        try:
            return f"{head} {describe_command(decode_command(payload.data))}"
        except ValueError:
            return f"{head} {payload.data!r}"
    if isinstance(payload, ClientReply):
        text = (
            f"reply c{payload.client_id}/{payload.request_id} ok={payload.ok} "
            f"output={payload.output!r} found={payload.found} leader={payload.leader}"
        )
        if results and payload.result is not None:
            text += f" answer={describe_answer(payload.result)}"
        return text
    return repr(payload)
