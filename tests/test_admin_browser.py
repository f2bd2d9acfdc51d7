"""The support view end to end, in headless Chromium: log in as a support user, search a
customer, open the transcript, read it. Uses Debian's chromium (apt-get install chromium)
driven by Playwright for Python, not a browser downloaded by Playwright; a missing browser
fails the test, it does not skip it."""

from __future__ import annotations

import importlib
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, User
from django.db import connection

from conversations.models import ArchivedConversation, ConversationHistory

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Where the lead can look at the last run's transcript page.
# Set SCREENSHOT_DIR to keep the screenshot (docs/admin_transcript.png was made this way).
SHOWCASE_DIR = os.environ.get("SCREENSHOT_DIR")
PASSWORD = "support-password-1"
START = datetime(2026, 3, 2, 9, 15, tzinfo=timezone.utc)


def require_browser() -> None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"No Chromium at {CHROMIUM}: the browser test needs Debian's chromium. "
            "Install it with `apt-get install -y chromium` (or set CHROMIUM_PATH)."
        )
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install -r requirements-dev.txt")


def seed() -> None:
    # A transactional test may find the tables flushed: make the group the way migration 0003 does.
    migration = importlib.import_module("conversations.migrations.0003_support_group")
    migration.create_support_group(apps, SimpleNamespace(connection=connection))
    user = User.objects.create_user("agent", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="support"))
    lines = [
        ("human", "Hi, my order 1234 never arrived.\nCan you check?"),
        ("ai", "Of course. <script>alert('x')</script> Let me look it up."),
        ("ai", "Your parcel is at the depot; it will be delivered tomorrow."),
    ]
    for position, (role, content) in enumerate(lines):
        ConversationHistory.objects.create(
            conversation_id="conv-browser-1",
            customer_id="cust-browser-7",
            timestamp=START + timedelta(minutes=position),
            role=role,
            content=content,
            position=position,
            message_key=str(position),
            source="plain",
            thread_id="conv-browser-1",
            archived_at=START + timedelta(days=1),
        )
    ConversationHistory.objects.create(
        conversation_id="conv-other",
        customer_id="cust-other",
        timestamp=START,
        role="human",
        content="Someone else entirely",
        position=0,
        message_key="0",
        source="plain",
        thread_id="conv-other",
        archived_at=START,
    )
    ArchivedConversation.objects.create(
        conversation_id="conv-browser-1",
        customer_id="cust-browser-7",
        thread_id="conv-browser-1",
        summary="Order 1234 delayed; delivery tomorrow.",
        first_message_at=START,
        last_message_at=START + timedelta(minutes=2),
        message_count=3,
        first_archived_at=START + timedelta(days=1),
        last_archived_at=START + timedelta(days=1),
    )


def test_support_user_finds_a_customer_and_reads_the_transcript(live_server, tmp_path: Path) -> None:
    require_browser()
    seed()  # before Playwright starts: its event loop makes the ORM refuse to run in this thread
    from playwright.sync_api import sync_playwright

    screenshot = tmp_path / "admin_transcript.png"
    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.set_default_timeout(15_000)

            page.goto(f"{live_server.url}/admin/conversations/conversationhistory/")
            assert "/admin/login/" in page.url
            page.fill("#id_username", "agent")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/conversations/conversationhistory/**")

            page.fill("#searchbar", "cust-browser-7")
            page.press("#searchbar", "Enter")
            page.wait_for_url("**q=cust-browser-7**")
            results = page.locator("#result_list tbody tr")
            assert results.count() == 3
            assert "Someone else entirely" not in page.content()

            page.locator("#result_list a", has_text="conv-browser-1").first.click()
            page.wait_for_selector("ol.transcript")
            messages = page.locator("ol.transcript li.message")
            assert messages.count() == 3
            texts = [messages.nth(i).locator(".text").inner_text() for i in range(3)]
            assert texts[0] == "Hi, my order 1234 never arrived.\nCan you check?"
            assert texts[1] == "Of course. <script>alert('x')</script> Let me look it up."
            assert "delivered tomorrow" in texts[2]
            assert page.locator("#summary").inner_text() == "Order 1234 delayed; delivery tomorrow."
            assert "2026-03-02 10:15:00 CET" in messages.nth(0).inner_text()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert dialogs == [], "a message's <script> ran in the page"
    assert screenshot.stat().st_size > 10_000
    if SHOWCASE_DIR:
        shutil.copyfile(screenshot, Path(SHOWCASE_DIR) / screenshot.name)


def seed_edges() -> None:
    """A heavy customer whose messages share a timestamp, a disguised file name, a long word,
    a huge message, and someone else's message."""
    seed()
    rows = [
        ConversationHistory(
            conversation_id=f"conv-heavy-{i // 50}", customer_id="cust-heavy", timestamp=START, role="human",
            content=f"pedido {i}", position=i % 50, message_key=f"h{i}", source="plain",
            thread_id=f"conv-heavy-{i // 50}", archived_at=START,
        )
        for i in range(250)
    ]
    edges = [
        "Abre el fichero gnp\u202e.exe ya",
        "x" * 400,  # one unbroken word
        "y" * 200_000,  # a huge message
    ]
    rows += [
        ConversationHistory(
            conversation_id="conv-edges", customer_id="cust-edges", timestamp=START + timedelta(minutes=i), role="human",
            content=text, position=i, message_key=f"e{i}", source="plain", thread_id="conv-edges", archived_at=START,
        )
        for i, text in enumerate(edges)
    ]
    ConversationHistory.objects.bulk_create(rows)


def log_in(page, base: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "agent")
    page.fill("#id_password", password)
    page.click("input[type=submit]")


def test_support_view_edges_in_the_browser(live_server) -> None:
    require_browser()
    seed_edges()
    from playwright.sync_api import sync_playwright

    changelist = f"{live_server.url}/admin/conversations/conversationhistory/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            log_in(page, live_server.url)
            page.wait_for_url("**/admin/")

            # Every row of a customer, exactly once, by following "next" page links; an exact count.
            page.goto(f"{changelist}?q=cust-heavy")
            assert page.locator(".result-count").inner_text() == "250 messages"
            seen: list[str] = []
            pages = 1
            while True:
                seen += page.locator("#result_list tbody td.field-excerpt").all_inner_texts()
                following = page.locator(".paginator a.next-page")  # our own link: Django 5 and 6 mark pages differently
                if following.count() == 0:
                    break
                following.first.click()
                pages += 1
                page.wait_for_url(f"**p={pages}**")
            assert pages == 3 and sorted(seen) == sorted(f"pedido {i}" for i in range(250))

            # A page past the end stays within the search; "clear the search" says what it does.
            page.goto(f"{changelist}?q=cust-heavy&p=150")
            assert "q=cust-heavy" in page.url and page.locator("#result_list tbody tr").count() == 50
            assert page.locator("a.clear-search").inner_text() == "clear the search"
            assert page.locator("a.showall").count() == 0

            # Lookups typed into the URL and NUL bytes are refused.
            assert page.goto(f"{changelist}?content__icontains=pedido").status == 400
            assert page.goto(f"{changelist}?role=%00").status == 400

            # customer:ID beside words.
            page.goto(changelist)
            page.fill("#searchbar", "customer:cust-heavy pedido 7")
            page.press("#searchbar", "Enter")
            page.wait_for_selector("#result_list")
            texts = page.locator("#result_list tbody td.field-excerpt").all_inner_texts()
            assert texts and all(t.startswith("pedido ") and "7" in t for t in texts)

            # Disguising characters are visible; long words wrap; times stay on one line.
            page.goto(f"{changelist}?q=cust-edges")
            excerpts = page.locator("#result_list tbody td.field-excerpt")
            assert "Abre el fichero gnp⟨U+202E⟩.exe ya" in excerpts.all_inner_texts()
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # nothing stretches the page
            lines = page.evaluate(
                "[...document.querySelectorAll('#result_list tbody .field-when a')].map(a => a.getClientRects().length)"
            )
            assert lines and set(lines) == {1}  # each time on one line, beside a cell of many lines

            # The transcript shows the start of a huge message, and a link to all of it.
            page.locator("#result_list a", has_text="conv-edges").first.click()
            page.wait_for_selector("ol.transcript")
            assert "gnp⟨U+202E⟩.exe ya" in page.locator("ol.transcript").inner_text()
            link = page.locator("p.shortened a")
            assert link.inner_text() == "Show the whole message (200000 characters)"
            assert len(page.content()) < 100_000
            link.click()
            page.wait_for_selector("pre.message-text")
            assert len(page.locator("pre.message-text").inner_text()) == 200_000

            # Login throttling: after too many wrong passwords, even the right one is refused.
            other = browser.new_page()
            for _ in range(5):
                log_in(other, live_server.url, password="wrong")
            log_in(other, live_server.url)
            assert "Too many failed logins" in other.content()
        finally:
            browser.close()
