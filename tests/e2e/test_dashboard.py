"""The admin dashboard in a real browser against real api, worker and notifier processes:
sign-in, live table, counters, alerts, detail panel, filters, and resuming after the
notifier restarts on the same port. Also static checks that the assets fit the CSP."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import ADMIN_TOKEN, API_KEY, RoleProcess
from fintrack.config import Settings

CHROMIUM = Path("/usr/bin/chromium")
STATIC = Path(__file__).parents[2] / "src" / "fintrack" / "notify" / "static"
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
BLOCKED_NET = "203.0.113.0/24"
UI_TIMEOUT_MS = 15_000
DECIDE_WAIT = {"Prefer": "wait=5000"}
NETWORK_ERROR = re.compile(r"net::ERR_|Failed to load resource")

browser_only = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
)


def seed_txn(**changes: Any) -> dict[str, Any]:
    """The seed README's example transaction with a fresh id (and optional changes)."""
    txn: dict[str, Any] = {
        "txn_id": str(uuid.uuid4()),
        "user_id": "user_123",
        "amount": 150000.00,
        "currency": "INR",
        "merchant_type": "luxury_goods",
        "source_ip": "192.168.1.50",
        "status": "PENDING",
    }
    txn.update(changes)
    return txn


async def submit(api: httpx.AsyncClient, txn: dict[str, Any]) -> dict[str, Any]:
    """POST one transaction and wait (inline, then by polling) for its decision."""
    response = await api.post("/transactions", json=txn, headers=DECIDE_WAIT)
    assert response.status_code in (200, 202), response.text
    for _ in range(100):
        if response.status_code == 200 and response.json()["status"] != "PENDING":
            decided: dict[str, Any] = response.json()
            return decided
        await asyncio.sleep(0.1)
        response = await api.get(f"/transactions/{txn['txn_id']}")
    raise AssertionError(f"no decision for {txn['txn_id']}: {response.text}")


@pytest.fixture
async def api_client(
    settings: Settings, start_role: Callable[..., RoleProcess]
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for a real api process (API key of client acme)."""
    api = start_role("api", settings)
    async with httpx.AsyncClient(
        base_url=api.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    ) as client:
        yield client


@pytest.mark.browser
@browser_only
async def test_dashboard_shows_live_decisions_and_resumes_after_notifier_restart(
    settings: Settings, start_role: Callable[..., RoleProcess], api_client: httpx.AsyncClient
) -> None:
    """Signed in, the page shows each decision live (row, counters, alerts, rule hits),
    honours filters, and after the notifier restarts on its port replays what it missed."""
    from playwright.async_api import async_playwright, expect

    blocked = await api_client.post(
        "/admin/blocklist",
        json={"network": BLOCKED_NET, "reason": "test"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert blocked.status_code == 201, blocked.text
    start_role("worker", settings)
    # Short streams: SIGTERM waits for open feed responses, at most one stream lifetime.
    notifier_env = {"FINTRACK_SSE_LIFETIME_S": "4"}
    notifier = start_role("notifier", settings, **notifier_env)
    port = urlsplit(notifier.base_url).port
    problems: list[str] = []

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            # CSP violations ("Refused to ...") and script errors surface on the console;
            # failed requests while the notifier restarts are expected.
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console: {m.text}")
                    if m.type == "error" and not NETWORK_ERROR.search(m.text)
                    else None
                ),
            )
            expect.set_options(timeout=UI_TIMEOUT_MS)

            # Sign-in: a wrong token is refused with a message, the right one gets in.
            await page.goto(notifier.base_url + "/")
            assert urlsplit(page.url).path == "/login"
            await page.fill("input[name=token]", "not-the-token")
            await page.click("button[type=submit]")
            await expect(page.locator("#login-error")).to_be_visible()
            await page.fill("input[name=token]", ADMIN_TOKEN)
            await page.click("button[type=submit]")
            await page.wait_for_url(notifier.base_url + "/")
            badge = page.locator("#conn")
            await expect(badge).to_have_attribute("data-state", "live")
            await page.evaluate(RECORD_BADGE_STATES)
            await expect(page.locator("#count-total")).to_have_text("0")

            # An ordinary transaction and one from a blocklisted network.
            ordinary = await submit(api_client, seed_txn())
            hostile = await submit(api_client, seed_txn(user_id="mallory", source_ip="203.0.113.9"))
            assert hostile["status"] == "BLOCKED"
            assert "ip_blocklist" in {hit["rule"] for hit in hostile["reasons"]}
            for decided in (ordinary, hostile):
                await expect_row(page, decided)
            await expect(page.locator("#count-total")).to_have_text("2")
            by_status = dict.fromkeys(("APPROVED", "FLAGGED", "BLOCKED", "FAILED"), 0)
            for decided in (ordinary, hostile):
                by_status[decided["status"]] += 1
            for status, n in by_status.items():
                await expect(page.locator(f"#count-{status}")).to_have_text(str(n))
            risky = [d for d in (ordinary, hostile) if d["status"] != "APPROVED"]
            await expect(page.locator("#alert-count")).to_have_text(str(len(risky)))
            for decided in risky:
                await expect(row_of(page, decided, kind="alert")).to_have_count(1)

            # The detail panel lists every rule hit with its score and reason.
            await row_of(page, hostile).click()
            await expect(page.locator("#detail")).to_be_visible()
            await expect(page.locator("#d-txn")).to_have_text(hostile["txn_id"])
            hits = page.locator("#d-hits-body tr")
            await expect(hits).to_have_count(len(hostile["reasons"]))
            shown = {tuple(await row.locator("td").all_inner_texts()) for row in await hits.all()}
            assert shown == {(h["rule"], str(h["score"]), h["reason"]) for h in hostile["reasons"]}
            await page.keyboard.press("Escape")
            await expect(page.locator("#detail")).to_be_hidden()

            # Filters: without APPROVED the stream reopens with ?status=..., approved rows go.
            await page.locator('input[name=status][value="APPROVED"]').uncheck()
            await page.wait_for_url(re.compile(r"status=FLAGGED%2CBLOCKED%2CFAILED"))
            await expect(page.locator('#rows tr[data-status="APPROVED"]')).to_have_count(0)
            quiet = await submit(
                api_client, seed_txn(user_id="quinn", amount=12.5, merchant_type="grocery")
            )
            assert quiet["status"] == "APPROVED"
            loud = await submit(api_client, seed_txn(user_id="mallory", source_ip="203.0.113.10"))
            await expect_row(page, loud)
            # One worker publishes in order: `loud` showing means `quiet` went by, unshown.
            await expect(row_of(page, quiet, kind=None)).to_have_count(0)

            # Restart the notifier on the same port; what happened meanwhile is replayed.
            await asyncio.to_thread(notifier.stop)
            await expect(badge).to_have_attribute("data-state", "reconnecting")
            missed = await submit(api_client, seed_txn(user_id="eve", source_ip="203.0.113.11"))
            notifier = await asyncio.to_thread(
                start_role, "notifier", settings, port=port, **notifier_env
            )
            await expect_row(page, missed)
            await expect(badge).to_have_attribute("data-state", "live")
            states: list[str] = await page.evaluate("window.badgeStates")
            assert "reconnecting" in states, states
            since_outage = states[len(states) - states[::-1].index("reconnecting") :]
            assert "resumed" in since_outage, states
            after = await submit(api_client, seed_txn(user_id="trent", source_ip="203.0.113.12"))
            await expect_row(page, after)
            await expect(row_of(page, missed, kind=None)).to_have_count(2)  # decision + alert

            # A fuller picture for the screenshot: all statuses again, a few users.
            await page.locator('input[name=status][value="APPROVED"]').check()
            await page.wait_for_url(notifier.base_url + "/")
            batch = [
                seed_txn(user_id=f"user_{i}", amount=1000 * (i + 1), merchant_type="grocery")
                for i in range(6)
            ] + [seed_txn(user_id="mallory", source_ip="203.0.113.77")]
            for txn in batch:
                await submit(api_client, txn)
            await expect_row(page, await submit(api_client, seed_txn(user_id="zoe")))
            ARTIFACTS.mkdir(exist_ok=True)
            await page.wait_for_timeout(1_100)  # cosmetic only: let the chart's second fill
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
            await row_of(page, batch[-1]).click()
            await page.screenshot(path=str(ARTIFACTS / "dashboard-detail.png"))

            # Sign-out ends the session: the page and the feed need a new sign-in.
            await page.keyboard.press("Escape")
            await page.click("#signout")
            await page.wait_for_url(re.compile(r"/login$"))
            await page.goto(notifier.base_url + "/")
            assert urlsplit(page.url).path == "/login"
        finally:
            await browser.close()
    assert not problems, problems


# Test instrumentation (run through DevTools, so the page's CSP doesn't apply): keep every
# state the connection badge goes through, as "resumed" shows only for a few seconds.
RECORD_BADGE_STATES = """() => {
  const badge = document.getElementById("conn");
  window.badgeStates = [badge.dataset.state];
  new MutationObserver(() => {
    const state = badge.dataset.state;
    if (window.badgeStates.at(-1) !== state) window.badgeStates.push(state);
  }).observe(badge, { attributes: true, attributeFilter: ["data-state"] });
}"""


def row_of(page: Any, txn: dict[str, Any], kind: str | None = "decision") -> Any:
    """The live table's rows for a transaction (of one event kind, or all)."""
    selector = f'#rows tr[data-txn="{txn["txn_id"]}"]'
    return page.locator(selector + (f'[data-kind="{kind}"]' if kind else ""))


async def expect_row(page: Any, decided: dict[str, Any]) -> None:
    """The decision's row is in the live table with its status and top reason."""
    from playwright.async_api import expect

    row = row_of(page, decided)
    await expect(row).to_have_count(1)
    await expect(row.locator(".pill")).to_have_text(decided["status"])
    await expect(row).to_have_attribute("data-status", decided["status"])
    if decided["reasons"]:
        top = max(decided["reasons"], key=lambda hit: hit["score"])
        await expect(row.locator("td").last).to_contain_text(top["rule"])
    else:
        await expect(row.locator("td").last).to_contain_text("no rule fired")


# ---------------------------------------------------------------- static checks (no browser)

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER_ATTR = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
REMOTE_URL = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.IGNORECASE)


@pytest.mark.parametrize("page", ["index.html", "login.html"])
def test_pages_have_no_inline_code_styles_or_remote_assets(page: str) -> None:
    """The pages load only same-origin files: no inline scripts, handlers, styles or CDN."""
    html = (STATIC / page).read_text()
    assert not INLINE_SCRIPT.search(html)
    assert not EVENT_HANDLER_ATTR.search(html)
    assert "style=" not in html.lower()
    assert "<style" not in html.lower()
    assert not REMOTE_URL.search(html)
    for ref in re.findall(r"""(?:src|href)="(/static/[^"]+)""", html):
        assert (STATIC / ref.removeprefix("/static/")).is_file(), ref


def test_login_form_posts_the_token_field() -> None:
    """The sign-in form posts a password field named ``token`` to /login."""
    html = (STATIC / "login.html").read_text()
    form = re.search(r"<form[^>]*>", html)
    assert form is not None
    assert 'method="post"' in form.group(0)
    assert 'action="/login"' in form.group(0)
    assert re.search(r'<input[^>]*type="password"[^>]*name="token"', html, re.DOTALL)


def test_scripts_never_build_html_from_strings() -> None:
    """Event data reaches the page through textContent only: no innerHTML, no eval."""
    for script in STATIC.glob("*.js"):
        code = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, f"{script.name} uses {sink}"
        assert "new Function" not in code
        assert 'setAttribute("style"' not in code
