"""The file descriptor budget of raftkv serve (raftkv.server.fdlimit)."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys

import pytest

from raftkv.core.types import NodeId
from raftkv.server.config import Member, ServerConfig
from raftkv.server.errors import ConfigError
from raftkv.server.fdlimit import MIN_CONNECTIONS, connection_budget, reserved_fds
from raftkv.server.http.connections import MAX_CONNECTIONS


def config(max_connections: int | None = None, members: int = 3) -> ServerConfig:
    cluster = {
        NodeId(f"n{i}"): Member(("127.0.0.1", 7000 + i), ("127.0.0.1", 8000 + i))
        for i in range(1, members + 1)
    }
    return ServerConfig(
        node_id=NodeId("n1"),
        data_dir="/nonexistent",
        raft_addr=cluster[NodeId("n1")].raft,
        api_addr=cluster[NodeId("n1")].api,
        initial_cluster=cluster,
        max_connections=max_connections,
    )


def test_the_reserve_covers_every_member_and_the_node_s_own_work() -> None:
    assert reserved_fds(config(members=5)) == reserved_fds(config(members=3)) + 4
    assert 512 <= reserved_fds(config()) <= 1024


def test_the_default_fits_a_high_limit() -> None:
    assert connection_budget(config(), 65536) == MAX_CONNECTIONS
    assert connection_budget(config(), resource.RLIM_INFINITY) == MAX_CONNECTIONS


def test_the_default_is_lowered_to_what_the_limit_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = config()
    with caplog.at_level(logging.WARNING):
        assert connection_budget(cfg, 1024) == 1024 - reserved_fds(cfg)
    assert "--max-connections lowered to" in caplog.text


def test_a_limit_that_leaves_too_few_is_refused() -> None:
    cfg = config()
    with pytest.raises(ConfigError, match="too few file descriptors"):
        connection_budget(cfg, reserved_fds(cfg) + MIN_CONNECTIONS - 1)


def test_a_value_given_must_fit() -> None:
    cfg = config(max_connections=5000)
    with pytest.raises(ConfigError) as info:
        connection_budget(cfg, 4096)
    assert info.value.message.startswith(
        "--max-connections 5000 does not fit: the open file limit is 4096"
    )
    assert "ulimit -n" in info.value.message
    assert connection_budget(config(max_connections=100), 4096) == 100
    assert connection_budget(config(max_connections=100_000), resource.RLIM_INFINITY) == 100_000


def test_max_connections_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="--max-connections must be positive"):
        config(max_connections=0).validate()


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    """In a child process (the limit is the process's): a soft limit of 1,024 is
    raised to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise to")
    code = (
        "import resource\n"
        "from raftkv.server.fdlimit import raise_nofile_limit\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))\n"
        "soft, hard = raise_nofile_limit()\n"
        "print(soft, hard, *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.split() == [str(hard)] * 4, out
