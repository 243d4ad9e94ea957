"""Texts the app sends into Bitrix24 (chat, timeline, tasks), in the portal's language."""
from __future__ import annotations

from b24app.domain.formatting import language, visible_text
from .effects import Notify
from b24app.storage.models import BankLink, Portal
from .queue import enqueue

T = {
    "paid": {"ru": "Счёт {number} оплачен: {amount} от {payer}.",
             "en": "Invoice {number} is paid: {amount} from {payer}."},
    "underpaid": {"ru": "По счёту {number} поступило {received} из {due}. Осталось оплатить {remaining}. Плательщик: {payer}.",
                  "en": "Invoice {number} received {received} of {due}. Still to pay: {remaining}. Payer: {payer}."},
    "overpaid": {"ru": "По счёту {number} поступило {received} при сумме к оплате {due}: переплата {excess}. Проверьте в очереди разбора.",
                 "en": "Invoice {number} received {received} against {due} due: overpaid by {excess}. Please check the review queue."},
    "review": {"ru": "Поступил платёж {amount} от {payer}, который не удалось однозначно сопоставить (возможно, счёт {numbers}). Разберите его в приложении «Оплаты Т-Банка».",
               "en": "A payment of {amount} from {payer} could not be matched with certainty (maybe invoice {numbers}). Please review it in the T-Bank payments app."},
    "review_double": {"ru": "Поступил платёж {amount} от {payer}: {why}. Другие счета не предлагаются: разберите платёж в приложении «Оплаты Т-Банка» (вернуть плательщику, оставить авансом клиента или зачесть сверх оплаты).",
                      "en": "A payment of {amount} from {payer} arrived: {why}. No other invoice is proposed: please review it in the T-Bank payments app (refund it, keep it as the client's credit, or apply it over the paid amount)."},
    "refund": {"ru": "Платёж {amount} от {payer} от {date} нужно вернуть плательщику (решил пользователь {user}). Причина: {reason}",
               "en": "The payment of {amount} from {payer} of {date} is to be refunded to the payer (decided by user {user}). Reason: {reason}"},
    "timeline_paid": {"ru": "Оплата по счёту {number}: {amount} от {payer}, {date}.\nНазначение платежа: {purpose}",
                      "en": "Payment for invoice {number}: {amount} from {payer}, {date}.\nPayment purpose: {purpose}"},
    "timeline_underpaid": {"ru": "Частичная оплата по счёту {number}: {amount} от {payer}, {date}. Осталось {remaining}.\nНазначение платежа: {purpose}",
                           "en": "Partial payment for invoice {number}: {amount} from {payer}, {date}. Remaining: {remaining}.\nPayment purpose: {purpose}"},
    "record_paid": {"ru": "Счёт {number}: оплата {amount} ({payer}), счёт оплачен полностью.",
                    "en": "Invoice {number}: payment of {amount} ({payer}); the invoice is paid in full."},
    "record_partly": {"ru": "Счёт {number}: оплата {amount} ({payer}), оплачено {received} из {due}, осталось {remaining}.",
                      "en": "Invoice {number}: payment of {amount} ({payer}); {received} of {due} paid, {remaining} remaining."},
    "record_credit": {"ru": "Счёт {number}: зачтён аванс клиента (ИНН {inn}) {amount}, осталось {remaining}.",
                      "en": "Invoice {number}: the client's credit (INN {inn}) of {amount} applied, {remaining} remaining."},
    "timeline_undo": {"ru": "Платёж {amount} от {payer} отвязан от счёта {number} (пользователь {user}).",
                      "en": "Payment {amount} from {payer} was unlinked from invoice {number} (user {user})."},
    "task_title": {"ru": "Доплата по счёту {number}: осталось {remaining}",
                   "en": "Invoice {number} is underpaid: {remaining} remaining"},
    "overpaid_credit": {"ru": "Переплата {excess} по счёту {number} сохранена как аванс клиента (ИНН {inn}): поступило {received} при сумме к оплате {due}.",
                        "en": "The surplus of {excess} on invoice {number} is kept as the client's credit (INN {inn}): received {received} against {due} due."},
    "credit_applied": {"ru": "Аванс клиента (ИНН {inn}) зачтён в счёт {number}: {amount}. Осталось оплатить {remaining}; остаток аванса {balance}.",
                       "en": "The client's credit (INN {inn}) was applied to invoice {number}: {amount}. Still to pay: {remaining}; credit left: {balance}."},
    "timeline_credit": {"ru": "Зачтён аванс клиента (ИНН {inn}) по счёту {number}: {amount}. Осталось {remaining}.",
                        "en": "The client's credit (INN {inn}) applied to invoice {number}: {amount}. Remaining: {remaining}."},
    "needs_consent": {"ru": "Т-Банк больше не даёт доступ к выписке компании с ИНН {inn}. Откройте приложение «Оплаты Т-Банка» и подключите банк заново (вход по номеру телефона и коду из СМС).",
                      "en": "T-Bank no longer grants access to the statement of the company with INN {inn}. Open the T-Bank payments app and link the bank again (phone number and SMS code)."},
}


def text(key: str, lang: str, **kw) -> str:
    """A text for Bitrix24 with every inserted value made inert: the templates are ours, the values are not
    (invoice numbers and titles come from the CRM, payer names and purposes from the payer), and chat,
    timeline and tasks render BB-code, so `[URL=...]` in an invoice number would become a live link."""
    return T[key][language(lang)].format(**{k: bbcode_escape(v) if k in FOREIGN else _no_brackets(str(v))
                                            for k, v in kw.items()})


# Values written by others (the CRM's users, the payer): made visible and inert. The rest are ours (money and
# dates we formatted, user ids) and keep their spacing; brackets are still taken out of them, as a backstop.
FOREIGN = {"number", "numbers", "payer", "purpose", "title", "inn"}


def _no_brackets(value: str) -> str:
    return value.replace("[", "(").replace("]", ")")


def bbcode_escape(value: str) -> str:
    """Text we did not write made inert for Bitrix24: controls and bidi overrides shown as `\\uXXXX`
    (no text spoofing), and BB-code brackets replaced by parentheses (chat, timeline and tasks render BB-code).

    Bitrix24's REST docs list the BB-codes a message may carry (im.notify.system.add: MESSAGE "supports
    BB-codes", api-reference/chats/notifications/) but say nothing about escaping one so it shows literally:
    no escape sequence is documented, nor that an HTML entity such as `&#91;` is decoded back. So no
    `[` or `]` from such a value reaches Bitrix24 at all; parentheses keep it readable. Idempotent."""
    return _no_brackets(visible_text(value))


def notify_needs_consent(ctx, portal_id: int, link_id: int) -> None:
    with ctx.db.session() as s:
        portal = s.get(Portal, portal_id)
        link = s.get(BankLink, link_id)
        if portal is None or link is None or not portal.installed_by:
            return
        enqueue(s, portal_id, f"consent:{link_id}:{link.token_generation}",
                Notify(portal.installed_by, text("needs_consent", portal.lang, inn=link.inn)), now=ctx.clock.now())
        portal.work_due_at = ctx.clock.now()

