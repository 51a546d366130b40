"""Repository-wide pytest configuration.

Adds ``--rewrite``: data-driven scripts (see :mod:`tests.datadriven`) replace their
expected outputs with the actual ones instead of failing. ``RAFTKV_REWRITE=1``
does the same.
"""

from __future__ import annotations

import pytest

from tests.datadriven import rewrite_from_env


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the expected output of data-driven .txt scripts with the actual output",
    )


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    """Whether data-driven scripts should be rewritten rather than checked."""
    return bool(request.config.getoption("--rewrite")) or rewrite_from_env()
