"""Which requests of a function's AWS SDK go to relay-local's own @connections."""

from __future__ import annotations

import pytest
from relay_local.worker import local_management_url

LOCAL = "http://127.0.0.1:3001"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # built from the event's domainName (the Host the client used) and stage
        ("https://127.0.0.1:3001/dev/@connections/abc%3D", f"{LOCAL}/dev/@connections/abc%3D"),
        ("https://localhost:3001/dev/@connections/x", f"{LOCAL}/dev/@connections/x"),
        # built from the API id and region, or from !Sub https://${Api}.execute-api...
        ("https://abcdef1234.execute-api.eu-west-1.amazonaws.com/dev/@connections/x", f"{LOCAL}/dev/@connections/x"),
        # another API, a real one: left alone
        ("https://zzzzzzzzzz.execute-api.eu-west-1.amazonaws.com/dev/@connections/x", None),
        ("https://dynamodb.us-east-1.amazonaws.com/", None),
        ("http://127.0.0.1:4566/", None),
    ],
)
def test_local_management_url(url: str, expected: str | None) -> None:
    assert local_management_url(url, "abcdef1234", LOCAL) == expected
