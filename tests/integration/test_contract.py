"""What the OpenAPI document allows, the API accepts, and what it refuses, the API refuses: tricky bodies
and headers judged by the published schema (jsonschema, Draft 2020-12 as OpenAPI 3.1 says) and by the real
app on a real Redis must agree. Schemathesis (tests/e2e/test_fuzz.py) searches for more; these pin the
classes found so far. Errors keep the connection usable."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import uvicorn
from fastapi.testclient import TestClient

from smartseg.api.app import create_app
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.settings import Settings

pytestmark = pytest.mark.integration
KEY = "sk-contract"
IMAGE = "https://images.example.com/x.png"
REGIONS = ["us-east", "eu-west"]

BODIES: list[tuple[str, dict[str, Any]]] = [
    ("one prompt", {"prompt": "red circle"}),
    ("a list of prompts", {"prompts": ["red circle", "blue square"]}),
    ("prompts with a null prompt", {"prompt": None, "prompts": ["red circle"]}),
    ("a prompt with null prompts", {"prompt": "red circle", "prompts": None}),
    ("both prompt and prompts", {"prompt": "red circle", "prompts": ["blue square"]}),
    ("neither prompt nor prompts", {}),
    ("both null", {"prompt": None, "prompts": None}),
    ("a prompt without a letter or digit", {"prompt": "!!!"}),
    ("an emoji prompt", {"prompts": ["red circle", "\U0001f600"]}),
    ("a zero-width space", {"prompt": "\u200b"}),
    ("a prompt in Japanese", {"prompt": "赤い円"}),
    ("spaces around a prompt", {"prompt": "  red circle  "}),
    ("an empty prompt in the list", {"prompts": ["red circle", ""]}),
    ("a configured region", {"prompt": "red circle", "region": "eu-west"}),
    ("an empty region", {"prompt": "red circle", "region": ""}),
    ("a region not configured", {"prompt": "red circle", "region": "mars"}),
    ("the configured pipeline", {"prompt": "red circle", "options": {"pipeline": "lite"}}),
    ("an empty pipeline", {"prompt": "red circle", "options": {"pipeline": ""}}),
    ("an unknown pipeline", {"prompt": "red circle", "options": {"pipeline": "magic"}}),
    ("an integral number as max_masks", {"prompt": "red circle", "options": {"max_masks": 2.0}}),
    ("a fraction as max_masks", {"prompt": "red circle", "options": {"max_masks": 2.5}}),
    ("a boolean as max_masks", {"prompt": "red circle", "options": {"max_masks": True}}),
    ("a string as a threshold", {"prompt": "red circle", "options": {"box_threshold": "0.3"}}),
    ("an unknown field", {"prompt": "red circle", "colour": "red"}),
]


@pytest.fixture(scope="module")
def client(service_settings: Settings) -> Iterator[TestClient]:
    settings = service_settings.updated(
        key_prefix=f"contract-{secrets.token_hex(4)}",
        api_key_hashes=[hash_api_key(KEY)],
        regions=REGIONS,
        pipelines=["lite"],
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def request_schema(client: TestClient) -> jsonschema.protocols.Validator:
    document = client.get("/openapi.json").json()
    schema = {"$ref": "#/components/schemas/SegmentationRequest", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(("case", "fields"), BODIES, ids=[case for case, _ in BODIES])
def test_the_schema_and_the_api_agree_on_a_body(
    client: TestClient, request_schema: jsonschema.protocols.Validator, case: str, fields: dict[str, Any]
) -> None:
    body = {"image_url": IMAGE, **fields}
    allowed = request_schema.is_valid(body)
    response = client.post("/v1/segmentations", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code in (202, 422), response.text
    assert (response.status_code == 202) == allowed, (case, response.json())
    if response.status_code == 422:
        assert response.json()["error"]["code"] in {"invalid_request", "unknown_region", "unknown_pipeline"}


@pytest.mark.parametrize(
    ("key", "allowed"), [("order-42", True), ("x" * 255, True), ("x" * 256, False), ("   ", False)]
)
def test_the_schema_and_the_api_agree_on_an_idempotency_key(
    client: TestClient, key: str, allowed: bool
) -> None:
    document = client.get("/openapi.json").json()
    (parameter,) = [
        p
        for p in document["paths"]["/v1/segmentations"]["post"]["parameters"]
        if p["name"] == "idempotency-key"
    ]
    # HTTP drops the spaces around a header value: the API sees what the schema is asked about.
    assert jsonschema.Draft202012Validator(parameter["schema"]).is_valid(key.strip()) == allowed
    response = client.post(
        "/v1/segmentations",
        json={"image_url": IMAGE, "prompt": "red circle"},
        headers={"Authorization": f"Bearer {KEY}", "Idempotency-Key": key},
    )
    assert response.status_code == (202 if allowed else 422), response.text


def test_a_405_names_every_method_of_the_path(client: TestClient) -> None:
    response = client.request("OPTIONS", "/v1/segmentations", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET, POST"


def test_a_500_leaves_the_connection_usable(service_settings: Settings) -> None:
    app = create_app(service_settings)

    async def fails() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/fails", fails)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http="httptools", log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        connection = http.client.HTTPConnection(*listener.getsockname(), timeout=10)
        connection.request("GET", "/fails")
        failed = connection.getresponse()
        assert failed.status == 500
        assert json.loads(failed.read()) == {"error": {"code": "internal_error", "message": "internal error"}}
        time.sleep(0.2)  # what a client's next request finds: before the fix, a connection closed under it
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
