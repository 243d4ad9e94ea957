"""The 1C statement reader on its own: several banks' quirks read the same; every bad file is refused at its line."""
from __future__ import annotations

import io
import tracemalloc
from datetime import date
from decimal import Decimal

import pytest

from b24app.adapters.banks.onec import AccountSection, StatementDocument, StatementFile, StatementFileError
from onec_samples import Doc, statement_bytes

ACC = "40702810110000000001"


def docs():
    return [
        Doc("512", "14.01.2026", "12000.00", "Оплата по счету № 1207 от 12.01.2026, в т.ч. НДС", ACC),
        # a bank that writes only «Плательщик», leaves ДатаПоступило empty and splits the purpose
        Doc("77", "15.01.2026", "40000", "Оплата по сч. СЧ-00412 частично без НДС", ACC, credited="",
            name_style="plain", split_purpose=True, payer_inn="500100732259", payer_name="ИП Иванов И. И."),
        # outgoing
        Doc("9", "15.01.2026", "150,50", "Комиссия", "40702810900000000999", payer_account=ACC,
            payer_inn="7701234567", recipient_inn="7702070139"),
    ]


def read(data: bytes, **kw):
    reader = StatementFile(io.BytesIO(data), **kw)
    return reader, list(reader.items())


@pytest.mark.parametrize("codec,newline,bom,trailing", [
    ("cp1251", "\r\n", False, False),   # the common Windows export
    ("cp1251", "\n", False, True),      # LF and trailing spaces
    ("cp866", "\r\n", False, False),    # Кодировка=DOS
    ("utf-8", "\r\n", True, True),      # UTF-8 with a byte order mark
])
def test_banks_quirks_read_the_same(codec, newline, bom, trailing):
    data = statement_bytes(ACC, docs(), codec=codec, newline=newline, bom=bom, trailing_spaces=trailing)
    reader, items = read(data)
    assert reader.header.version == "1.03" and reader.header.encoding == codec
    assert reader.header.accounts == (ACC,) and reader.header.date_from == date(2026, 1, 1)
    assert reader.finished
    section, first, second, third = items
    assert isinstance(section, AccountSection) and section.account == ACC
    assert isinstance(first, StatementDocument)
    assert (first.number, first.doc_date, first.amount) == ("512", date(2026, 1, 14), Decimal("12000.00"))
    assert first.payer_name == 'ООО "Лютик"' and first.payer_inn == "7705123456"
    assert first.payer_account == "40702810938000012345" and first.recipient_account == ACC
    assert first.credited == date(2026, 1, 14) and first.debited == date(2026, 1, 14)
    assert first.purpose == "Оплата по счету № 1207 от 12.01.2026, в т.ч. НДС"
    assert first.kind == "Платежное поручение" and first.line == 21
    assert second.payer_name == "ИП Иванов И. И." and second.payer_inn == "500100732259"
    assert second.credited is None and second.amount == Decimal("40000.00")
    assert second.purpose == "Оплата по сч. СЧ-00412 частично без НДС"
    assert third.amount == Decimal("150.50") and third.payer_account == ACC


def test_plain_plательщик_with_inn_prefix_gives_the_name_alone():
    d = Doc("1", "14.01.2026", "1.00", "x", ACC, name_style="plain", payer_name="ИНН 7705123456 ООО «Лютик»")
    _, [_, doc] = read(statement_bytes(ACC, [d]))
    assert doc.payer_name == "ООО «Лютик»"


def test_a_purpose_broken_over_lines_is_one_purpose():
    data = statement_bytes(ACC, [Doc("1", "14.01.2026", "1.00", "Оплата по счету", ACC)])
    broken = "Оплата по счету\r\n№ 1207 от 12.01.2026\r\n"
    data = data.replace("Оплата по счету\r\n".encode("cp1251"), broken.encode("cp1251"))
    _, [_, doc] = read(data)
    assert doc.purpose == "Оплата по счету № 1207 от 12.01.2026"


def refused(data: bytes, **kw) -> StatementFileError:
    with pytest.raises(StatementFileError) as info:
        read(data, **kw)
    return info.value


def test_not_a_statement_file():
    err = refused("Дата;Сумма;Назначение\r\n01.01.2026;1;x\r\n".encode("cp1251"))
    assert err.line == 1 and "1CClientBankExchange" in str(err) and str(err).startswith("line 1:")
    assert "empty" in str(refused(b""))


def test_wrong_encoding_is_named_with_its_line():
    # a DOS (cp866) file that says Windows
    err = refused(statement_bytes(ACC, docs(), codec="cp866", declared="Windows"))
    assert err.line == 3 and "Кодировка=Windows" in str(err) and "cp866" in str(err)
    # UTF-8 without a byte order mark, saying Windows
    err = refused(statement_bytes(ACC, docs(), codec="utf-8"))
    assert err.line == 3 and "utf-8" in str(err)
    # an unknown Кодировка
    assert "not supported" in str(refused(statement_bytes(ACC, docs(), declared="KOI8")))


def test_wrong_bytes_after_a_correct_header_are_refused_at_their_line():
    good = statement_bytes(ACC, docs())
    # a document pasted in from a DOS file: its field names are not words in cp1251
    bad = good.replace("Номер=77".encode("cp1251"), "Номер=77".encode("cp866"))
    err = refused(bad)
    assert "encoding" in str(err) and err.line == good[:good.index("Номер=77".encode("cp1251"))].count(b"\n") + 1
    # a byte cp1251 does not have
    err = refused(good.replace("Комиссия".encode("cp1251"), b"\x98"))
    assert "not valid Windows (cp1251)" in str(err)


def test_truncated_file_is_refused():
    data = statement_bytes(ACC, docs())
    cut = data[: data.index("Сумма=40000".encode("cp1251"))]
    err = refused(cut)
    assert "no КонецДокумента" in str(err) and "truncated" in str(err)
    opened = cut.count(b"\n") - 2  # СекцияДокумент, Номер=77, Дата=… are the last whole lines
    assert f"opened at line {opened}" in str(err)
    # whole documents but no КонецФайла
    err = refused(data[: data.rindex("КонецФайла".encode("cp1251"))])
    assert "without КонецФайла" in str(err)


def test_document_without_its_end_is_refused_where_the_next_one_starts():
    data = statement_bytes(ACC, docs())
    lines = data.split(b"\r\n")
    first_end = lines.index("КонецДокумента".encode("cp1251"))
    del lines[first_end]
    err = refused(b"\r\n".join(lines))
    assert err.line == first_end + 1 and "opened at line 21 has no КонецДокумента" in str(err)


@pytest.mark.parametrize("old,new,needle", [
    ("Сумма=12000.00", "Сумма=12 000.00", "Сумма='12 000.00' is not an amount"),
    ("Сумма=12000.00", "Сумма=-5", "is not an amount"),
    ("Сумма=12000.00", "Сумма=0.00", "not a positive amount"),
    ("Дата=14.01.2026", "Дата=2026-01-14", "ДД.ММ.ГГГГ"),
    ("Дата=14.01.2026", "Дата=31.02.2026", "not a calendar date"),
    ("ВерсияФормата=1.03", "ВерсияФормата=2.00", "ВерсияФормата='2.00' is not supported"),
    ("ДатаНачала=01.01.2026", "ДатаНачала=1.1.26", "ДатаНачала='1.1.26' is not a date"),
    ("КонецРасчСчет", "КонецРасчСчет\r\nмусорная строка", "outside any section"),
])
def test_bad_values_are_refused_with_their_line(old, new, needle):
    good = statement_bytes(ACC, docs())
    at = good.index(old.encode("cp1251"))
    err = refused(good.replace(old.encode("cp1251"), new.encode("cp1251"), 1))
    assert needle in str(err)
    expected = good[:at].count(b"\n") + (2 if old == "КонецРасчСчет" else 1)
    assert err.line == expected


def test_a_field_twice_with_different_values_is_refused():
    err = refused(statement_bytes(ACC, [Doc("1", "14.01.2026", "1.00", "x", ACC, extra=["Сумма=2.00"])]))
    assert "Сумма appears twice" in str(err)


def test_size_limit_and_line_limit_bound_what_is_read():
    data = statement_bytes(ACC, docs() * 50)
    err = refused(data, max_bytes=4096)
    assert "larger than the allowed" in str(err)
    huge = statement_bytes(ACC, docs()).replace(b"\xca\xee\xec\xe8\xf1\xf1\xe8\xff", b"x" * 100_000)  # «Комиссия»
    assert "longer than 64 KB" in str(refused(huge))


@pytest.mark.slow  # a size/stress check: out of the fast tier, in `make test`
def test_a_large_file_is_read_in_bounded_memory(tmp_path):
    """~11 MB, 6 000 documents: the reader holds one line and one document at a time."""
    path = tmp_path / "big.txt"
    doc = statement_bytes(ACC, [Doc("1", "14.01.2026", "1.00", "Оплата по счету № 1207 " + "x" * 1500, ACC)])
    head, body = doc.split("СекцияДокумент".encode("cp1251"), 1)
    body = b"\xd1\xe5\xea\xf6\xe8\xff\xc4\xee\xea\xf3\xec\xe5\xed\xf2" + body  # «СекцияДокумент» in cp1251
    one, tail = body.rsplit("КонецФайла".encode("cp1251"), 1)
    with open(path, "wb") as fh:
        fh.write(head)
        for _ in range(6_000):
            fh.write(one)
        fh.write("КонецФайла".encode("cp1251") + tail)
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    try:
        with open(path, "rb") as fh:
            count = sum(isinstance(i, StatementDocument) for i in StatementFile(fh).items())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 6_000
    assert peak < 2_000_000, peak


def test_one_payment_has_one_content_key_in_the_api_and_in_a_file():
    """T-Bank's JSON and a 1C document of the same payment agree on content_key, whatever the purpose's wrapping."""
    from b24app.adapters.banks.operations import parse_operation
    from b24app.storage.models import BankAccount
    from b24app.pipeline.statement_import import to_operation

    api = parse_operation({
        "operationId": "b7c1", "accountNumber": ACC, "operationDate": "2026-01-14T09:12:00Z",
        "docDate": "2026-01-13T21:00:00Z", "typeOfOperation": "Credit", "operationStatus": "Transaction",
        "accountAmount": 12000, "accountCurrencyDigitalCode": "643", "documentNumber": "512",
        "payPurpose": "Оплата по счету № 1207 от 12.01.2026, в т.ч. НДС.",
        "payer": {"name": "ООО «Лютик»", "inn": "7705123456", "acct": "40702810938000012345"}})
    account = BankAccount(account_number=ACC, currency="RUB")
    doc = Doc("0000512", "14.01.2026", "12000.00", "Оплата по счету № 1207 от 12.01.2026, в т.ч. НДС", ACC,
              split_purpose=True)
    _, [_, parsed] = read(statement_bytes(ACC, [doc]))
    file_op = to_operation(parsed, account)
    assert file_op.content_key == api.content_key is not None
    assert file_op.fingerprint != api.fingerprint  # the per-source identity is untouched
    assert file_op.operation_id == f"1c:{file_op.content_key}" and file_op.source == "1c" and api.source == "tbank"
    # one field different: another payment
    other = to_operation(read(statement_bytes(ACC, [Doc("513", "14.01.2026", "12000.00", "x", ACC)]))[1][1],
                         account)
    assert other.content_key != api.content_key
    # no document number: nothing proves two records are one payment; the file's own id then needs the purpose
    a, b = (to_operation(read(statement_bytes(ACC, [Doc("", "14.01.2026", "1.00", p, ACC)]))[1][1], account)
            for p in ("Оплата 1", "Оплата 2"))
    assert a.content_key is None and b.content_key is None and a.operation_id != b.operation_id


def test_accounts_with_spaces_and_a_zero_inn_are_read_as_meant():
    d = Doc("1", "14.01.2026", "1.00", "x", ACC, payer_account="4070 2810 9380 0001 2345", payer_inn="0")
    bank = "ПлательщикБанк1=".encode("cp1251")
    _, [_, doc] = read(statement_bytes(ACC, [d]).replace(bank, bank + b"  "))  # a space after "=", as some banks
    assert doc.payer_account == "40702810938000012345" and doc.payer_inn == ""
    assert doc.fields["ПлательщикБанк1"] == "ПАО СБЕРБАНК"


def test_a_statement_without_documents_is_read():
    reader, items = read(statement_bytes(ACC, [], sections=False))
    assert items == [] and reader.finished and reader.header.accounts == (ACC,)
