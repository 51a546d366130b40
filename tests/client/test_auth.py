"""Client credentials: bearer tokens, 401/403 as AuthError, https endpoints."""

from __future__ import annotations

import pytest

from raftkv.client import AuthError, Client
from raftkv.client._requests import get_request
from raftkv.client._sansio import interpret, parse_endpoints, wants_https


def test_token_goes_in_the_authorization_header() -> None:
    request = get_request("k", "linearizable")
    assert "Authorization" not in request.headers()
    with_token = Client(["127.0.0.1:1"], token="t" * 20)
    assert with_token._token == "t" * 20
    import dataclasses

    assert dataclasses.replace(request, token="abc").headers()["Authorization"] == "Bearer abc"


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_final_auth_errors(status: int) -> None:
    with pytest.raises(AuthError) as info:
        interpret(get_request("k", "linearizable"), status, b'{"error": "invalid token"}')
    assert info.value.status == status
    assert "invalid token" in str(info.value)


def test_https_endpoints() -> None:
    assert parse_endpoints("https://h:1,http://g:2") == ("h:1", "g:2")
    assert wants_https("https://h:1") and wants_https(["x:1", "https://h:1"])
    assert not wants_https("h:1,http://g:2")
    assert Client("https://127.0.0.1:1")._ssl is not None
    assert Client("127.0.0.1:1")._ssl is None


def test_bad_ca_file_is_a_value_error(tmp_path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="TLS files"):
        Client("127.0.0.1:1", ca_file=str(tmp_path / "ca.pem"))
