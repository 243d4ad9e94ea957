"""Screenshot the SMS link flow (INN → T-Bank phone → SMS code → consent → linked) for the README.

    .venv/bin/python scripts/screenshot_bank_link.py docs/screenshots/bank-link-flow.png

Drives Debian's chromium through Playwright against the sandboxes (no network, no browser download).
"""
from __future__ import annotations

import base64
import re
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from b24app.sandbox.stack import DEMO_INN, DEMO_KPP, DEMO_PHONE, link_ticket, start_stack

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(out: str) -> None:
    stack = start_stack()
    shots: list[tuple[str, bytes]] = []
    try:
        stack.install()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 520, "height": 560})
            page.goto(f"{stack.app_url}/bank/start?ticket={link_ticket(stack)}")
            page.fill("#inn", DEMO_INN)
            page.fill("#kpp", DEMO_KPP)
            shots.append(("1. ИНН компании", page.screenshot()))
            page.click("#continue")
            page.fill("#phone", DEMO_PHONE)
            shots.append(("2. Вход в Т-Банк по телефону", page.screenshot()))
            page.click("#submit")
            code = re.search(r"\d{4}", page.inner_text("#sms-code")).group(0)
            page.fill("#code", code)
            shots.append(("3. Код из СМС", page.screenshot()))
            page.click("#submit")
            shots.append(("4. Согласие на доступ", page.screenshot()))
            page.click("#allow")
            page.wait_for_selector("#link-ok")
            shots.append(("5. Банк подключён", page.screenshot()))
            cells = "".join(
                f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}"><figcaption>{title}'
                f"</figcaption></figure>" for title, png in shots)
            board = browser.new_page(viewport={"width": 5 * 540, "height": 620})
            with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as fh:
                fh.write("<html><body style='margin:0;display:flex;gap:20px;padding:10px;background:#eef2f4;"
                         "font:16px Open Sans,Helvetica,Arial'>" + cells.replace(
                             "<img ", "<img style='border:1px solid #c6cdd3;border-radius:8px' ") + "</body></html>")
            board.goto(Path(fh.name).as_uri())
            board.screenshot(path=out, full_page=True)
            browser.close()
    finally:
        stack.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots/bank-link-flow.png")
