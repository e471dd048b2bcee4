"""``Annotated`` dependency aliases for the route modules."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from smartseg.api.auth import Caller
from smartseg.api.rate_limits import READS, STATE_FIELD
from smartseg.api.services import Services


# Both are async so FastAPI does not hop to a worker thread for them.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


# Declares the Bearer scheme in OpenAPI; a missing or malformed header is ours to answer (401 unauthorized).
BEARER = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk-...`")


async def require_caller(
    services: ServicesDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Caller:
    caller = await services.api_keys.caller(request.headers.get("authorization"))
    request.state.key_id = caller.key_id  # for logs: the key's public id, never the key
    return caller


async def take_token(services: Services, request: Request, caller: Caller, budget: str) -> None:
    """Spend one of the caller's tokens of ``budget``; the response says what is left (RateLimitHeaders)."""
    setattr(request.state, STATE_FIELD, await services.rate_limits.take(caller, budget))


async def require_owner(
    services: ServicesDep, request: Request, caller: Annotated[Caller, Depends(require_caller)]
) -> str:
    await take_token(services, request, caller, READS)
    return caller.owner


Owner = Annotated[str, Depends(require_owner)]
# For a submit, which spends its priority's budget once the body says which (SubmitCaller + take_token()).
SubmitCaller = Annotated[Caller, Depends(require_caller)]
