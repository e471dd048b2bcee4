"""Small API pieces: API key checks, `Prefer: wait` parsing, job id shape."""

from __future__ import annotations

import pytest

from smartseg.api.auth import ApiKeys
from smartseg.api.routes.segmentations import requested_wait
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.errors import Unauthorized
from smartseg.shared.jobstore import is_job_id, new_job_id


def test_api_keys_map_to_a_stable_owner_and_refuse_the_rest() -> None:
    keys = ApiKeys([hash_api_key("sk-alice"), hash_api_key("sk-bob").upper()])
    alice = keys.owner_for("Bearer sk-alice")
    assert alice == keys.owner_for("bearer  sk-alice") == hash_api_key("sk-alice")[:16]
    assert keys.owner_for("Bearer sk-bob") != alice
    for header in (None, "", "Bearer", "Bearer ", "Basic sk-alice", "sk-alice", "Bearer sk-mallory"):
        with pytest.raises(Unauthorized):
            keys.owner_for(header)


def test_no_configured_keys_refuses_everyone() -> None:
    with pytest.raises(Unauthorized):
        ApiKeys([]).owner_for("Bearer anything")


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
