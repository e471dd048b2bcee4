"""Reads job records on the API's event loop (redis.asyncio), so reading a job costs no thread hop.

Writes stay in the job store; this only parses what it stored.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from smartseg.shared.jobstore import JobRecord, is_job_id, owned
from smartseg.shared.keys import Keys


class JobReader:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.client.hgetall(self.keys.job(job_id))
        return JobRecord.from_hash(raw) if raw else None  # type: ignore[arg-type]

    async def get_for_owner(self, owner: str, job_id: str) -> JobRecord:
        return owned(await self.get(job_id) if is_job_id(job_id) else None, owner, job_id)
