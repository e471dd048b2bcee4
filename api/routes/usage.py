"""``/v1/usage``: what the calling key's owner was billed, over a span of UTC days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from smartseg.api.deps import Owner, ServicesDep
from smartseg.api.responses import error_responses, json_response, success
from smartseg.shared.billing import usd
from smartseg.shared.errors import InvalidRequest
from smartseg.shared.schemas import Usage, UsageDay

router = APIRouter(prefix="/v1/usage", tags=["usage"])

DEFAULT_DAYS = 30
EPOCH = date(1970, 1, 1)
# ASCII digits only: Python's \d (and Rust's) also takes other scripts' digits, which no date parser reads.
DAY = Annotated[
    str | None,
    Query(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", json_schema_extra={"format": "date"}),
]


@router.get(
    "",
    response_model=Usage,
    summary="Billed runs and amount of your key, by UTC day",
    responses={200: success(), **error_responses(401, 422, 429, 503)},
)
async def read_usage(
    owner: Owner,
    services: ServicesDep,
    from_: Annotated[
        DAY, Query(alias="from", description="First UTC day (default: 29 days before `to`).")
    ] = None,
    to: Annotated[DAY, Query(description="Last UTC day, included (default: today).")] = None,
    group_by: Annotated[Literal["none", "day"], Query(description="`day`: a figure per day too.")] = "none",
) -> Response:
    today = datetime.now(UTC).date()
    last = _day(to, "to") if to else today
    first = _day(from_, "from") if from_ else _days_before(last, DEFAULT_DAYS - 1)
    # Only days that can hold figures are read: none after today, none older than they are kept. So any
    # span is answered (one that ends before it starts is empty), and no span reads more than that.
    kept_since = today - timedelta(days=services.settings.usage_retention_days - 1)
    read_first, read_last = max(first, kept_since), min(last, today)
    days = []
    if read_first <= read_last:
        days = await run_in_threadpool(
            services.store.usage_by_day, owner, (read_first - EPOCH).days, (read_last - EPOCH).days
        )
    shown = [
        UsageDay(date=(EPOCH + timedelta(days=day)).isoformat(), runs=runs, amount_usd=usd(micro))
        for day, runs, micro in days
    ]
    usage = Usage.model_validate(
        {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "runs": sum(day.runs for day in shown),
            "amount_usd": usd(sum(micro for _, _, micro in days)),
            "days": shown if group_by == "day" else None,
        }
    )
    return json_response(usage)


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"`{name}` is not a date: {text!r}", {"parameter": name}) from None


def _days_before(day: date, count: int) -> date:
    """``count`` days before ``day``, or the first day there is (``to=0001-01-05`` is a valid date too)."""
    return date.fromordinal(max(1, day.toordinal() - count))
