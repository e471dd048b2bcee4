"""Batch expansion on fakeredis: a moving window of jobs, resumed after a restart without making any item
twice, refused items recorded and the batch going on, counts moved by the jobs' own end steps, and item
keys that skip work an earlier batch did."""

from __future__ import annotations

import json

import fakeredis
import pytest

from smartseg.shared.batches import COMPLETED, EXPANDING, RUNNING, BatchStore
from smartseg.shared.errors import IdempotencyConflict
from smartseg.shared.fetch import FetchLimits
from smartseg.shared.jobstore import JobRecord, JobStore
from smartseg.shared.keys import Keys
from smartseg.shared.settings import Settings
from smartseg.worker.batch_expander import BatchExpander

MATCHED = [{"prompt": "red circle", "result": "match", "masks": 1}]
PRICE = 120_000


class SentMessages:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, job: JobRecord, region: str | None = None) -> None:
        self.sent.append(job.id)


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(client, Keys("t"), 3600, PRICE)


@pytest.fixture
def batches(client: fakeredis.FakeRedis) -> BatchStore:
    return BatchStore(client, Keys("t"), 3600)


def expander(store: JobStore, batches: BatchStore, window: int = 3) -> tuple[BatchExpander, SentMessages]:
    outbox = SentMessages()
    settings = Settings(batch_window=window, regions=["us-east"], default_region="us-east")
    return BatchExpander(settings, store, batches, outbox, FetchLimits()), outbox  # type: ignore[arg-type]


def item(n: int, **extra: object) -> str:
    return json.dumps({"image_url": f"https://images.example.com/{n}.png", "prompt": "red circle", **extra})


def run_all(store: JobStore, job_ids: list[str]) -> None:
    for job_id in job_ids:
        job = store.get(job_id)
        assert job is not None
        store.claim(job.id, job.token, "w1", 10)
        store.succeed(job, job.token, outputs=[], prompt_results=MATCHED, metrics={})


def test_a_batch_is_expanded_a_window_at_a_time_and_completes_when_its_jobs_end(
    store: JobStore, batches: BatchStore
) -> None:
    batch, _ = batches.create("alice", "inline", {"options": {"max_masks": 2}}, [item(n) for n in range(7)])
    expand, outbox = expander(store, batches, window=3)
    assert expand.tick() == 3 and len(outbox.sent) == 3
    assert expand.tick() == 0  # the window is full until jobs end
    first = store.get(outbox.sent[0])
    assert first is not None and first.spec.priority == "batch" and first.spec.options.max_masks == 2
    run_all(store, outbox.sent[:3])
    assert expand.tick() == 3
    run_all(store, outbox.sent[3:])
    assert batches.get(batch.id).status == EXPANDING and batches.get(batch.id).total is None
    assert expand.tick() == 1  # fewer than there was room for: every item is in
    assert batches.get(batch.id).status == RUNNING and batches.get(batch.id).total == 7
    run_all(store, outbox.sent[6:])
    done = batches.get(batch.id)
    assert (
        done.status == COMPLETED and done.counts["succeeded"] == 7 and done.counts["micro_usd"] == 7 * PRICE
    )
    assert [entry["job_id"] for entry in batches.results(batch.id, 0, 7)] == outbox.sent  # type: ignore[index]


def test_a_restarted_expansion_makes_no_item_twice(
    store: JobStore, batches: BatchStore, client: fakeredis.FakeRedis
) -> None:
    batch, _ = batches.create("alice", "inline", {}, [item(n) for n in range(4)])
    expand, outbox = expander(store, batches, window=10)
    # A router died after making item 0's job but before recording the item.
    expand._make(batches.get(batch.id), 0, item(0))
    client.hdel(Keys("t").batch_results(batch.id), "0")
    client.hset(Keys("t").batch(batch.id), "submitted", 0)
    again, _ = expander(store, batches, window=10)
    again.tick()
    again.tick()
    ids = [entry["job_id"] for entry in batches.results(batch.id, 0, 4)]  # type: ignore[index]
    assert len(set(ids)) == 4 and ids[0] == outbox.sent[0]
    assert len(client.zrange(Keys("t").owner_jobs("alice"), 0, -1)) == 4  # four jobs, not five
    assert batches.get(batch.id).total == 4


def test_a_bad_item_is_recorded_and_the_batch_goes_on(store: JobStore, batches: BatchStore) -> None:
    lines = [item(0), "not json", item(2, prompt="!!!"), item(3, image_url="http://10.0.0.1/x.png")]
    batch, _ = batches.create("alice", "inline", {}, lines)
    expand, outbox = expander(store, batches, window=10)
    expand.tick()
    expand.tick()
    entries = batches.results(batch.id, 0, 4)
    assert [entry["error"]["code"] if entry["error"] else None for entry in entries] == [  # type: ignore[index]
        None,
        "invalid_request",
        "invalid_request",
        "image_url_forbidden",
    ]
    run_all(store, outbox.sent)
    done = batches.get(batch.id)
    assert (done.status, done.counts["invalid"], done.counts["succeeded"]) == (COMPLETED, 3, 1)


def test_item_keys_skip_what_an_earlier_batch_did(store: JobStore, batches: BatchStore) -> None:
    batches.create("alice", "inline", {}, [item(0, key="photo-0"), item(1, key="photo-1")])
    expand, outbox = expander(store, batches, window=10)
    expand.tick()
    run_all(store, outbox.sent)
    second, _ = batches.create("alice", "inline", {}, [item(0, key="photo-0"), item(2, key="photo-2")])
    expand.tick()
    expand.tick()
    assert len(outbox.sent) == 3  # photo-0 was not run again
    reused = batches.get(second.id)
    assert reused.counts["reused"] == 1
    run_all(store, outbox.sent[2:])
    assert batches.get(second.id).status == COMPLETED
    assert batches.results(second.id, 0, 1)[0]["job_id"] == outbox.sent[0]  # type: ignore[index]


def test_an_idempotency_key_returns_its_batch_and_refuses_another_body(batches: BatchStore) -> None:
    first, created = batches.create("alice", "inline", {}, [item(0)], "key-hash", request_hash="body-a")
    again, created_again = batches.create("alice", "inline", {}, [item(0)], "key-hash", request_hash="body-a")
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        batches.create("alice", "inline", {}, [item(1)], "key-hash", request_hash="body-b")


def test_two_keys_batches_progress_side_by_side(store: JobStore, batches: BatchStore) -> None:
    first, _ = batches.create("alice", "inline", {}, [item(n) for n in range(10)])
    second, _ = batches.create("bob", "inline", {}, [item(n) for n in range(10)])
    expand, outbox = expander(store, batches, window=2)
    expand.tick()
    # One tick: each batch gets its own window of jobs; the older one does not go first to the end.
    assert [batches.get(batch.id).counts["submitted"] for batch in (first, second)] == [2, 2]
    owners = [job.owner for job in store.get_many(outbox.sent) if job is not None]
    assert sorted(owners) == ["alice", "alice", "bob", "bob"]
