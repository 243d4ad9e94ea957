"""A 1C statement uploaded as an admin does it: chromium on the app page, the file chosen (then dropped), the
preview's numbers, "Import", and the invoice paid in the portal sandbox; the same file again is "0 new"."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from conftest import open_admin_page, start_seeded_stack, wait_for
from onec_samples import Doc, statement_bytes
from test_statement_import import our_account, today

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

NOT_OURS = "40702810500000000777"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def shots(tmp_path) -> Path:
    if os.environ.get("B24APP_UPDATE_SCREENSHOTS") == "1":
        return REPO / "docs" / "screenshots"
    return tmp_path


@pytest.fixture
def live(tmp_path):
    st = start_seeded_stack(tmp_path, link=True, worker=True, sync_interval=2)
    yield st
    st.stop()


def app_frame(page, live):
    return next(f for f in page.frames if f.url.startswith(live.app_url))


def drop_file(frame, selector: str, name: str, data: bytes) -> None:
    """Drag and drop, as a file manager does it: a `drop` event whose DataTransfer holds the file."""
    transfer = frame.evaluate_handle(
        """([name, b64]) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
             const dt = new DataTransfer(); dt.items.add(new File([bytes], name, {type: 'text/plain'})); return dt; }""",
        [name, base64.b64encode(data).decode()])
    frame.locator(selector).dispatch_event("dragover", {"dataTransfer": transfer})
    frame.locator(selector).dispatch_event("drop", {"dataTransfer": transfer})


def test_upload_a_1c_file_preview_import_and_the_invoice_is_paid(browser, live, tmp_path, shots):
    d0, acc = live.deals[0], our_account(live)  # invoice 1207, 12 000 ₽
    data = statement_bytes(acc, [
        Doc("310", today(live), "12000.00", f"Оплата по счету № {d0['number']} от 14.01.2026", acc,
            payer_inn=d0["inn"], payer_name=d0["company"]),
        Doc("13", today(live), "700.00", "Чужой платёж", NOT_OURS, payer_account="40702810600000000888")])
    path = tmp_path / "kl_to_1c.txt"
    path.write_bytes(data)
    context, page, app, errors = open_admin_page(browser, live)
    try:
        app.locator("#upload-title").wait_for()
        app.locator("#upload-file").set_input_files(str(path))     # choosing the file uploads it
        preview = app.locator("#upload-preview")
        preview.wait_for()
        assert (preview.get_attribute("data-incoming"), preview.get_attribute("data-new"),
                preview.get_attribute("data-known"), preview.get_attribute("data-not-ours")) == ("1", "1", "0", "1")
        assert app.locator("#upload-progress").get_attribute("aria-valuenow") == "100"
        assert acc in preview.inner_text()
        app.locator("#upload").screenshot(path=str(shots / "upload-ru.png"))
        app.locator("#import-submit").click()
        result = app.locator("#upload-result")
        result.wait_for()
        assert result.get_attribute("data-new") == "1"
        wait_for(lambda: live.rest("crm.item.get", {"entityTypeId": 31, "id": d0["invoice_id"]})
                 ["result"]["item"]["stageId"] == "DT31_2:P", timeout=40)

        drop_file(app_frame(page, live), "#upload-drop", "kl_to_1c.txt", data)   # the same file, dropped
        preview.wait_for()
        assert (preview.get_attribute("data-new"), preview.get_attribute("data-known")) == ("0", "1")
        app.locator("#import-submit").click()
        result.wait_for()
        assert result.get_attribute("data-new") == "0" and "0 нов" in result.inner_text()
        assert errors == []
    finally:
        context.close()
