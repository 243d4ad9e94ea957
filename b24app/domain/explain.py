"""Render the machine reasons of a match decision as sentences a manager can read (ru / en): the one table of
reason texts, used by the deal tab, the admin page and the messages sent to Bitrix24."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from .formatting import format_money, language
from .matching import MatchDecision, Reason

__all__ = ["explain", "explain_reason", "explain_reasons"]

# Money-valued params, formatted with the reason's "currency".
_MONEY_PARAMS = ("amount", "due", "difference", "excess", "invoice_amount", "total_due", "remaining", "left")
# Clauses that continue the previous sentence after "; " instead of starting a new one.
_CONTINUATIONS = frozenset(
    {"amount_equals_due", "amount_less_than_due", "amount_exceeds_due", "inn_match"}
)

_TEMPLATES: dict[str, dict[str, str]] = {
    "ru": {
        "number_found": "номер «{number}» из назначения платежа совпал со счётом {invoice}",
        "number_tail_match": "номер «{number}» из назначения платежа совпал только с окончанием номера счёта {invoice}",
        "number_ambiguous": "номер «{number}» подходит сразу к нескольким счетам ({count}): {invoices}",
        "number_not_found": "номер «{number}» из назначения платежа не найден среди открытых счетов",
        "currency_mismatch": "счёт {invoice} выставлен в {invoice_currency}, а платёж пришёл в {payment_currency}, поэтому счёт не рассматривается",
        "other_company": "счёт {invoice} выставлен от другой нашей компании и не рассматривается",
        "amount_equals_due": "сумма {amount} равна остатку по счёту {due}",
        "amount_less_than_due": "сумма {amount} меньше остатка по счёту {due}, не хватает {difference}",
        "amount_exceeds_due": "сумма {amount} больше остатка по счёту {due}, переплата {difference}",
        "multi_allocation/equal": "платёж {amount} распределён по {count} счетам в порядке упоминания и равен их общему остатку {total_due}",
        "multi_allocation/less": "платёж {amount} распределён по {count} счетам в порядке упоминания; общий остаток {total_due}, не хватает {difference}",
        "multi_allocation/more": "платёж {amount} распределён по {count} счетам в порядке упоминания; общий остаток {total_due}, переплата {difference}",
        "not_covered": "на счёт {invoice} денег из этого платежа не осталось",
        "already_paid": "счёт {invoice} уже оплачен — вероятно, повторная оплата",
        "overpaid_large": "переплата {excess} больше суммы счёта {invoice} ({invoice_amount}), нужна проверка",
        "inn_match": "ИНН плательщика {inn} совпал с ИНН клиента по счёту",
        "inn_mismatch": "ИНН плательщика {payment_inn} не совпадает с ИНН клиента по счёту {invoice} ({invoice_inn}), нужна проверка",
        "tail_match_needs_review": "совпадение только по окончанию номера ({numbers}) требует проверки",
        "unresolved_numbers": "не все номера из назначения найдены ({numbers}), а сумма не равна остатку по найденным счетам",
        "no_number": "в назначении платежа нет номера счёта",
        "manual_assignment": "платёж {amount} вручную отнесён к счёту {invoice} ({user})",
        "manual_assignment/short": "платёж вручную отнесён к счёту {invoice} ({user})",
        "undone": "сопоставление отменил(а) {user}",
        "reopened": "закрытие отменил(а) {user}, платёж снова ждёт разбора",
        "closed_ignored": "не оплата счёта ({user}): {reason}",
        "closed_refund": "вернуть плательщику ({user}); менеджеру сообщено в чат",
        "closed_credit": "оставлен авансом клиента с ИНН {inn} ({user})",
        "not_reverted": "уже отправлено и не отменено: {what}",
        "user": "пользователь {user_id}",
        "amount_only_hint": "сумма {amount} совпадает с остатком единственного открытого счёта {invoice}",
        "inn_hint": "у плательщика с ИНН {inn} есть открытые счета: {count}",
        "inn_and_amount_hint": "у плательщика с ИНН {inn} есть открытые счета с остатком {amount}: {count}",
        "nothing_found": "подходящих открытых счетов не найдено",
        "own_transfer": "плательщик с ИНН {inn} — наша собственная компания: это перевод между своими счетами, он не сопоставляется",
        "ignored_category": "банк отнёс операцию к категории «{category}», которая по правилам не сопоставляется со счетами",
        "inn_amount_unique": "по ИНН плательщика {inn} найден единственный открытый счёт с остатком, равным сумме {amount}: {invoice} (совпали ИНН и сумма)",
        "inn_amount_combination": "по ИНН плательщика {inn} сумма {amount} в точности равна общему остатку {count} открытых счетов ({invoices}), и другого такого набора нет (совпали ИНН и сумма набора счетов)",
        "inn_combination_unconfirmed": "по ИНН плательщика {inn} сумма {amount} равна общему остатку счетов {invoices}, но единственность набора не проверена, нужна проверка",
        "inn_combinations_ambiguous": "у плательщика с ИНН {inn} сумму {amount} дают несколько разных наборов открытых счетов, нужно выбрать",
        "inn_candidates_capped": "у плательщика с ИНН {inn} открытых счетов {count}; наборы искались только среди {cap} самых старых",
        "combination_search_bounded": "поиск набора счетов остановлен на пределе {budget} шагов",
        "applied_medium": "совпадение средней уверенности применено автоматически по правилам",
        "accepted_proposal": "пользователь {user_id} принял предложение приложения",
        "credit_surplus": "переплата сохранена как аванс клиента",
        "credit_kept": "платёж сохранён как аванс клиента",
        "credit_applied": "аванс клиента с ИНН {inn} зачтён в счёт {invoice} автоматически, по правилам: {amount}; осталось оплатить {remaining}, остаток аванса {left}",
        "credit_applied_by": "пользователь {user_id} зачёл аванс клиента с ИНН {inn} в счёт {invoice}: {amount}; осталось оплатить {remaining}, остаток аванса {left}",
        "credit_undone": "пользователь {user_id} отменил зачёт аванса",
    },
    "en": {
        "number_found": "number «{number}» in the payment purpose matches invoice {invoice}",
        "number_tail_match": "number «{number}» in the payment purpose matches only the end of invoice number {invoice}",
        "number_ambiguous": "number «{number}» fits several invoices ({count}): {invoices}",
        "number_not_found": "number «{number}» in the payment purpose is not among the open invoices",
        "currency_mismatch": "invoice {invoice} is in {invoice_currency} but the payment is in {payment_currency}, so it is not considered",
        "other_company": "invoice {invoice} belongs to another of our companies and is not considered",
        "amount_equals_due": "amount {amount} equals the amount due {due}",
        "amount_less_than_due": "amount {amount} is less than the amount due {due}, short by {difference}",
        "amount_exceeds_due": "amount {amount} exceeds the amount due {due}, overpaid by {difference}",
        "multi_allocation/equal": "payment {amount} is split over {count} invoices in the order they are mentioned and equals their total due {total_due}",
        "multi_allocation/less": "payment {amount} is split over {count} invoices in the order they are mentioned; total due {total_due}, short by {difference}",
        "multi_allocation/more": "payment {amount} is split over {count} invoices in the order they are mentioned; total due {total_due}, overpaid by {difference}",
        "not_covered": "nothing of this payment is left for invoice {invoice}",
        "already_paid": "invoice {invoice} is already paid — a likely double payment",
        "overpaid_large": "the surplus {excess} exceeds the amount of invoice {invoice} ({invoice_amount}), please review",
        "inn_match": "the payer's INN {inn} matches the invoice's client",
        "inn_mismatch": "the payer's INN {payment_inn} differs from the INN of the client of invoice {invoice} ({invoice_inn}), please review",
        "tail_match_needs_review": "a match on the end of the number only ({numbers}) needs review",
        "unresolved_numbers": "not every number in the purpose was found ({numbers}) and the amount differs from what is due on the invoices found",
        "no_number": "the payment purpose has no invoice number",
        "manual_assignment": "payment {amount} assigned to invoice {invoice} by hand ({user})",
        "manual_assignment/short": "payment assigned to invoice {invoice} by hand ({user})",
        "undone": "the match was undone by {user}",
        "reopened": "the closing was undone by {user}; the payment waits for review again",
        "closed_ignored": "not an invoice payment ({user}): {reason}",
        "closed_refund": "to be refunded to the payer ({user}); the manager was told in chat",
        "closed_credit": "kept as the credit of the client with INN {inn} ({user})",
        "not_reverted": "already sent and not taken back: {what}",
        "user": "user {user_id}",
        "amount_only_hint": "amount {amount} equals what is due on exactly one open invoice, {invoice}",
        "inn_hint": "the payer with INN {inn} has open invoices: {count}",
        "inn_and_amount_hint": "the payer with INN {inn} has open invoices with {amount} due: {count}",
        "nothing_found": "no suitable open invoice was found",
        "own_transfer": "the payer with INN {inn} is one of our own companies: a transfer between our own accounts, not matched",
        "ignored_category": "the bank put this operation in category «{category}», which the rules never match to invoices",
        "inn_amount_unique": "the payer's INN {inn} leads to exactly one open invoice whose amount due equals {amount}: {invoice} (INN and amount matched)",
        "inn_amount_combination": "by the payer's INN {inn}, {amount} equals exactly what is due on {count} open invoices ({invoices}), and no other set does (INN and the sum of a set of invoices matched)",
        "inn_combination_unconfirmed": "by the payer's INN {inn}, {amount} equals what is due on invoices {invoices}, but that no other set does was not checked, please review",
        "inn_combinations_ambiguous": "for the payer with INN {inn}, several different sets of open invoices add up to {amount}: please choose",
        "inn_candidates_capped": "the payer with INN {inn} has {count} open invoices; sets were searched among the {cap} oldest only",
        "combination_search_bounded": "the search for a set of invoices stopped at its limit of {budget} steps",
        "applied_medium": "a medium-confidence match applied automatically, as the rules say",
        "accepted_proposal": "user {user_id} accepted the app's proposal",
        "credit_surplus": "the surplus is kept as the client's credit",
        "credit_kept": "the payment is kept as the client's credit",
        "credit_applied": "the credit of the client with INN {inn} was applied to invoice {invoice} automatically, as the rules say: {amount}; still to pay {remaining}, credit left {left}",
        "credit_applied_by": "user {user_id} applied the credit of the client with INN {inn} to invoice {invoice}: {amount}; still to pay {remaining}, credit left {left}",
        "credit_undone": "user {user_id} undid the application of the credit",
    },
}

# What an undo could not take back (outbox kinds), named in the "not_reverted" clause.
_KINDS: dict[str, dict[str, str]] = {
    "ru": {"notify": "сообщение в чат", "timeline": "комментарий в ленте сделки", "task": "задача",
           "trigger": "триггер автоматизации"},
    "en": {"notify": "the chat message", "timeline": "the deal timeline comment", "task": "the task",
           "trigger": "the automation trigger"},
}
# Reasons a person caused: they name the person ({user}), by name where the caller knows it.
_PEOPLE_CODES = ("manual_assignment", "undone", "reopened", "closed_ignored", "closed_refund", "closed_credit")


def _value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def explain_reason(reason: Reason, lang: str = "ru") -> str:
    """One reason as a clause (lower-case start, no final period)."""
    lang = language(lang)
    params = dict(reason.params)
    key = reason.code
    if key in _PEOPLE_CODES:
        return _people_clause(key, params, lang, str(params.get("currency") or "RUB"), None)
    if key == "multi_allocation":
        key = f"{key}/{params.get('comparison', 'equal')}"
    template = _TEMPLATES[lang].get(key)
    if template is None:
        details = ", ".join(f"{k}={_value(v)}" for k, v in sorted(params.items()))
        return f"{reason.code} ({details})" if details else reason.code
    currency = str(params.get("currency", ""))
    values = {}
    for name, value in params.items():
        if name in _MONEY_PARAMS and currency:
            values[name] = format_money(value, currency, lang)
        else:
            values[name] = _value(value)
    try:
        return template.format(**values)
    except KeyError:  # a reason built without every param its template names
        return reason.code


def explain(decision: MatchDecision, lang: str = "ru") -> str:
    """All reasons of a decision as sentences; amount and INN clauses join the sentence before them."""
    sentences: list[str] = []
    for reason in decision.reasons:
        clause = explain_reason(reason, lang)
        if reason.code in _CONTINUATIONS and sentences:
            sentences[-1] += "; " + clause
        else:
            sentences.append(clause)
    return " ".join(s[:1].upper() + s[1:] + "." for s in sentences)


def _people_clause(code: str, params: dict, lang: str, currency: str, names: dict[str, str] | None) -> str:
    """A reason a person caused, with the person by name where `names` ({"id": "Name Last"}) knows them."""
    values = {k: str(v) for k, v in params.items()}
    values.setdefault("reason", "—")
    values.setdefault("inn", "—")
    values["user"] = (names or {}).get(values.get("user_id", "")) or \
        _TEMPLATES[lang]["user"].format(user_id=values.get("user_id", "?"))
    if "amount" in params:
        try:
            values["amount"] = format_money(Decimal(str(params["amount"])), currency, lang)
        except ArithmeticError:
            pass
    key = code if code != "manual_assignment" or "amount" in values else "manual_assignment/short"
    try:
        text = _TEMPLATES[lang][key].format(**values)
    except KeyError:
        text = code
    kinds = params.get("not_reverted") if code in ("undone", "reopened") else None
    if kinds and isinstance(kinds, list):
        kind_names = _KINDS[lang]
        text += "; " + _TEMPLATES[lang]["not_reverted"].format(
            what=", ".join(kind_names.get(str(k), str(k)) for k in kinds))
    return text


def explain_reasons(reasons: Iterable[Any], lang: str, currency: str = "RUB",
                    names: dict[str, str] | None = None) -> list[str]:
    """Stored reasons (`{"code", "params"}`) as sentences in the user's language, one per reason; people by
    name where `names` ({"id": "Name Last"}) knows them."""
    lang = language(lang)
    out: list[str] = []
    for raw in reasons or ():
        if isinstance(raw, str):
            text = raw
        elif isinstance(raw, dict) and isinstance(raw.get("code"), str):
            params = raw.get("params") if isinstance(raw.get("params"), dict) else {}
            code = raw["code"]
            if code in _PEOPLE_CODES:
                text = _people_clause(code, params, lang, currency, names)
            else:
                try:
                    text = explain_reason(Reason(code, dict(params)), lang)
                except (ArithmeticError, ValueError, TypeError):
                    text = code
        else:
            continue
        text = text.strip()
        if text:
            out.append(text[:1].upper() + text[1:])
    return out
