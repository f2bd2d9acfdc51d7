#!/usr/bin/env python
"""A support user logs in to a running admin with headless Chromium and reads a transcript
(scripts/docker-smoke.sh runs it against the compose stack).

    python scripts/smoke_browser.py BASE_URL USER PASSWORD CUSTOMER_ID TEXT

Searches CUSTOMER_ID, opens the first conversation's transcript, and exits 0 when TEXT is in
it; otherwise it says what it saw and exits 1. Uses Debian's chromium (CHROMIUM_PATH).
"""

from __future__ import annotations

import os
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


def main() -> int:
    base, user, password, customer, text = sys.argv[1:6]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{base}/admin/login/?next=/admin/conversations/conversationhistory/")
            page.fill("#id_username", user)
            page.fill("#id_password", password)
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/conversations/conversationhistory/**")
            page.fill("#searchbar", customer)
            page.press("#searchbar", "Enter")
            page.wait_for_selector("#result_list")
            page.locator("#result_list td.field-conversation a").first.click()
            page.wait_for_selector("ol.transcript")
            transcript = page.locator("ol.transcript").inner_text()
        finally:
            browser.close()
    if text not in transcript:
        print(f"smoke_browser: {text!r} is not in the transcript:\n{transcript[:2000]}", file=sys.stderr)
        return 1
    print(f"smoke_browser: logged in as {user}, found {customer}, read {len(transcript)} characters of transcript")
    return 0


if __name__ == "__main__":
    sys.exit(main())
