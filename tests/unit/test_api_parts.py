"""Small API pieces: API key checks, `Prefer: wait` parsing, job id shape."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from smartseg.api.auth import ApiKeys
from smartseg.api.routes.segmentations import requested_wait
from smartseg.shared.api_keys import ApiKeyStore
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.errors import NotFound, Unauthorized
from smartseg.shared.jobstore import is_job_id, new_job_id
from smartseg.shared.keys import Keys

KEYS = Keys("t")


def api_keys(hashes: list[str], server: fakeredis.FakeServer | None = None) -> ApiKeys:
    return ApiKeys(hashes, fakeredis.FakeAsyncRedis(server=server, decode_responses=True), KEYS)


def owner(keys: ApiKeys, header: str | None) -> str:
    return asyncio.run(keys.caller(header)).owner


def test_api_keys_map_to_a_stable_owner_and_refuse_the_rest() -> None:
    keys = api_keys([hash_api_key("sk-alice"), hash_api_key("sk-bob").upper()])
    alice = owner(keys, "Bearer sk-alice")
    assert alice == owner(keys, "bearer  sk-alice") == hash_api_key("sk-alice")[:16]
    assert owner(keys, "Bearer sk-bob") != alice
    for header in (None, "", "Bearer", "Bearer ", "Basic sk-alice", "sk-alice", "Bearer sk-mallory"):
        with pytest.raises(Unauthorized):
            owner(keys, header)


def test_no_configured_keys_refuses_everyone() -> None:
    with pytest.raises(Unauthorized):
        owner(api_keys([]), "Bearer anything")


def test_managed_keys_are_stored_hashed_revoked_at_once_and_rotated_for_the_same_owner() -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    store, keys = ApiKeyStore(client, KEYS), api_keys([], server)
    secret, record = store.create("ci")
    assert secret.startswith("sk-") and record.id.startswith("key_")
    dumped = {key: client.dump(key) for key in client.keys("*")}
    assert secret not in repr(dumped) and hash_api_key(secret) in repr(list(dumped))  # only the hash
    caller = asyncio.run(keys.caller(f"Bearer {secret}"))
    assert (caller.owner, caller.key_id) == (record.owner, record.id)
    assert [key.id for key in store.list()] == [record.id]
    new_secret, new = store.rotate(record.id)
    assert (new.owner, new.name) == (record.owner, "ci") and new.id != record.id
    with pytest.raises(Unauthorized):  # the old key is refused on the very next request
        owner(keys, f"Bearer {secret}")
    assert owner(keys, f"Bearer {new_secret}") == record.owner  # its jobs stay visible
    store.revoke(new.id)
    with pytest.raises(Unauthorized):
        owner(keys, f"Bearer {new_secret}")
    assert store.list() == []
    with pytest.raises(NotFound):
        store.revoke(new.id)


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [(None, 0), ("", 0), ("wait=5", 5), ("respond-async, wait=10", 10), ("WAIT = 7", 7),
     ("wait=600", 60), ("return=minimal", 0), ("wait=-3", 0), ("nowait=5", 0),
     ("wait=" + "9" * 5000, 60), ("wait=" + "0" * 4999 + "7", 60), ("wait=\uff15", 0)],
)  # fmt: skip
def test_prefer_wait_is_parsed_and_capped(prefer: str | None, expected: int) -> None:
    assert requested_wait(prefer, 60) == expected


def test_job_ids_have_one_shape() -> None:
    assert is_job_id(new_job_id())
    for bad in ("seg_", "seg_*", "seg_../../x", "job_" + "0" * 24, new_job_id() + "0", new_job_id().upper()):
        assert not is_job_id(bad)
