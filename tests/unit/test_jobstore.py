"""Job store state machine on fakeredis (with Lua): claims are fenced, terminal states are final."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import fakeredis
import pytest

from smartseg.shared.errors import IdempotencyConflict, JobAlreadyFinished, NotFound, TooManyJobs
from smartseg.shared.jobspec import JobOptions, JobSpec
from smartseg.shared.jobstore import CancelResult, ClaimResult, JobStatus, JobStore, LeaseState, RequeueResult
from smartseg.shared.keys import Keys

PRICE = 120_000
MATCHED = [{"prompt": "red circle", "result": "match", "masks": 1}]
NOTHING_FOUND = [{"prompt": "red circle", "result": "no_match", "masks": 0}]


SPEC = JobSpec(image_url="https://example.com/a.png", prompts=("red",), pipeline="lite")


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(client, Keys("t"), job_ttl_s=3600, price_micro_usd=PRICE)


def new_job(store: JobStore, owner: str = "alice", **extra: object):
    return store.create(owner=owner, spec=SPEC, region="us-east", filename_stem="a", **extra)  # type: ignore[arg-type]


def test_create_and_read_back(store: JobStore) -> None:
    job, created = new_job(store)
    assert created
    assert job.status is JobStatus.QUEUED
    assert job.attempt == 1
    assert store.get(job.id) == job
    assert store.get_for_owner("alice", job.id) == job


def test_another_owner_sees_not_found(store: JobStore) -> None:
    job, _ = new_job(store)
    with pytest.raises(NotFound):
        store.get_for_owner("mallory", job.id)
    with pytest.raises(NotFound):
        store.cancel("mallory", job.id)
    assert store.get(job.id).status is JobStatus.QUEUED


def test_claim_is_fenced_by_token(store: JobStore) -> None:
    job, _ = new_job(store)
    assert store.claim(job.id, "wrong-token", "w1", 10) is ClaimResult.STALE
    assert store.claim(job.id, job.token, "w1", 10) is ClaimResult.CLAIMED
    # A duplicate delivery of the same message cannot claim twice.
    assert store.claim(job.id, job.token, "w2", 10) is ClaimResult.NOT_QUEUED
    assert store.claim("seg_missing", job.token, "w2", 10) is ClaimResult.MISSING
    running = store.get(job.id)
    assert running.status is JobStatus.RUNNING
    assert running.worker == "w1"


def test_success_bills_exactly_once(store: JobStore) -> None:
    job, _ = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    outcome = store.succeed(
        job, job.token, outputs=[{"key": "k"}], prompt_results=MATCHED, metrics={"total_s": 1.0}
    )
    assert outcome is JobStatus.SUCCEEDED
    # The same run writing again (its reply was lost to a Redis restart) learns how the job ended, and
    # changes and bills nothing; only a claim holds a token, so no other run can carry this one.
    assert store.succeed(job, job.token, outputs=[], prompt_results=[], metrics={}) is JobStatus.SUCCEEDED
    assert store.fail(job, job.token, error={"code": "x", "message": "y"}, metrics={}) is JobStatus.SUCCEEDED
    # Any other token (a stale or taken-over run) is refused.
    assert store.succeed(job, "old-token", outputs=[], prompt_results=[], metrics={}) is None
    done = store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.outputs == [{"key": "k"}]
    assert done.billed_micro_usd == PRICE
    assert store.usage("alice") == (1, PRICE)


@pytest.mark.parametrize(("bill_no_match", "billed"), [(False, 0), (True, PRICE)])
def test_a_run_that_found_nothing_is_billed_only_where_the_setting_says(
    client: fakeredis.FakeRedis, bill_no_match: bool, billed: int
) -> None:
    store = JobStore(client, Keys("t"), 3600, PRICE, bill_no_match=bill_no_match)
    job, _ = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    assert (
        store.succeed(job, job.token, outputs=[], prompt_results=NOTHING_FOUND, metrics={})
        is JobStatus.SUCCEEDED
    )
    assert store.get(job.id).billed_micro_usd == billed
    assert store.usage("alice") == (1 if billed else 0, billed)


def test_billed_runs_are_counted_by_utc_day_on_the_redis_clock(
    store: JobStore, client: fakeredis.FakeRedis
) -> None:
    for _ in range(2):
        job, _ = new_job(store)
        store.claim(job.id, job.token, "w1", 10)
        store.succeed(job, job.token, outputs=[], prompt_results=MATCHED, metrics={})
    seconds, _ = client.time()
    today = seconds // 86_400
    assert store.usage_by_day("alice", today - 1, today + 1) == [
        (today - 1, 0, 0),
        (today, 2, 2 * PRICE),
        (today + 1, 0, 0),
    ]
    assert 0 < client.ttl(store.keys.usage_day("alice", today)) <= 400 * 86_400
    assert store.usage_by_day("bob", today, today) == [(today, 0, 0)]


def test_failure_is_not_billed(store: JobStore) -> None:
    job, _ = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    assert (
        store.fail(job, job.token, error={"code": "image_fetch_failed", "message": "x"}, metrics={})
        is JobStatus.FAILED
    )
    assert store.get(job.id).error == {"code": "image_fetch_failed", "message": "x"}
    assert store.usage("alice") == (0, 0)


def test_wrong_token_cannot_finish(store: JobStore) -> None:
    job, _ = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    assert store.succeed(job, "someone-else", outputs=[], prompt_results=[], metrics={}) is None
    assert store.get(job.id).status is JobStatus.RUNNING


def test_cancel_queued_is_immediate_and_idempotent(store: JobStore) -> None:
    job, _ = new_job(store)
    assert store.cancel("alice", job.id) is CancelResult.CANCELED
    assert store.cancel("alice", job.id) is CancelResult.CANCELED
    assert store.get(job.id).status is JobStatus.CANCELED
    assert store.claim(job.id, job.token, "w1", 10) is ClaimResult.NOT_QUEUED


def test_cancel_running_flags_and_worker_acknowledges(store: JobStore) -> None:
    job, _ = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    assert store.renew_lease(job.id, job.token, 10) is LeaseState.HELD
    assert store.cancel("alice", job.id) is CancelResult.REQUESTED
    assert store.renew_lease(job.id, job.token, 10) is LeaseState.CANCEL_REQUESTED
    assert store.acknowledge_cancel(job, job.token) is JobStatus.CANCELED
    assert store.usage("alice") == (0, 0)


def test_success_racing_a_cancel_ends_canceled_and_unbilled(store: JobStore) -> None:
    job, _ = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    store.cancel("alice", job.id)
    assert (
        store.succeed(job, job.token, outputs=[{"key": "k"}], prompt_results=[], metrics={})
        is JobStatus.CANCELED
    )
    assert store.get(job.id).outputs == []
    assert store.usage("alice") == (0, 0)


def test_cancel_finished_job_conflicts(store: JobStore) -> None:
    job, _ = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    store.succeed(job, job.token, outputs=[], prompt_results=[], metrics={})
    with pytest.raises(JobAlreadyFinished):
        store.cancel("alice", job.id)


def test_lease_lost_after_finish(store: JobStore) -> None:
    job, _ = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    store.fail(job, job.token, error={"code": "x", "message": "y"}, metrics={})
    assert store.renew_lease(job.id, job.token, 10) is LeaseState.LOST


def test_idempotency_replay_and_conflict(store: JobStore) -> None:
    first, created = new_job(store, idempotency_key_hash="k1", request_hash="h1")
    again, created_again = new_job(store, idempotency_key_hash="k1", request_hash="h1")
    assert created and not created_again
    assert again.id == first.id
    with pytest.raises(IdempotencyConflict):
        new_job(store, idempotency_key_hash="k1", request_hash="h2")
    # Keys are per owner: another owner's identical key is a new job.
    other, created_other = new_job(store, owner="bob", idempotency_key_hash="k1", request_hash="h1")
    assert created_other and other.id != first.id


def test_list_pages_newest_first_with_status_filter(store: JobStore) -> None:
    ids = [new_job(store)[0].id for _ in range(7)]
    new_job(store, owner="bob")
    seen = []
    cursor = None
    while True:
        page = store.list_for_owner("alice", cursor=cursor, limit=3)
        seen += [job.id for job in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))
    store.cancel("alice", ids[2])
    canceled = store.list_for_owner("alice", status=JobStatus.CANCELED)
    assert [job.id for job in canceled.jobs] == [ids[2]]
    assert canceled.next_cursor is None


def test_a_run_whose_lease_expired_is_requeued_with_a_new_token(store: JobStore) -> None:
    job, _ = new_job(store)
    assert store.claim(job.id, job.token, "w1", 0.05, region="eu-west") is ClaimResult.CLAIMED
    assert store.get(job.id).region == "eu-west"  # where it runs
    assert store.expired_leases() == []
    time.sleep(0.08)
    assert store.expired_leases() == [job.id]
    assert store.requeue_if_lease_expired(job.id) is RequeueResult.REQUEUED
    again = store.get(job.id)
    assert (again.status, again.attempt) == (JobStatus.QUEUED, 2) and again.token != job.token
    assert store.owed_messages() == [job.id] and store.expired_leases() == []
    # The old run can neither renew nor finish; the new token claims and succeeds, billed once.
    assert store.renew_lease(job.id, job.token, 10) is LeaseState.LOST
    assert store.succeed(job, job.token, outputs=[], prompt_results=[], metrics={}) is None
    assert store.claim(job.id, again.token, "w2", 10) is ClaimResult.CLAIMED
    assert (
        store.succeed(again, again.token, outputs=[], prompt_results=MATCHED, metrics={})
        is JobStatus.SUCCEEDED
    )
    assert store.usage("alice") == (1, PRICE)
    store.message_sent(job.id)
    assert store.owed_messages() == []


def test_a_live_lease_is_left_alone_and_a_canceled_run_ends(store: JobStore) -> None:
    job, _ = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    assert store.requeue_if_lease_expired(job.id) is RequeueResult.HELD
    other, _ = new_job(store)
    store.claim(other.id, other.token, "w1", 0.05)
    store.cancel("alice", other.id)
    time.sleep(0.08)
    assert store.requeue_if_lease_expired(other.id) is RequeueResult.CANCELED
    assert store.get(other.id).status is JobStatus.CANCELED and store.owed_messages() == []
    assert store.requeue_if_lease_expired("seg_000000000000000000000000") is RequeueResult.NOT_RUNNING


def test_a_worker_shutting_down_hands_its_run_back_at_once(store: JobStore) -> None:
    job, _ = new_job(store)
    store.claim(job.id, job.token, "w1", 30)  # a long lease: the hand-back does not wait for it
    assert store.hand_back_run(job.id, "another-runs-token") is RequeueResult.NOT_RUNNING
    assert store.get(job.id).status is JobStatus.RUNNING
    assert store.hand_back_run(job.id, job.token) is RequeueResult.REQUEUED
    again = store.get(job.id)
    assert (again.status, again.attempt) == (JobStatus.QUEUED, 2) and again.token != job.token
    assert store.owed_messages() == [job.id] and store.expired_leases() == []
    assert store.renew_lease(job.id, job.token, 10) is LeaseState.LOST  # the old run stops...
    assert (
        store.succeed(job, job.token, outputs=[], prompt_results=MATCHED, metrics={}) is None
    )  # ...unbilled
    assert store.hand_back_run(job.id, job.token) is RequeueResult.NOT_RUNNING  # twice: nothing more
    # A cancel that was pending ends it instead.
    other, _ = new_job(store)
    store.claim(other.id, other.token, "w1", 30)
    store.cancel("alice", other.id)
    assert store.hand_back_run(other.id, other.token) is RequeueResult.CANCELED
    assert store.get(other.id).status is JobStatus.CANCELED


def test_history_records_each_region_a_job_passes_through(store: JobStore) -> None:
    job, _ = new_job(store)
    assert store.move_to_region(job.id, "eu-west", "us-east")
    assert store.claim(job.id, job.token, "w1", 0.05, region="eu-west") is ClaimResult.CLAIMED
    time.sleep(0.08)
    assert store.requeue_if_lease_expired(job.id) is RequeueResult.REQUEUED
    again = store.get(job.id)
    store.claim(job.id, again.token, "w2", 10, region="ap-south")
    history = store.get(job.id).history
    assert [(item["event"], item["region"], item["attempt"]) for item in history] == [
        ("queued", "us-east", 1),
        ("moved", "eu-west", 1),
        ("started", "eu-west", 1),
        ("requeued", "eu-west", 2),
        ("started", "ap-south", 2),
    ]
    times = [item["at"] for item in history]
    assert times == sorted(times) and times[-1] - times[0] < 60


def test_every_run_that_reaches_its_end_leaves_a_history_entry(store: JobStore) -> None:
    """`finished` for the run that ended the job, `refused` (with its own attempt and region) for one that
    had lost it: what bench/failover.py counts runs and completions from."""
    job, _ = new_job(store)
    _, first = store.claim_record(job.id, job.token, "w1", 0.05, region="us-east")
    time.sleep(0.08)
    assert store.requeue_if_lease_expired(job.id) is RequeueResult.REQUEUED
    again = store.get(job.id)
    _, second = store.claim_record(job.id, again.token, "w2", 10, region="eu-west")
    assert first is not None and second is not None
    nothing: dict[str, Any] = {"outputs": [], "prompt_results": [], "metrics": {}}
    assert store.succeed(first, first.token, **nothing) is None
    assert store.succeed(second, second.token, **nothing) is JobStatus.SUCCEEDED
    # The same run's end repeated (its reply lost) and a late one from the first run after the end.
    assert store.succeed(second, second.token, **nothing) is JobStatus.SUCCEEDED
    assert store.fail(first, first.token, error={"code": "x"}, metrics={}) is None
    steps = [(item["event"], item["region"], item["attempt"]) for item in store.get(job.id).history]
    assert steps == [
        ("queued", "us-east", 1),
        ("started", "us-east", 1),
        ("requeued", "us-east", 2),
        ("started", "eu-west", 2),
        ("refused", "us-east", 1),
        ("finished", "eu-west", 2),
        ("refused", "us-east", 1),
    ]


def test_a_new_job_is_owed_its_message_until_the_sender_crosses_it_off(
    store: JobStore, client: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent, _ = new_job(store)
    store.message_sent(sent.id)  # what the API does right after sending
    lost, _ = new_job(store)  # the API died before sending: the router sends it once it is due
    assert store.owed_messages() == []  # not yet due: the API is probably sending it now
    monkeypatch.setattr("smartseg.shared.jobstore.SEND_GRACE_S", 0.0)
    due, _ = new_job(store)
    assert store.owed_messages() == [due.id]
    client.zadd(store.keys.outbox(), {store.keys.job(lost.id): 0})  # as if the grace had passed
    assert set(store.owed_messages()) == {due.id, lost.id}


def test_a_record_stored_before_specs_existed_still_reads(
    store: JobStore, client: fakeredis.FakeRedis
) -> None:
    # What the API stored as `request` before the typed spec: the pipeline inside the options.
    job, _ = new_job(store)
    request = {
        "image_url": "https://example.com/old.png",
        "prompts": ["left mug"],
        "region": "eu-west",
        "region_policy": "require",
        "priority": "batch",
        "options": {"box_threshold": 0.4, "text_threshold": 0.2, "max_masks": 2,
                    "output_format": "rle", "pipeline": "sam3"},
    }  # fmt: skip
    client.hdel(store.keys.job(job.id), "spec")
    client.hset(store.keys.job(job.id), "request", json.dumps(request))
    old = store.get(job.id).spec
    assert (old.pipeline, old.pinned, old.priority, old.region) == ("sam3", True, "batch", "eu-west")
    assert old.options == JobOptions(box_threshold=0.4, text_threshold=0.2, max_masks=2, output_format="rle")


def test_the_spec_is_stored_and_read_back_whole(store: JobStore) -> None:
    spec = JobSpec(
        image_url="https://example.com/b.png",
        prompts=("left shoe", "mug"),
        pipeline="grounded-sam",
        options=JobOptions(box_threshold=0.5, output_format="polygon"),
        region="eu-west",
        region_policy="require",
        priority="batch",
    )
    job, _ = store.create(owner="alice", spec=spec, region="eu-west", filename_stem="b")
    assert job.spec == spec and store.get(job.id).spec == spec and job.spec.pinned
    assert job.region == "eu-west" and job.history[0]["event"] == "queued"


def test_the_fingerprint_is_what_earlier_versions_hashed() -> None:
    # The request as the API stored and hashed it before specs: a key replayed across an upgrade matches.
    request = {
        "image_url": SPEC.image_url,
        "prompts": list(SPEC.prompts),
        "region": None,
        "region_policy": "prefer",
        "priority": "interactive",
        "options": {"box_threshold": 0.3, "text_threshold": 0.25, "max_masks": 3,
                    "output_format": "png", "pipeline": "lite"},
    }  # fmt: skip
    assert SPEC.fingerprint() == hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    assert JobSpec.from_stored_request(request) == SPEC
    assert SPEC.model_copy(update={"priority": "batch"}).fingerprint() != SPEC.fingerprint()


def test_an_owner_has_at_most_the_cap_of_queued_and_running_jobs(client: fakeredis.FakeRedis) -> None:
    store = JobStore(client, Keys("t"), 3600, PRICE, max_active_jobs=2)
    first, _ = new_job(store, idempotency_key_hash="k1", request_hash="h1")
    second, _ = new_job(store)
    with pytest.raises(TooManyJobs) as refused:
        new_job(store)
    assert (refused.value.status, refused.value.code) == (429, "too_many_jobs")
    assert refused.value.headers["Retry-After"] == "1"
    assert refused.value.details == {"active_jobs": 2, "max_active_jobs": 2}
    assert len(store.list_for_owner("alice").jobs) == 2  # nothing was created
    assert new_job(store, idempotency_key_hash="k1", request_hash="h1")[0].id == first.id  # a replay is fine
    assert new_job(store, owner="bob")[1]  # the cap is per owner

    # Every way a job stops being queued or running frees its slot.
    store.claim(first.id, first.token, "w1", 10)
    store.succeed(first, first.token, outputs=[], prompt_results=[], metrics={})
    third, _ = new_job(store)
    store.cancel("alice", second.id)  # queued -> canceled
    fourth, _ = new_job(store)
    with pytest.raises(TooManyJobs):
        new_job(store)
    store.claim(third.id, third.token, "w1", 0.05)
    store.cancel("alice", third.id)  # running: flagged; its lease then runs out
    time.sleep(0.08)
    assert store.requeue_if_lease_expired(third.id) is RequeueResult.CANCELED
    store.claim(fourth.id, fourth.token, "w1", 10)
    store.fail(fourth, fourth.token, error={"code": "x"}, metrics={})
    assert [new_job(store)[1] for _ in range(2)] == [True, True]


def test_a_key_of_its_own_cap_is_held_to_it_instead_of_the_stores(client: fakeredis.FakeRedis) -> None:
    store = JobStore(client, Keys("t"), 3600, PRICE, max_active_jobs=2)
    assert new_job(store, max_active_jobs=1)[1]
    with pytest.raises(TooManyJobs) as refused:
        new_job(store, max_active_jobs=1)
    assert refused.value.details == {"active_jobs": 1, "max_active_jobs": 1}
    assert refused.value.headers["RateLimit-Policy"] == '"active-jobs";q=1'
    assert new_job(store)[1]  # the store's cap of 2 still has room
    assert [new_job(store, max_active_jobs=0)[1] for _ in range(3)] == [True] * 3  # 0: no cap for this key
    with pytest.raises(TooManyJobs):
        new_job(store)
