"""smartseg: self-hostable smart segmentation. An image and a text prompt in, masks out.

>>> from smartseg import Client
>>> result = Client("http://127.0.0.1:8000", api_key="sk-...").segment("toys.jpg", "red ball")
>>> result.masks[0].array  # bool HxW numpy array; .image is a PIL image

The service itself lives in the subpackages (``smartseg.api``, ``smartseg.worker``...); importing this
package loads none of them, and the SDK's names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smartseg.shared.client import (
        AsyncClient,
        Client,
        ClientError,
        Mask,
        RetryPolicy,
        Segmentation,
        SegmentationFailed,
        SegmentationTimeout,
        SmartsegAPIError,
        WebhookVerificationError,
        verify_webhook,
    )

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "Mask",
    "RetryPolicy",
    "Segmentation",
    "SegmentationFailed",
    "SegmentationTimeout",
    "SmartsegAPIError",
    "WebhookVerificationError",
    "verify_webhook",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import smartseg.worker` in a service process should not pay for the SDK's imports.
    if name in __all__:
        return getattr(importlib.import_module("smartseg.shared.client"), name)
    raise AttributeError(f"module 'smartseg' has no attribute {name!r}")
