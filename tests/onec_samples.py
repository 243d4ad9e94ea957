"""Real-shaped 1CClientBankExchange files, written from the format description (docs/banks/1c-files.md).

Quirks seen in different banks' exports are switchable: CRLF or LF, trailing spaces, `Плательщик1` or only
`Плательщик` («ИНН … name»), empty `ДатаПоступило`, purpose split over `НазначениеПлатежа1..n`, cp1251/cp866/UTF-8.
"""
from __future__ import annotations

from dataclasses import dataclass, field

OUR_INN = "7701234567"
PAYER_ACCOUNT = "40702810938000012345"  # the bank sandbox's default payer (ООО «Лютик», 7705123456)


@dataclass
class Doc:
    number: str
    date: str                 # ДД.ММ.ГГГГ
    amount: str
    purpose: str
    recipient_account: str
    payer_account: str = PAYER_ACCOUNT
    payer_inn: str = "7705123456"
    payer_name: str = "ООО \"Лютик\""
    recipient_inn: str = OUR_INN
    recipient_name: str = "ООО \"Демо\""
    credited: str | None = None      # ДатаПоступило; None = same as date, "" = present but empty
    debited: str | None = None
    name_style: str = "1"            # "1": Плательщик1 + Плательщик «ИНН … name»; "plain": only Плательщик
    split_purpose: bool = False      # НазначениеПлатежа empty, the text in НазначениеПлатежа1..n
    kind: str = "Платежное поручение"
    extra: list[str] = field(default_factory=list)


def document_lines(d: Doc) -> list[str]:
    lines = [f"СекцияДокумент={d.kind}", f"Номер={d.number}", f"Дата={d.date}", f"Сумма={d.amount}",
             f"ПлательщикСчет={d.payer_account}", f"ДатаСписано={d.debited if d.debited is not None else d.date}"]
    if d.name_style == "1":
        lines += [f"Плательщик=ИНН {d.payer_inn} {d.payer_name}", f"ПлательщикИНН={d.payer_inn}",
                  f"Плательщик1={d.payer_name}"]
    else:
        lines += [f"Плательщик={d.payer_name}", f"ПлательщикИНН={d.payer_inn}"]
    lines += ["ПлательщикКПП=770501001", f"ПлательщикРасчСчет={d.payer_account}", "ПлательщикБанк1=ПАО СБЕРБАНК",
              "ПлательщикБИК=044525225", "ПлательщикКорсчет=30101810400000000225",
              f"ПолучательСчет={d.recipient_account}",
              f"ДатаПоступило={d.credited if d.credited is not None else d.date}",
              f"Получатель=ИНН {d.recipient_inn} {d.recipient_name}", f"ПолучательИНН={d.recipient_inn}",
              f"Получатель1={d.recipient_name}", "ПолучательКПП=770101001",
              f"ПолучательРасчСчет={d.recipient_account}", "ПолучательБанк1=АО \"ТБанк\"",
              "ПолучательБИК=044525974", "ПолучательКорсчет=30101810145250000974",
              "ВидОплаты=01", "Код=0", "СтатусСоставителя=", "ПоказательКБК=", "ОКАТО=", "Очередность=5"]
    if d.split_purpose:
        words = d.purpose.split(" ")
        half = max(1, len(words) // 2)
        lines += ["НазначениеПлатежа=", f"НазначениеПлатежа1={' '.join(words[:half])}",
                  f"НазначениеПлатежа2={' '.join(words[half:])}"]
    else:
        lines.append(f"НазначениеПлатежа={d.purpose}")
    return lines + d.extra + ["КонецДокумента"]


def statement_text(account: str, docs: list[Doc], *, declared: str = "Windows", date_from: str = "01.01.2026",
                   date_to: str = "31.12.2026", trailing_spaces: bool = False, version: str = "1.03",
                   sections: bool = True) -> str:
    lines = ["1CClientBankExchange", f"ВерсияФормата={version}", f"Кодировка={declared}",
             "Отправитель=Бухгалтерия предприятия, редакция 3.0", "Получатель=", "ДатаСоздания=15.01.2026",
             "ВремяСоздания=10:11:12", f"ДатаНачала={date_from}", f"ДатаКонца={date_to}", f"РасчСчет={account}",
             "Документ=Платежное поручение"]
    if sections:
        lines += ["СекцияРасчСчет", f"ДатаНачала={date_from}", f"ДатаКонца={date_to}", f"РасчСчет={account}",
                  "НачальныйОстаток=1000.00", "ВсегоПоступило=0.00", "ВсегоСписано=0.00", "КонечныйОстаток=1000.00",
                  "КонецРасчСчет"]
    for d in docs:
        lines += document_lines(d)
    lines.append("КонецФайла")
    if trailing_spaces:
        lines = [line + "  " for line in lines]
    return "\n".join(lines) + "\n"


def statement_bytes(account: str, docs: list[Doc], *, codec: str = "cp1251", newline: str = "\r\n",
                    bom: bool = False, **kw) -> bytes:
    declared = kw.pop("declared", "DOS" if codec == "cp866" else "Windows")
    text = statement_text(account, docs, declared=declared, **kw).replace("\n", newline)
    if codec == "cp866":  # DOS code page 866 has no «»: DOS-era exports write plain quotes
        text = text.replace("«", '"').replace("»", '"')
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode(codec)
