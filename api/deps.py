"""``Annotated`` dependency aliases for the route modules."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from smartseg.api.services import Services


# Both are async so FastAPI does not hop to a worker thread for them.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def require_owner(
    services: ServicesDep, request: Request, authorization: Annotated[str | None, Header()] = None
) -> str:
    caller = await services.api_keys.caller(authorization)
    request.state.key_id = caller.key_id  # for logs: the key's public id, never the key
    return caller.owner


Owner = Annotated[str, Depends(require_owner)]
