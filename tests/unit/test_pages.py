"""The playground and docs pages as files: served with their CSP, loading nothing from another host and
nothing inline, so the CSP holds. (tests/e2e/test_playground.py runs them in a browser.)"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from smartseg.api.app import create_app
from smartseg.api.pages import PAGE_CSP, PLAYGROUND_CSP, REDOC_CSP
from smartseg.shared.settings import Settings

PAGES = {"/": PLAYGROUND_CSP, "/docs": PAGE_CSP, "/redoc": REDOC_CSP}
# What a page loads or links to: every src and href.
REFERENCE = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # Pages and static files touch neither Redis nor S3: nothing listens at these addresses.
    settings = Settings(redis_url="redis://127.0.0.1:1/0", s3_endpoint="http://127.0.0.1:9")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize("path", PAGES)
def test_a_page_has_its_csp_and_loads_only_files_served_here(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == PAGES[path]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    html = response.text
    # Inline code would need 'unsafe-inline': every script has a src, no <style>, no style= or on...=.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    assert not re.search(r"<style\b|\sstyle\s*=|\son[a-z]+\s*=", html, re.IGNORECASE), (
        "inline style or handler"
    )
    references = REFERENCE.findall(html)
    assert references
    for reference in references:
        if reference in ("docs", "redoc"):  # the playground's links to the docs pages
            continue
        assert not re.match(r"^[a-z]+:|^//", reference, re.IGNORECASE), f"{path} loads {reference}"
        assert client.get(f"/{reference}").status_code == 200, f"{path}: {reference} is not served"


def test_the_playground_script_talks_to_this_origin_only(client: TestClient) -> None:
    """No absolute URL in the page's own script: everything it fetches is relative to this origin."""
    script = client.get("/static/playground/app.js").text
    assert "fetch(" in script
    assert not re.search(r"""["'`]https?://""", script)
    assert "localStorage" not in script  # the key is kept in sessionStorage only


def test_samples_are_served_with_their_index(client: TestClient) -> None:
    samples = client.get("/samples/index.json").json()["samples"]
    assert samples
    for sample in samples:
        image = client.get(f"/samples/{sample['file']}")
        assert image.status_code == 200
        assert image.headers["content-type"].startswith("image/")
        assert image.headers["x-content-type-options"] == "nosniff"
        assert sample["prompts"]


@pytest.mark.parametrize(
    "path", ["/static/vendor/swagger-ui-bundle.js", "/static/vendor/redoc.standalone.js"]
)
def test_the_docs_bundles_come_from_the_installed_package(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert len(response.content) > 100_000  # the real bundle, not a stub


def test_pages_are_not_operations_of_the_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc"} & set(paths)
    assert not any(path.startswith(("/static", "/samples")) for path in paths)


def test_a_static_file_refuses_other_methods(client: TestClient) -> None:
    response = client.post("/static/playground/app.js")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"  # not emptied: the path is outside the document
    assert response.json()["error"]["code"] == "method_not_allowed"
