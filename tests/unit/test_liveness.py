"""The router's and the deliverer's liveness beats: a probe on the same host sees its own role's beat,
and nothing once it stops."""

from __future__ import annotations

import socket

import fakeredis
import pytest

from smartseg.shared.keys import Keys
from smartseg.shared.liveness import beat, is_live


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def test_a_probe_sees_its_hosts_role_only(client: fakeredis.FakeRedis) -> None:
    keys, host = Keys("t"), socket.gethostname()
    assert not is_live(client, keys, "router", host)
    beat(client, keys, "router")
    assert is_live(client, keys, "router", host)
    assert not is_live(client, keys, "deliverer", host)  # another role
    assert not is_live(client, keys, "router", "some-other-pod")  # another host
    client.set(keys.process_beat("router", "web-2", 7), "1")
    assert not is_live(client, keys, "router", "web")  # a host whose name another one's starts with
    assert not is_live(client, Keys("other"), "router", host)  # another deployment


def test_the_beat_expires(client: fakeredis.FakeRedis) -> None:
    keys, host = Keys("t"), socket.gethostname()
    beat(client, keys, "deliverer")
    [key] = client.keys("t:alive:deliverer:*")
    assert 0 < client.pttl(key) <= 10_000
    client.delete(key)  # as if it had expired
    assert not is_live(client, keys, "deliverer", host)
