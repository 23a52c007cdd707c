"""Security headers on every api and notifier answer; CORS off unless origins are set."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from conftest import ADMIN_TOKEN, API_KEY, RoleProcess
from fintrack.config import Settings
from fintrack.notify.routes import STATIC_DIR

ACME = {"Authorization": f"Bearer {API_KEY}"}
ORIGIN = "https://console.example"


def test_api_answers_carry_security_headers(
    start_role: Callable[..., RoleProcess], settings: Settings
) -> None:
    """Accepted, refused, unrouted, wrong-method, error and ops answers of a real api all
    forbid sniffing, framing, loading anything, referrers and caching."""
    api = start_role("api", settings)
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        answers = [
            http.post(
                "/transactions", content=b'{"amount": 1, "source_ip": "1.2.3.4"}', headers=ACME
            ),
            http.post("/transactions", content=b"{", headers=ACME),
            http.get("/transactions/5f0c6a57-9d9e-4f55-a1b0-2f1c1c3f0a01", headers=ACME),
            http.get("/admin/blocklist"),
            http.get("/nope"),
            http.put("/transactions"),
            http.get("/health"),
            http.get("/metrics"),
            http.get("/schema/openapi.json"),
        ]
    assert [a.status_code for a in answers] == [202, 400, 404, 401, 404, 405, 200, 200, 200]
    for answer in answers:
        headers = answer.headers
        assert headers["x-content-type-options"] == "nosniff", answer.url
        assert headers["x-frame-options"] == "DENY"
        assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"


def test_dashboard_csp_allows_only_its_own_assets(
    start_role: Callable[..., RoleProcess], settings: Settings
) -> None:
    """The dashboard's CSP names no other origin, allows no inline code, forbids framing; every
    asset the pages load is served by the notifier itself with the same headers."""
    notifier = start_role("notifier", settings)
    with httpx.Client(base_url=notifier.base_url, timeout=10) as http:
        http.post("/login", data={"token": ADMIN_TOKEN})
        page = http.get("/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        for name in ("default-src", "script-src", "style-src", "connect-src"):
            assert directives[name] == "'self'", name
        assert directives["frame-ancestors"] == "'none'"
        for word in ("unsafe-inline", "unsafe-eval", "http", "*"):
            assert word not in csp, word
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        html = page.text + (STATIC_DIR / "login.html").read_text()
        assets = set(re.findall(r"""(?:src|href)="([^"#]+)""", html))
        assert assets
        assert all(a.startswith("/static/") for a in assets), assets
        assert "<script>" not in html  # no inline code: every script is a file
        assert " style=" not in html
        for asset in assets:
            answer = http.get(asset)
            assert answer.status_code == 200, asset
            assert answer.headers["content-security-policy"] == csp
            assert answer.headers["x-content-type-options"] == "nosniff"
        assert http.get("/static/../routes.py").status_code == 404
        assert http.get("/static/" + "x" * 5000).status_code == 404


@pytest.mark.parametrize(
    ("role", "path", "headers"),
    [("api", "/transactions", ACME), ("notifier", "/health", {})],
)
def test_cors_is_off_by_default(
    start_role: Callable[..., RoleProcess],
    settings: Settings,
    role: str,
    path: str,
    headers: dict[str, str],
) -> None:
    """Without FINTRACK_CORS_ORIGINS no answer, preflight or not, allows another origin."""
    server = start_role(role, settings)
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        simple = http.get(path, headers={**headers, "Origin": ORIGIN})
        preflight = http.options(
            path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        )
    for answer in (simple, preflight):
        assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize(
    ("role", "path", "method", "request_headers"),
    [
        ("api", "/transactions", "POST", "authorization, content-type, prefer"),
        ("notifier", "/events", "GET", "authorization, last-event-id"),
    ],
)
def test_cors_allows_exactly_the_configured_origins(
    start_role: Callable[..., RoleProcess],
    settings: Settings,
    role: str,
    path: str,
    method: str,
    request_headers: str,
) -> None:
    """With origins configured, a preflight from one of them is allowed (no credentials);
    any other origin gets no CORS headers."""
    server = start_role(role, settings, FINTRACK_CORS_ORIGINS=f"{ORIGIN}, https://other.example")
    with httpx.Client(base_url=server.base_url, timeout=10) as http:

        def preflight(origin: str) -> httpx.Response:
            return http.options(
                path,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": request_headers,
                },
            )

        allowed = preflight(ORIGIN)
        refused = preflight("https://evil.example")
        simple = http.get("/health", headers={"Origin": ORIGIN})

    assert allowed.status_code in (200, 204)
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert method in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in refused.headers
    assert simple.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize(
    ("role", "path", "methods", "headers"),
    [
        ("api", "/transactions", {"GET", "POST"}, ACME),
        ("api", "/admin/keys", {"GET", "POST"}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
        ("api", "/transactions/batch", {"POST"}, ACME),
        ("notifier", "/login", {"GET", "POST"}, {}),
    ],
)
def test_options_lists_every_method_of_the_path(
    start_role: Callable[..., RoleProcess],
    settings: Settings,
    role: str,
    path: str,
    methods: set[str],
    headers: dict[str, str],
) -> None:
    """OPTIONS (not a CORS preflight) answers with every method the path serves, as the
    405 for an unsupported method does."""
    server = start_role(role, settings)
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        options = http.options(path, headers=headers)
        wrong = http.request("PATCH", path, headers=headers)

    def allowed(response: httpx.Response) -> set[str]:
        return {m.strip() for m in response.headers["allow"].split(",")}

    assert options.status_code == 204
    assert allowed(options) == methods | {"OPTIONS"}
    assert wrong.status_code == 405
    assert allowed(wrong) == allowed(options)
