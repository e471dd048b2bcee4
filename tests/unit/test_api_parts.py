"""Small API pieces: API key checks and limits, the rate limiter, `Prefer: wait` parsing, job id shape."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from smartseg.api.auth import ApiKeys, Caller
from smartseg.api.rate_limits import READS, RateLimiter
from smartseg.api.routes.segmentations import requested_wait
from smartseg.cli.commands import main
from smartseg.shared.api_keys import ApiKeyStore, KeyLimits
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.errors import InvalidRequest, NotFound, RateLimited, Unauthorized
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


def test_a_managed_keys_own_limits_reach_its_caller_and_survive_rotation() -> None:
    server = fakeredis.FakeServer()
    store, keys = (
        ApiKeyStore(fakeredis.FakeRedis(server=server, decode_responses=True), KEYS),
        api_keys([], server),
    )
    own = KeyLimits(rate_limit_per_s=0.5, rate_limit_burst=2, max_active_jobs=1)
    secret, record = store.create("ci", limits=own)
    default_secret, _ = store.create("plain")
    assert asyncio.run(keys.caller(f"Bearer {secret}")).limits == own == store.get(record.id)[1].limits
    assert asyncio.run(keys.caller(f"Bearer {default_secret}")).limits == KeyLimits()  # all the settings'

    changed = KeyLimits(rate_limit_burst=5)  # the rate and the cap go back to the settings'
    assert store.update(record.id, changed).limits == changed
    assert asyncio.run(keys.caller(f"Bearer {secret}")).limits == changed  # on the very next request
    new_secret, new = store.rotate(record.id)
    assert new.limits == changed and asyncio.run(keys.caller(f"Bearer {new_secret}")).limits == changed
    assert [key.limits for key in store.list()] == [KeyLimits(), changed]
    with pytest.raises(NotFound):
        store.update(record.id, own)  # the rotated-away key is gone
    # Keys of SMARTSEG_API_KEY_HASHES have no record: the settings' limits.
    assert asyncio.run(api_keys([hash_api_key("sk-boot")]).caller("Bearer sk-boot")).limits == KeyLimits()


@pytest.mark.parametrize(
    "bad",
    [{"rate_limit_per_s": -1}, {"rate_limit_per_s": float("nan")}, {"rate_limit_per_s": float("inf")},
     {"rate_limit_burst": 0}, {"max_active_jobs": -1}],
)  # fmt: skip
def test_key_limits_outside_the_settings_bounds_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(InvalidRequest, match=next(iter(bad))):
        KeyLimits(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--rate-limit-burst", "0", "rate_limit_burst must be 1 or more, not 0"),
     ("--rate-limit-per-s", "-0.5", "rate_limit_per_s must be 0 or more, not -0.5"),
     ("--max-active-jobs", "1.5", "not a whole number: '1.5'"),
     ("--rate-limit-per-s", "fast", "not a number: 'fast'")],
)  # fmt: skip
def test_the_keys_cli_refuses_bad_limits_before_touching_redis(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--name", "ci", option, value])
    assert exited.value.code == 2
    assert f"argument {option}: {message}" in capsys.readouterr().err


def test_the_rate_limiter_holds_a_key_to_its_own_limits_and_says_what_is_left() -> None:
    limiter = RateLimiter(fakeredis.FakeAsyncRedis(decode_responses=True), KEYS, per_s=0.001, burst=3)

    async def take(caller: Caller, times: int) -> list[dict[str, str]]:
        return [await limiter.take(caller, READS) for _ in range(times)]

    spent = asyncio.run(take(Caller("alice", "key_a"), 3))  # the settings': 3 tokens, one per 1,000 s
    assert [headers["RateLimit"] for headers in spent] == [
        '"requests";r=2;t=1000',
        '"requests";r=1;t=2000',
        '"requests";r=0;t=3000',
    ]
    assert spent[0]["RateLimit-Policy"] == '"requests";q=3;w=3000'

    own = Caller("bob", "key_b", KeyLimits(rate_limit_per_s=0.01, rate_limit_burst=1))
    assert asyncio.run(take(own, 1)) == [
        {"RateLimit-Policy": '"requests";q=1;w=100', "RateLimit": '"requests";r=0;t=100'}
    ]
    with pytest.raises(RateLimited) as refused:
        asyncio.run(take(own, 1))
    assert refused.value.headers == {
        "Retry-After": "100",
        "RateLimit-Policy": '"requests";q=1;w=100',
        "RateLimit": '"requests";r=0;t=100',
    }
    unlimited = Caller("carol", "key_c", KeyLimits(rate_limit_per_s=0))
    assert asyncio.run(take(unlimited, 10)) == [{}] * 10  # 0: no limit for this key, no headers


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
