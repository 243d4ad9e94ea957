"""A 1C statement file, through `b24app import-statement` and the sandboxes: it pays invoices exactly as a T-Bank API
payment does, once; the same payment seen through the API and in a file is one payment; bad files store nothing."""
from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import func, select

from b24app.pipeline import sync
from b24app.adapters.banks.operations import MSK
from b24app.cli import main
from b24app.storage.models import BankAccount, Operation, OperationAlias, Portal
from b24app.pipeline.statement_import import import_statement, preview_statement
from b24app.pipeline.worker import Worker
from onec_samples import Doc, statement_bytes

NOT_OURS = "40702810500000000777"


def our_account(stack) -> str:
    with stack.ctx.db.session() as s:
        return s.scalar(select(BankAccount.account_number).where(BankAccount.watched.is_(True)))


def run_worker_until_idle(stack, rounds=20):
    w = Worker(stack.ctx, concurrency=1)
    for _ in range(rounds):
        if not w.run_once():
            break


def sync_now(stack):
    with stack.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    sync.request_sync(stack.ctx, portal.id)
    run_worker_until_idle(stack)


def cli(stack, *args):
    return CliRunner().invoke(main, ["import-statement", "--member-id", stack.member_id(), *args],
                              env=stack.worker_env())


def operations(stack) -> int:
    with stack.ctx.db.session() as s:
        return s.scalar(select(func.count()).select_from(Operation))


def item(stack, invoice_id):
    return stack.rest("crm.item.get", {"entityTypeId": 31, "id": invoice_id})["result"]["item"]


def notes_for(stack, user_id):
    return [n["message"] for n in stack.portal_state()["notifications"]
            if n["user_id"] == user_id and not n.get("replaced_by")]


def comments(stack, deal_id):
    return [c["COMMENT"] for c in stack.portal_state()["timeline_comments"] if str(c["ENTITY_ID"]) == str(deal_id)]


def today(stack) -> str:
    return stack.ctx.clock.now().astimezone(MSK).strftime("%d.%m.%Y")


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_1c_file_pays_the_matching_invoices_exactly_as_an_api_payment(linked, tmp_path):
    acc, day = our_account(linked), today(linked)
    d0, d1 = linked.deals[0], linked.deals[1]  # 1207, 12 000.00; СЧ-00412, 48 500.00
    path = write(tmp_path, "kl_to_1c.txt", statement_bytes(acc, [
        Doc("310", day, "12000.00", f"Оплата по счету № {d0['number']} от 14.01.2026", acc,
            payer_inn=d0["inn"], payer_name=d0["company"]),
        Doc("311", day, "40000.00", "Оплата по сч. СЧ-00412 частично", acc, payer_inn=d1["inn"],
            payer_name=d1["company"], name_style="plain", credited="", split_purpose=True),
        Doc("12", day, "500.00", "Оплата услуг связи", "40702810900000000999", payer_account=acc,
            payer_inn="7701234567", recipient_inn="7702070139"),                         # outgoing
        Doc("13", day, "700.00", "Чужой платёж", NOT_OURS, payer_account="40702810600000000888"),  # not ours
    ], trailing_spaces=True))

    preview = cli(linked, str(path))  # no --yes and no terminal: a preview, nothing stored
    assert preview.exit_code == 0, preview.output
    assert "2 incoming payments: 2 new (52000.00), 0 already known" in preview.output
    assert "1 outgoing payments" in preview.output and "1 documents for accounts not ours" in preview.output
    assert "preview only" in preview.output and operations(linked) == 0

    done = cli(linked, "--yes", str(path))
    assert done.exit_code == 0, done.output
    assert "imported 2 new incoming payments (0 already known)" in done.output
    run_worker_until_idle(linked)
    # what test_reconcile_e2e asserts for the same payment read from T-Bank's API
    assert item(linked, d0["invoice_id"])["stageId"] == "DT31_2:P"
    [msg] = [m for m in notes_for(linked, d0["user"]) if "12\u00a0000,00\u00a0₽" in m]
    assert d0["number"] in msg
    [comment] = comments(linked, d0["deal_id"])
    assert d0["company"] in comment and day in comment  # ДатаПоступило, the Moscow day (not UTC's day before)
    execs = linked.portal_state()["trigger_executions"]
    assert sorted((e["code"], str(e["owner_id"])) for e in execs) == [
        ("b24app_payment_received", str(d0["deal_id"])), ("b24app_payment_received", str(d1["deal_id"]))]
    assert item(linked, d1["invoice_id"])["stageId"] == "DT31_2:N"
    assert any("8\u00a0500,00" in m for m in notes_for(linked, d1["user"]))
    with linked.ctx.db.session() as s:
        rows = list(s.scalars(select(Operation).order_by(Operation.id)))
    assert [(r.source, r.state, r.is_credit, str(r.amount)) for r in rows] == [
        ("1c", "matched", True, "12000.00"), ("1c", "matched", True, "40000.00")]
    assert rows[1].payer_name == d1["company"] and rows[1].purpose == "Оплата по сч. СЧ-00412 частично"

    # the same file again: nothing new, nothing sent twice
    before = (len(linked.portal_state()["notifications"]), len(comments(linked, d0["deal_id"])))
    again = cli(linked, "--yes", str(path))
    assert again.exit_code == 0, again.output
    assert "2 incoming payments: 0 new (0.00), 2 already known" in again.output and "nothing new" in again.output
    run_worker_until_idle(linked)
    assert operations(linked) == 2
    assert (len(linked.portal_state()["notifications"]), len(comments(linked, d0["deal_id"]))) == before


def test_a_payment_seen_through_the_api_and_in_a_file_is_one_payment(linked, tmp_path):
    acc = our_account(linked)
    d0, d3 = linked.deals[0], linked.deals[3]  # 1207, 12 000.00; 1208, 3 000.00 (same payer)
    when = linked.ctx.clock.now() - timedelta(hours=1)
    day = when.astimezone(MSK).strftime("%d.%m.%Y")
    # API first: T-Bank's statement shows it (bank sandbox control API), the worker pays the invoice
    linked.pay(d0["amount"], f"Оплата по счету № {d0['number']} от 14.01.2026 В т.ч. НДС 20% - 2000.00 руб.",
               payerInn=d0["inn"], payerName=d0["company"], documentNumber="4711", operationDate=when.isoformat())
    sync_now(linked)
    assert item(linked, d0["invoice_id"])["stageId"] == "DT31_2:P" and operations(linked) == 1
    # …then the same payment in the bank's 1C export, its purpose re-wrapped (so the fingerprints differ)
    path = write(tmp_path, "export.txt", statement_bytes(acc, [
        Doc("4711", day, "12000.00", f"Оплата по счету № {d0['number']} от 14.01.2026 В т.ч. НДС 20%  -  2000.00 руб",
            acc, payer_inn=d0["inn"], payer_name=d0["company"], split_purpose=True)], codec="cp866"))
    with linked.ctx.db.session() as s:
        portal_id = s.scalar(select(Portal.id))
    preview = preview_statement(linked.ctx, portal_id, path)
    assert (preview.incoming, preview.new, preview.known) == (1, 0, 1)
    result = import_statement(linked.ctx, portal_id, path)
    assert (result.new, result.known) == (0, 1) and operations(linked) == 1

    # File first, then the API: still one payment, one effect in Bitrix24
    path = write(tmp_path, "export2.txt", statement_bytes(acc, [
        Doc("004712", day, "3000.00", f"Оплата по счету {d3['number']}", acc, payer_inn=d3["inn"],
            payer_name=d3["company"])]))
    assert "imported 1 new" in cli(linked, "--yes", str(path)).output
    run_worker_until_idle(linked)
    assert item(linked, d3["invoice_id"])["stageId"] == "DT31_2:P"
    linked.pay(d3["amount"], f"Оплата по счету № {d3['number']} (ООО Вектор)", payerInn=d3["inn"],
               payerName=d3["company"], documentNumber="4712", operationDate=when.isoformat())
    sync_now(linked)
    assert operations(linked) == 2
    with linked.ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(OperationAlias)) == 2  # each payment: one alias
    msgs = notes_for(linked, d3["user"])
    assert len([m for m in msgs if d3["number"] in m]) == 1
    assert len(comments(linked, d3["deal_id"])) == 1


def test_another_companys_statement_is_refused_and_nothing_is_stored(linked, tmp_path):
    day = today(linked)
    d0 = linked.deals[0]
    # another company's statement, even with a payment to our account in it
    path = write(tmp_path, "their.txt", statement_bytes(NOT_OURS, [
        Doc("1", day, "12000.00", f"Оплата по счету № {d0['number']}", our_account(linked),
            payer_account=NOT_OURS, payer_inn=d0["inn"])]))
    result = cli(linked, "--yes", str(path))
    assert result.exit_code == 1
    assert f"statement of account(s) {NOT_OURS}, none of which is this portal's" in result.output
    assert "nothing imported" in result.output and operations(linked) == 0


def test_bad_files_are_refused_with_their_line_and_nothing_is_stored(linked, tmp_path):
    acc, day = our_account(linked), today(linked)
    good = statement_bytes(acc, [Doc("1", day, "12000.00", "Оплата по счету № 1207", acc),
                                 Doc("2", day, "3000.00", "Оплата по счету № 1208", acc)])
    truncated = write(tmp_path, "truncated.txt", good[: good.rindex("КонецДокумента".encode("cp1251"))])
    result = cli(linked, "--yes", str(truncated))
    assert result.exit_code == 1
    assert "truncated.txt, line" in result.output and "no КонецДокумента" in result.output
    wrong = write(tmp_path, "dos.txt", statement_bytes(acc, [Doc("1", day, "1.00", "x", acc)], codec="cp866",
                                                        declared="Windows"))
    result = cli(linked, "--yes", str(wrong))
    assert result.exit_code == 1 and "line 3: the file says Кодировка=Windows" in result.output
    # over the configured maximum: refused before reading
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.write(good)
        fh.truncate(50 * 1024 * 1024)
    result = cli(linked, "--yes", str(big))
    assert result.exit_code == 1 and "big.txt is 50.0 MB; statement files up to 20.0 MB are accepted" in result.output
    small = CliRunner().invoke(main, ["import-statement", "--member-id", linked.member_id(), "--yes",
                                      str(write(tmp_path, "ok.txt", good))],
                               env=linked.worker_env() | {"B24APP_STATEMENT_MAX_BYTES": "1024"})
    assert small.exit_code == 1 and "ok.txt is 2 KB; statement files up to 1 KB" in small.output
    assert operations(linked) == 0
    unknown = CliRunner().invoke(main, ["import-statement", "--member-id", "nope", str(truncated)],
                                 env=linked.worker_env())
    assert unknown.exit_code == 1 and "no installed portal" in unknown.output


def test_on_a_terminal_it_asks_before_importing(linked, tmp_path):
    """Without --yes on a terminal: the preview, then a question; "n" stores nothing, "y" imports."""
    import os
    import pty
    import subprocess
    import sys
    import time

    acc, day = our_account(linked), today(linked)
    path = write(tmp_path, "ask.txt", statement_bytes(acc, [Doc("21", day, "3000.00", "Оплата по счету № 1208", acc)]))

    def run(answer: str) -> str:
        master, slave = pty.openpty()
        env = os.environ | linked.worker_env() | {"PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen([sys.executable, "-c", "from b24app.cli import main; main()", "import-statement",
                                 "--member-id", linked.member_id(), str(path)],
                                stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        out, deadline, answered = b"", time.monotonic() + 60, False
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not answered and b"new incoming payments? [y/N]" in out:
                os.write(master, answer.encode() + b"\n")
                answered = True
        proc.wait(timeout=60)
        os.close(master)
        assert proc.returncode == 0, out.decode(errors="replace")
        return out.decode(errors="replace")

    out = run("n")
    assert "1 incoming payments: 1 new (3000.00)" in out and operations(linked) == 0
    assert out.rstrip().splitlines()[-1].strip() == "not imported"
    out = run("y")
    assert "imported 1 new incoming payments" in out and operations(linked) == 1


def test_a_document_listed_twice_in_one_file_is_one_payment(linked, tmp_path):
    acc, day = our_account(linked), today(linked)
    doc = Doc("77", day, "3000.00", "Оплата по счету № 1208", acc, payer_inn=linked.deals[3]["inn"])
    twice = Doc("77", day, "3000.00", "Оплата по счету № 1208 ", acc, payer_inn=linked.deals[3]["inn"],
                split_purpose=True)  # the same payment, exported again with its purpose wrapped
    path = write(tmp_path, "twice.txt", statement_bytes(acc, [doc, twice]))
    result = cli(linked, "--yes", str(path))
    assert result.exit_code == 0, result.output
    assert "2 incoming payments: 1 new (3000.00), 1 already known" in result.output
    assert "imported 1 new incoming payments (1 already known)" in result.output and operations(linked) == 1


def test_an_import_waits_for_the_accounts_statement_sync_and_holds_it_off(linked, tmp_path, monkeypatch):
    """The import takes the account's sync lease, so the worker cannot store the same payment from the API
    between the import's lookup and its write; a sync in progress makes the import wait, then refuse."""
    from b24app.pipeline.statement_import import StatementImportError

    acc, day = our_account(linked), today(linked)
    d3 = linked.deals[3]
    path = write(tmp_path, "lease.txt", statement_bytes(acc, [Doc("5", day, "3000.00", "Оплата по счету 1208", acc,
                                                                  payer_inn=d3["inn"])]))
    now = linked.ctx.clock.now()
    with linked.ctx.db.session() as s:
        portal_id = s.scalar(select(Portal.id))
        account = s.scalar(select(BankAccount).where(BankAccount.account_number == acc))
        account.lease_owner, account.lease_until = "worker-1", now + timedelta(seconds=60)  # a sync is running
    try:
        import_statement(linked.ctx, portal_id, path, lease_wait=0.2)
        raise AssertionError("imported while the account's statement was being read")
    except StatementImportError as exc:
        assert "being read from the bank right now; nothing imported" in str(exc)
    assert operations(linked) == 0
    with linked.ctx.db.session() as s:
        account = s.scalar(select(BankAccount).where(BankAccount.account_number == acc))
        assert account.lease_owner == "worker-1"  # the worker's lease is left alone
        account.lease_until = now - timedelta(seconds=1)  # the sync ended (or its worker died)
    seen = []
    real = sync.store_operation

    def watching(s, row, op):  # observe, do not change: the lease is ours while the import stores
        seen.append(s.get(BankAccount, row.id).lease_owner)
        return real(s, row, op)

    monkeypatch.setattr("b24app.pipeline.statement_import.store_operation", watching)
    assert import_statement(linked.ctx, portal_id, path).new == 1
    assert len(seen) == 1 and seen[0].startswith("import:")
    with linked.ctx.db.session() as s:
        account = s.scalar(select(BankAccount).where(BankAccount.account_number == acc))
        assert (account.lease_owner, account.lease_until) == (None, None)  # released
    run_worker_until_idle(linked)
    assert item(linked, d3["invoice_id"])["stageId"] == "DT31_2:P"
