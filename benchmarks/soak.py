"""Soak under faults: thousands of payments across several portals and accounts, both sandboxes injecting
faults at realistic rates, the worker (a separate OS process) killed with SIGKILL at random moments and
restarted. Afterwards every payment that should be applied is applied exactly once, no notification or
timeline comment is duplicated, no invoice changed that should not have, and the review queue holds exactly
the ambiguous payments.

    python -m benchmarks.soak                     # 2,000 payments, 4 portals (a few minutes)
    python -m benchmarks.soak --payments 300 --portals 2 --seconds 20
    python -m benchmarks.soak --banks tbank,tochka --files    # both live banks, and 1C files on top

With `--banks tbank,tochka` every portal links both banks and each payment lands in one of them (Tochka's
sandbox faults too: 429s, 5xx outages, dropped and doubled webhooks); with `--files` some of the same payments
are also imported from 1C statement files (`statement_import`, as `b24app import-statement` does) at random
moments: before, during and after the API delivers them, files overlapping each other, some imported twice.
A payment seen through the API and in a file must still be one payment.

`tests/test_faults_soak.py` runs a short version of the same engine in `make test`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import httpx

# Fault probabilities per request, at the rates a busy portal and a busy bank API show on a bad day. A portal
# rename (its old address answers 302 to the new one) is rare in life; here it stands for that day.
PORTAL_FAULTS = {"query_limit": 0.03, "operation_time_limit": 0.01, "server_error": 0.02, "expired_token": 0.02,
                 "slow": 0.02, "timeout": 0.005, "rename": 0.005}
BANK_FAULTS = {"rate_limit": 0.03, "server_error": 0.02, "timeout": 0.005, "duplicate_webhook": 0.05,
               "reidentify": 0.003, "authorization_first": 0.05, "shuffle_pages": 0.1}
# Tochka's sandbox faults per chance (names of its /sandbox/faults): 429s and 5xx on any Open API call, a failed
# Init Statement, webhooks dropped (polling must catch the payment) or delivered twice.
TOCHKA_FAULTS = {"api_429": 0.03, "api_500": 0.02, "statement_500": 0.02, "webhook_drop": 0.05,
                 "webhook_duplicate": 0.05}
BANKS = ("tbank", "tochka")
OPEN_STAGE, PAID_STAGE = "DT31_2:N", "DT31_2:P"
QUEUE_STATES = ("review", "unmatched", "overpaid")
WORKER_SCRIPT = """
import sys
from b24app.cli import main
sys.exit(main(["worker"]))
"""  # B24APP_LEASE_SECONDS (short in the soak) governs account, portal and outbox leases alike
PURPOSES = ("Оплата по счету № {n} от 14.01.2026", "Оплата по сч. {n}", "Payment for invoice {n}",
            "Оплата по счету {n}, НДС не облагается")


@dataclass(frozen=True)
class SoakConfig:
    payments: int = 2000
    portals: int = 4
    seconds: float = 90.0          # how long payments keep arriving (kills happen meanwhile)
    kill_every: tuple[float, float] = (2.0, 6.0)
    lease_seconds: int = 10        # leases of a killed worker expire this fast (production: 120 s)
    settle_timeout: float = 240.0  # after the faults stop, how long the worker may take to finish
    seed: int = 7
    data_dir: str | None = None
    database_url: str | None = None
    portal_faults: dict = field(default_factory=lambda: dict(PORTAL_FAULTS))
    bank_faults: dict = field(default_factory=lambda: dict(BANK_FAULTS))
    worker_concurrency: int = 4
    banks: tuple[str, ...] = ("tbank",)   # live banks each portal links; a payment lands in one of them
    files: bool = False                   # also deliver some of the payments in 1C statement files
    file_share: float = 0.4               # about this share of the payments is also in a file
    file_early: float = 0.25              # share of files imported before or while the API delivers theirs
    tochka_faults: dict = field(default_factory=lambda: dict(TOCHKA_FAULTS))

    @property
    def mixed(self) -> bool:
        return self.files or tuple(self.banks) != ("tbank",)


@dataclass
class Payment:
    portal: int
    kind: str              # exact | partial | review | unmatched
    invoice: int | None    # index into the portal's invoices
    amount: Decimal
    purpose: str
    inn: str
    doc: str               # documentNumber: our handle on the payment
    bank: str = "tbank"    # the mixed soak's fields: which bank, which account, from which payer account
    account: str = ""
    payer_account: str = ""


@dataclass
class PortalPlan:
    code: str
    stack: object
    inn: str
    kpp: str
    phone: str
    clients: list[tuple[str, str]]
    invoices: list[dict] = field(default_factory=list)   # number, amount, client, user, kind, deal_id, invoice_id
    accounts: list[str] = field(default_factory=list)
    member_id: str = ""
    portal_id: int = 0
    bank_accounts: dict = field(default_factory=dict)   # mixed soak: bank -> [account number]
    tochka_ids: dict = field(default_factory=dict)      # Tochka account number -> accountId ("number/BIC")


@dataclass
class SoakReport:
    payments: int = 0
    portals: int = 0
    accounts: int = 0
    kills: int = 0
    worker_starts: int = 0
    portal_faults: dict = field(default_factory=dict)
    bank_faults: dict = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0
    wrongly_changed: int = 0
    review_expected: int = 0
    review_actual: int = 0
    review_mismatch: int = 0
    triggers_not_refired: int = 0
    records: int = 0                                  # paid payment records on the deals (#15)
    by_bank: dict = field(default_factory=dict)       # mixed soak: payments per bank
    tochka_faults: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)         # files, imports, reimports, deferred, documents, new, known
    first_source: dict = field(default_factory=dict)  # the source each payment was stored from first
    seconds_total: float = 0.0
    seconds_to_settle: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.wrongly_changed or self.review_mismatch
                    or self.files.get("failed"))

    def render(self) -> str:
        lines = [
            f"payments            {self.payments}  ({self.portals} portals, {self.accounts} accounts)",
            f"worker kills        {self.kills}  (SIGKILL; {self.worker_starts} starts)",
            "portal faults       " + ", ".join(f"{k} {v}" for k, v in sorted(self.portal_faults.items())),
            "bank faults         " + ", ".join(f"{k} {v}" for k, v in sorted(self.bank_faults.items())),
            f"lost                {self.lost}",
            f"duplicated          {self.duplicated}",
            f"wrongly changed     {self.wrongly_changed}",
            f"review queue        {self.review_actual} (expected {self.review_expected}, mismatched {self.review_mismatch})",
            f"triggers not re-fired after a kill  {self.triggers_not_refired}",
            f"payment records     {self.records} (one per applied amount, checked per deal)",
            f"time                {self.seconds_total:.1f} s ({self.seconds_to_settle:.1f} s to settle after the faults stopped)",
        ]
        if self.by_bank:
            lines[1:1] = ["payments per bank   " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_bank.items()))]
            lines.insert(5, "tochka faults       " + ", ".join(f"{k} {v}" for k, v in sorted(self.tochka_faults.items())))
        if self.files:
            lines.insert(6, "1C files            " + ", ".join(f"{k} {v}" for k, v in self.files.items()))
            lines.insert(7, "stored first from   " + ", ".join(f"{k} {v}" for k, v in sorted(self.first_source.items())))
        return "\n".join(lines + [f"problem: {p}" for p in self.problems[:20]])


# -- the worker as a separate OS process -------------------------------------------------------------------------
class WorkerProcess:
    """`b24app worker` in its own process, configured like a deployment through B24APP_* variables."""

    def __init__(self, settings, lease_seconds: int, concurrency: int, log_path: Path):
        s = settings
        self.env = {**os.environ, "B24APP_MODE": "demo", "B24APP_DATA_DIR": s.data_dir,
                    "B24APP_DATABASE_URL": s.database_url, "B24APP_SECRET_KEY": s.secret_key,
                    "B24APP_TOKEN_KEYS": ",".join(s.token_keys), "B24APP_PUBLIC_URL": s.public_url,
                    "B24APP_BITRIX_CLIENT_ID": s.bitrix_client_id, "B24APP_BITRIX_CLIENT_SECRET": s.bitrix_client_secret,
                    "B24APP_BITRIX_OAUTH_SERVERS": ",".join(s.bitrix_oauth_servers), "B24APP_BX24_JS_URL": s.bx24_js_url,
                    "B24APP_TBANK_CLIENT_ID": s.tbank_client_id, "B24APP_TBANK_CLIENT_SECRET": s.tbank_client_secret,
                    "B24APP_TBANK_ID_URL": s.tbank_id_url, "B24APP_TBANK_API_URL": s.tbank_api_url,
                    "B24APP_SYNC_INTERVAL": "1", "B24APP_INVOICE_REFRESH_INTERVAL": "300",
                    "B24APP_LEASE_SECONDS": str(lease_seconds), "B24APP_BITRIX_RATE": str(s.bitrix_rate),
                    "B24APP_BITRIX_BURST": str(s.bitrix_burst), "B24APP_LOG_LEVEL": "WARNING",
                    "B24APP_WORKER_CONCURRENCY": str(concurrency),
                    "B24APP_TOCHKA_CLIENT_ID": s.tochka_client_id, "B24APP_TOCHKA_CLIENT_SECRET": s.tochka_client_secret,
                    "B24APP_TOCHKA_AUTH_URL": s.tochka_auth_url, "B24APP_TOCHKA_API_URL": s.tochka_api_url,
                    "B24APP_TOCHKA_WEBHOOK_KEY_URL": s.tochka_webhook_key_url}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = self.kills = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.kills += 1

    def ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()


# -- setting the scene -------------------------------------------------------------------------------------------------
def _batch(stack, commands: dict[str, tuple[str, dict]]) -> dict:
    from b24app.adapters.bitrix.query import build_query

    out: dict = {}
    items = list(commands.items())
    for start in range(0, len(items), 50):
        cmd = {k: f"{m}?{build_query(p)}" for k, (m, p) in items[start:start + 50]}
        res = stack.rest("batch", {"halt": 0, "cmd": cmd})["result"]
        if res.get("result_error"):
            raise RuntimeError(f"seeding failed: {res['result_error']}")
        out.update(res["result"])
    return out


def _plan_portal(index: int, n: int, rng: random.Random) -> tuple[list[dict], list[Payment]]:
    """Invoices and the payments meant for them: exact, paid in two parts, review, unmatched, untouched."""
    n_review = max(1, n // 10)
    n_unmatched = max(1, n // 20)
    n_pairs = max(1, n // 10)
    n_exact = n - n_review - n_unmatched - 2 * n_pairs
    n_untouched = max(2, n // 10)
    invoices: list[dict] = []
    payments: list[Payment] = []

    def invoice(kind: str) -> int:
        k = len(invoices)
        amount = Decimal(f"{1000 + 13 * k + 211 * index}.{(37 * k + 11 * index) % 100:02d}")
        invoices.append({"number": str(10001 + k), "amount": amount, "client": k % 6, "user": 2 + k % 2,
                         "kind": kind})
        return k

    for _ in range(n_exact):
        k = invoice("exact")
        payments.append(Payment(index, "exact", k, invoices[k]["amount"],
                                rng.choice(PURPOSES).format(n=invoices[k]["number"]), "", ""))
    for _ in range(n_pairs):
        k = invoice("pair")
        first = (invoices[k]["amount"] * Decimal("0.4")).quantize(Decimal("0.01"))
        for part, amount in ((1, first), (2, invoices[k]["amount"] - first)):
            payments.append(Payment(index, "partial", k, amount,
                                    f"Оплата по счету № {invoices[k]['number']}, часть {part}", "", ""))
    for j in range(n_review):
        k = invoice("review")  # the right number, but paid by a stranger: a person must look
        payments.append(Payment(index, "review", k, invoices[k]["amount"],
                                f"Оплата по счету № {invoices[k]['number']}", f"79{index:02d}{j:06d}", ""))
    for j in range(n_unmatched):
        payments.append(Payment(index, "unmatched", None, Decimal(f"{1 + j % 97}.{(j * 17) % 100:02d}"),
                                "Оплата по договору поставки без номера счёта", f"78{index:02d}{j:06d}", ""))
    for _ in range(n_untouched):
        invoice("untouched")
    return invoices, payments


def _seed(plan: PortalPlan) -> None:
    st = plan.stack
    companies = _batch(st, {f"c{i}": ("crm.company.add", {"fields": {"TITLE": name}})
                            for i, (name, _) in enumerate(plan.clients)})
    _batch(st, {f"r{i}": ("crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": companies[f"c{i}"],
                                                          "PRESET_ID": 1, "NAME": name, "RQ_INN": inn}})
                for i, (name, inn) in enumerate(plan.clients)})
    deals = _batch(st, {f"d{k}": ("crm.deal.add", {"fields": {
        "TITLE": f"Сделка {inv['number']}", "ASSIGNED_BY_ID": inv["user"], "OPPORTUNITY": str(inv["amount"]),
        "CURRENCY_ID": "RUB", "COMPANY_ID": companies[f"c{inv['client']}"]}}) for k, inv in enumerate(plan.invoices)})
    items = _batch(st, {f"i{k}": ("crm.item.add", {"entityTypeId": 31, "fields": {
        "title": f"Счёт {inv['number']}", "accountNumber": inv["number"], "opportunity": str(inv["amount"]),
        "currencyId": "RUB", "parentId2": deals[f"d{k}"], "assignedById": inv["user"],
        "companyId": companies[f"c{inv['client']}"]}}) for k, inv in enumerate(plan.invoices)})
    for k, inv in enumerate(plan.invoices):
        inv["deal_id"] = int(deals[f"d{k}"])
        inv["invoice_id"] = int(items[f"i{k}"]["item"]["id"])


def _setup(cfg: SoakConfig, rng: random.Random):
    from b24app.domain.requisites import with_check_digits
    from b24app.pipeline.invoices import refresh_all
    from b24app.sandbox.stack import DEMO_INN, DEMO_KPP, DEMO_PHONE, link_bank, link_tochka, start_stack

    stack = start_stack(data_dir=cfg.data_dir, database_url=cfg.database_url, event_delivery="async",
                        sync_interval=1)
    per_portal = [cfg.payments // cfg.portals + (1 if i < cfg.payments % cfg.portals else 0) for i in range(cfg.portals)]
    plans: list[PortalPlan] = []
    payments: list[Payment] = []
    httpx.post(f"{stack.sandbox_url}/sandbox/config", json={"rate": 1000, "burst": 100000}, timeout=30)
    for i in range(cfg.portals):
        code = "demo" if i == 0 else f"soak{i}"
        if i:
            httpx.post(f"{stack.sandbox_url}/sandbox/portals", json={"code": code}, timeout=30).raise_for_status()
        view = stack if i == 0 else replace(stack, portal_code=code, _tmp=None)
        result = view.install()
        if not result.get("install_finish"):
            raise RuntimeError(f"install into {code} failed: {result}")
        inn, kpp, phone = (DEMO_INN, DEMO_KPP, DEMO_PHONE) if i == 0 else (
            with_check_digits(f"77{50 + i:02d}12345"), f"77{50 + i:02d}01001", f"+7999000{i:04d}")  # the link form checks both
        if i:
            httpx.post(f"{stack.bank_url}/sandbox/companies", json={
                "inn": inn, "kpp": kpp, "name": f"ООО «Сок {i}»", "phones": [phone],
                "accounts": [{"currency": "RUB"}, {"currency": "RUB"}]}, timeout=30).raise_for_status()
        clients = [(f"ООО «Клиент {i}-{c}»", f"77{i:02d}{c:06d}") for c in range(6)]
        plan = PortalPlan(code, view, inn, kpp, phone, clients)
        plan.invoices, mine = _plan_portal(i, per_portal[i], rng)
        for p in mine:
            if p.kind in ("exact", "partial"):
                p.inn = clients[plan.invoices[p.invoice]["client"]][1]
        payments += mine
        _seed(plan)
        page = link_bank(view, inn=inn, kpp=kpp, phone=phone)
        if 'id="link-ok"' not in page.text:
            raise RuntimeError(f"bank link for {code} failed: {page.text[:300]}")
        if "tochka" in cfg.banks:
            _link_tochka(stack, view, i, inn, kpp, phone, link_tochka)
        plan.member_id = view.member_id()
        portal = stack.ctx.portals.find(plan.member_id)
        plan.portal_id = portal.id
        refresh_all(stack.ctx, portal)
        plans.append(plan)
    httpx.post(f"{stack.sandbox_url}/sandbox/config", json={"rate": stack.settings.bitrix_rate,
                                                             "burst": stack.settings.bitrix_burst}, timeout=30)
    from sqlalchemy import select

    from b24app.storage.models import BankAccount, BankLink
    with stack.ctx.db.session() as s:
        for plan in plans:
            plan.accounts = list(s.scalars(select(BankAccount.account_number).where(
                BankAccount.portal_id == plan.portal_id, BankAccount.watched.is_(True)).order_by(BankAccount.id)))
            if cfg.mixed:
                rows = s.execute(select(BankLink.provider, BankAccount.account_number, BankAccount.external_id)
                                 .join(BankLink, BankLink.id == BankAccount.link_id)
                                 .where(BankAccount.portal_id == plan.portal_id, BankAccount.watched.is_(True))
                                 .order_by(BankAccount.id)).all()
                for provider, number, external_id in rows:
                    plan.bank_accounts.setdefault(provider, []).append(number)
                    if provider == "tochka":
                        plan.tochka_ids[number] = external_id
                if set(cfg.banks) - set(plan.bank_accounts):
                    raise RuntimeError(f"{plan.code}: no watched account in {set(cfg.banks) - set(plan.bank_accounts)}")
    rng.shuffle(payments)
    for n, p in enumerate(payments):
        p.doc = f"S{n:05d}"
    if cfg.mixed:  # a second generator: the default soak's random sequence (and its figures) stay as they were
        pick = random.Random(cfg.seed * 7919 + 1)
        for p in payments:
            p.bank = pick.choice(cfg.banks)
            p.account = pick.choice(plans[p.portal].bank_accounts[p.bank])
            p.payer_account = "4070281000" + p.inn  # every payer has its own account (the content key uses it)
    return stack, plans, payments


def _link_tochka(stack, view, index: int, inn: str, kpp: str, phone: str, link_tochka) -> None:
    """The portal's company at Tochka with two accounts, linked by the consent flow (webhook subscribed)."""
    code = "300123123" if index == 0 else f"3009{index:05d}"  # the demo customer keeps its code and first account
    if index:  # Tochka signs in by phone: the soak's phones overlap the demo's, so Tochka gets its own
        phone = f"+7999100{index:04d}"
    httpx.post(f"{stack.tochka_url}/sandbox/customers", json={
        "code": code, "inn": inn, "kpp": kpp, "name": "ООО «Демо»" if index == 0 else f"ООО «Сок {index}»",
        "phone": phone, "accounts": [f"407028109{index:03d}000000{j}" for j in ("01", "02")]},
        timeout=30).raise_for_status()
    page = link_tochka(view, inn=inn, kpp=kpp, phone=phone)
    if 'id="link-ok"' not in page.text:
        raise RuntimeError(f"Tochka link for {view.portal_code} failed: {page.text[:300]}")


# -- 1C statement files (the mixed soak) ------------------------------------------------------------------------------
@dataclass
class FileImport:
    at: float        # seconds after the first payment was posted
    portal: int
    path: Path
    again: bool = False  # the same file imported once more


def _as_exported(p: Payment, pick: random.Random) -> tuple[str, str]:
    """(Сумма, НазначениеПлатежа) as a bank's 1C export may differ from its API: the amount without trailing
    zeros, the purpose's tail cut or a VAT note added. Then only the content key (not the purpose fingerprint)
    says it is one payment. The invoice number stays: it is what the payer wrote first."""
    amount = f"{p.amount:.2f}".rstrip("0").rstrip(".") if pick.random() < 0.3 else f"{p.amount:.2f}"
    words = p.purpose.split(" ")
    keep = next((i for i, w in enumerate(words) if any(ch.isdigit() for ch in w)), len(words)) + 1
    roll = pick.random()
    if roll < 0.2 and keep < len(words):
        return amount, " ".join(words[:keep]).rstrip(",")
    if roll < 0.4:
        return amount, p.purpose + " Без НДС"
    return amount, p.purpose


def _onec_text(plan: PortalPlan, docs: list[Payment], day: str, out_number: str, split: bool,
               pick: random.Random) -> str:
    """A statement as a bank's 1C export writes it: header, a СекцияРасчСчет per account, the documents (the
    payments into our accounts, one payment out of ours), КонецФайла. Format: docs/banks/1c-files.md."""
    accounts = list(dict.fromkeys(p.account for p in docs))
    lines = ["1CClientBankExchange", "ВерсияФормата=1.03", "Кодировка=Windows", "Отправитель=Банк-клиент",
             "Получатель=Бухгалтерия предприятия, редакция 3.0", f"ДатаСоздания={day}", "ВремяСоздания=18:00:00",
             f"ДатаНачала={day}", f"ДатаКонца={day}"] + [f"РасчСчет={a}" for a in accounts]
    lines.append("Документ=Платежное поручение")
    for a in accounts:
        lines += ["СекцияРасчСчет", f"ДатаНачала={day}", f"ДатаКонца={day}", f"РасчСчет={a}",
                  "НачальныйОстаток=0.00", "КонецРасчСчет"]

    def doc(number, amount, payer, payer_inn, payer_name, recipient, recipient_inn, purpose, credited) -> list[str]:
        out = ["СекцияДокумент=Платежное поручение", f"Номер={number}", f"Дата={day}", f"Сумма={amount}",
               f"ПлательщикСчет={payer}", f"ДатаСписано={day}", f"Плательщик=ИНН {payer_inn} {payer_name}",
               f"ПлательщикИНН={payer_inn}", f"Плательщик1={payer_name}", f"ПолучательСчет={recipient}",
               f"ДатаПоступило={credited}", f"ПолучательИНН={recipient_inn}", "Получатель1=ООО «Получатель»"]
        words = purpose.split(" ")
        if split and len(words) > 1:  # some banks wrap the purpose over НазначениеПлатежа1..n
            out += ["НазначениеПлатежа=", f"НазначениеПлатежа1={' '.join(words[:2])}",
                    f"НазначениеПлатежа2={' '.join(words[2:])}"]
        else:
            out.append(f"НазначениеПлатежа={purpose}")
        return out + ["КонецДокумента"]

    for p in docs:
        amount, purpose = _as_exported(p, pick)
        lines += doc(p.doc, amount, p.payer_account, p.inn, f"Плательщик {p.doc}", p.account, plan.inn,
                     purpose, "" if split else day)
    lines += doc(out_number, "1500.00", accounts[0], plan.inn, "ООО «Сок»", "40702810100000099999", "7705123456",
                 "Оплата аренды, НДС не облагается", "")
    lines.append("КонецФайла")
    return "\r\n".join(lines) + "\r\n"


def _plan_files(cfg: SoakConfig, plans: list[PortalPlan], payments: list[Payment], folder: Path) -> list[FileImport]:
    """Statement files of windows of each portal's payments per bank (neighbouring files overlap by a few
    payments), imported at random moments around the window: before the API has the payments, while it gets
    them, after; about a third imported twice."""
    from datetime import datetime, timedelta, timezone

    pick = random.Random(cfg.seed * 7919 + 2)
    day = datetime.now(timezone(timedelta(hours=3))).strftime("%d.%m.%Y")  # the banks' payment day (Moscow)
    folder.mkdir(parents=True, exist_ok=True)
    last_at = cfg.seconds * 1.2
    events: list[FileImport] = []
    for index, plan in enumerate(plans):
        for bank in cfg.banks:
            mine = [(n, p) for n, p in enumerate(payments) if p.portal == index and p.bank == bank]
            start, previous = 0, []
            while start < len(mine):
                window = mine[start:start + pick.randint(6, 16)]
                start += len(window)
                overlap, previous = previous[-pick.randint(0, 3):] if previous else [], window
                if pick.random() >= cfg.file_share:
                    continue
                first, last = window[0][0], window[-1][0]
                if pick.random() < cfg.file_early:  # early: before or while the API delivers the window's payments
                    at = cfg.seconds * (first + pick.uniform(-0.3, 0.5) * max(1, last - first)) / len(payments)
                else:                     # the usual: the day's export, some seconds after the last payment
                    at = cfg.seconds * last / len(payments) + pick.uniform(0.5, 6.0)
                at = min(max(0.0, at), last_at)
                path = folder / f"{plan.code}-{bank}-{len(events):04d}.txt"
                text = _onec_text(plan, [p for _, p in overlap + window], day, f"O{len(events):05d}",
                                  pick.random() < 0.3, pick)
                path.write_bytes(text.encode("cp1251"))
                events.append(FileImport(at, index, path))
                if pick.random() < 0.3:
                    events.append(FileImport(min(last_at, at + pick.uniform(0.5, 8.0)), index, path, again=True))
    return sorted(events, key=lambda e: e.at)


def _run_imports(stack, plans: list[PortalPlan], events: list[FileImport], t0: float, stats: Counter,
                 problems: list[str], stop) -> None:
    """Import the files at their moments, as someone running `b24app import-statement --yes` would; an import
    refused because the worker is reading the account right now is tried again a moment later."""
    from b24app.pipeline.statement_import import StatementImportError, import_statement

    done: set[Path] = set()
    for ev in events:
        if stop.wait(max(0.0, t0 + ev.at - time.monotonic())):
            return
        for _ in range(30):
            try:
                result = import_statement(stack.ctx, plans[ev.portal].portal_id, ev.path, lease_wait=5.0)
            except StatementImportError as exc:
                if "right now" in str(exc) or "took too long" in str(exc):
                    stats["deferred"] += 1
                    continue
                problems.append(f"import_failed: {ev.path.name}: {exc}")
                break
            except Exception as exc:  # noqa: BLE001 - the soak reports any crash of the import as a problem
                problems.append(f"import_failed: {ev.path.name}: {type(exc).__name__}: {exc}"[:300])
                break
            stats["imports"] += 1
            stats["reimports" if ev.again else "files"] += 1
            stats["documents"] += result.incoming
            stats["new"] += result.new
            stats["known"] += result.known
            if ev.path in done and result.new:
                problems.append(f"duplicated: {ev.path.name} imported again added {result.new} payments")
            done.add(ev.path)
            break
        else:
            problems.append(f"import_failed: {ev.path.name}: the accounts stayed busy")


# -- verification ------------------------------------------------------------------------------------------------------
def _list_all(stack, method: str, params: dict, key: str | None) -> list[dict]:
    out, start = [], 0
    while True:
        body = stack.rest(method, {**params, "start": start})
        rows = body["result"][key] if key else body["result"]
        out += rows
        if body.get("next") is None:
            return out
        start = body["next"]


def _quiet(stack, plans, expected_ops: int) -> bool:
    from sqlalchemy import func, select

    from b24app.storage.models import Operation, OutboxItem
    with stack.ctx.db.session() as s:
        ops = s.scalar(select(func.count()).select_from(Operation).where(Operation.is_credit.is_(True)))
        undecided = s.scalar(select(func.count()).select_from(Operation).where(Operation.state.in_(("new", "pending"))))
        busy = s.scalar(select(func.count()).select_from(OutboxItem).where(OutboxItem.status.in_(("pending", "sending"))))
    return ops >= expected_ops and not undecided and not busy


def _verify(stack, plans: list[PortalPlan], payments: list[Payment], report: SoakReport) -> None:
    from sqlalchemy import func, select

    from b24app.storage.models import Allocation, Operation, OutboxItem

    def problem(kind: str, text: str) -> None:
        setattr(report, kind, getattr(report, kind) + 1)
        report.problems.append(f"{kind}: {text}")

    by_portal: dict[int, list[Payment]] = defaultdict(list)
    for p in payments:
        by_portal[p.portal].append(p)
    for index, plan in enumerate(plans):
        mine = by_portal[index]
        with stack.ctx.db.session() as s:
            ops = list(s.scalars(select(Operation).where(Operation.portal_id == plan.portal_id)))
            alloc = dict(s.execute(select(Allocation.invoice_b24_id, func.sum(Allocation.amount)).where(
                Allocation.portal_id == plan.portal_id, Allocation.revoked_at.is_(None))
                .group_by(Allocation.invoice_b24_id)).all())
            dead = list(s.scalars(select(OutboxItem).where(OutboxItem.portal_id == plan.portal_id,
                                                           OutboxItem.status.in_(("dead", "pending", "sending")))))
        by_doc = Counter(o.document_number for o in ops)
        states = {o.document_number: o.state for o in ops}
        if report.by_bank or report.files:  # the mixed soak: nothing stored that nobody paid in (a file's outgoing)
            planned = {p.doc for p in mine}
            for o in ops:
                if o.document_number not in planned:
                    problem("wrongly_changed", f"{plan.code}: stored {o.document_number} ({o.source}), not a payment in")
                else:
                    report.first_source[o.source] = report.first_source.get(o.source, 0) + 1
        for p in mine:
            if by_doc[p.doc] == 0:
                problem("lost", f"{plan.code}: payment {p.doc} ({p.kind}) never stored")
            elif by_doc[p.doc] > 1:
                problem("duplicated", f"{plan.code}: payment {p.doc} stored {by_doc[p.doc]} times")
            elif states[p.doc] in ("new", "pending"):
                problem("lost", f"{plan.code}: payment {p.doc} never decided ({states[p.doc]})")
        for item in dead:
            problem("lost", f"{plan.code}: effect {item.key} ended {item.status}: {item.last_error}")
        queue = {o.document_number for o in ops if o.state in QUEUE_STATES}
        expected_queue = {p.doc for p in mine if p.kind in ("review", "unmatched")}
        report.review_expected += len(expected_queue)
        report.review_actual += len(queue)
        for doc in queue ^ expected_queue:
            report.review_mismatch += 1
            report.problems.append(f"review_mismatch: {plan.code}: {doc} "
                                   f"{'in the queue' if doc in queue else 'missing from the queue'}")
        # Bitrix24 as a person sees it
        items = {int(i["id"]): i for i in _list_all(plan.stack, "crm.item.list", {
            "entityTypeId": 31, "select": ["id", "stageId", "opportunity"]}, "items")}
        deals = {int(d["ID"]): d for d in _list_all(plan.stack, "crm.deal.list", {"select": ["ID", "STAGE_ID"]}, None)}
        state = plan.stack.portal_state()
        comments = defaultdict(list)
        for c in state["timeline_comments"]:
            comments[int(c["ENTITY_ID"])].append(c["COMMENT"])
        triggers = Counter(int(t["owner_id"]) for t in state["trigger_executions"])
        records = defaultdict(list)   # payment records on each deal (#15), as the sandbox keeps them
        for r in state.get("payments", []):
            if int(r["entityTypeId"]) == 2:
                records[int(r["entityId"])].append(r)
        for inv in plan.invoices:
            stage = items.get(inv["invoice_id"], {}).get("stageId")
            paid = alloc.get(inv["invoice_id"], Decimal("0"))
            should_pay = inv["kind"] in ("exact", "pair")
            want_comments = {"exact": 1, "pair": 2}.get(inv["kind"], 0)
            if should_pay and stage != PAID_STAGE:
                problem("lost", f"{plan.code}: invoice {inv['number']} ({inv['kind']}) is {stage}")
            if not should_pay and stage != OPEN_STAGE:
                problem("wrongly_changed", f"{plan.code}: invoice {inv['number']} ({inv['kind']}) is {stage}")
            if paid > inv["amount"] or (not should_pay and paid):
                problem("duplicated", f"{plan.code}: invoice {inv['number']} allocated {paid} of {inv['amount']}")
            elif should_pay and paid != inv["amount"]:
                problem("lost", f"{plan.code}: invoice {inv['number']} allocated {paid} of {inv['amount']}")
            got = comments.get(inv["deal_id"], [])
            if len(got) > want_comments or len(set(got)) != len(got):
                problem("duplicated", f"{plan.code}: deal {inv['deal_id']} has {len(got)} comments, wants {want_comments}")
            elif len(got) < want_comments:
                problem("lost", f"{plan.code}: deal {inv['deal_id']} has {len(got)} comments, wants {want_comments}")
            if triggers[inv["deal_id"]] > want_comments:
                problem("duplicated", f"{plan.code}: deal {inv['deal_id']} trigger fired {triggers[inv['deal_id']]} times")
            report.triggers_not_refired += max(0, want_comments - triggers[inv["deal_id"]])
            _check_records(plan.code, inv, records.get(inv["deal_id"], []), paid, want_comments, problem, report)
            # By default a deal whose invoice is paid in full moves to its pipeline's success stage (WON).
            deal_stage = deals.get(inv["deal_id"], {}).get("STAGE_ID")
            if should_pay and deal_stage != "WON":
                problem("lost", f"{plan.code}: deal {inv['deal_id']} is {deal_stage}, not moved to WON")
            elif not should_pay and deal_stage != "NEW":
                problem("wrongly_changed", f"{plan.code}: deal {inv['deal_id']} moved to {deal_stage}")
        visible = [n for n in state["notifications"] if not n.get("replaced_by")]
        by_tag = Counter(n["tag"] for n in visible if n.get("tag"))
        by_text = Counter((n["user_id"], n["message"]) for n in visible)
        for tag, count in by_tag.items():
            if count > 1:
                problem("duplicated", f"{plan.code}: {count} visible notifications with tag {tag}")
        for (user, message), count in by_text.items():
            if count > 1:
                problem("duplicated", f"{plan.code}: user {user} sees {count}x '{message[:60]}'")
        want = sum(1 for p in mine if p.kind in ("exact", "partial", "review"))
        if len(by_text) < want:
            problem("lost", f"{plan.code}: {len(by_text)} distinct notifications, expected {want}")
        elif len(by_text) > want:
            problem("duplicated", f"{plan.code}: {len(by_text)} distinct notifications, expected {want}")


def _check_records(code: str, inv: dict, recs: list[dict], applied: Decimal, want: int, problem, report) -> None:
    """One paid record per applied amount (exact 1, a pair 2), no two with the same marker, their sum what the
    app applied to the deal's invoice; none on an invoice the app did not touch."""
    report.records += len(recs)
    marks = Counter(r.get("xmlId") for r in recs)
    if any(n > 1 for n in marks.values()) or len(recs) > want:
        problem("duplicated", f"{code}: deal {inv['deal_id']} has {len(recs)} payment records "
                              f"({sum(n - 1 for n in marks.values())} with a marker seen before), wants {want}")
        return
    if len(recs) < want or any(r.get("paid") != "Y" for r in recs):
        problem("lost", f"{code}: deal {inv['deal_id']} has {sum(r.get('paid') == 'Y' for r in recs)} paid records, "
                        f"wants {want}")
        return
    total = sum((Decimal(str(r["sum"])) for r in recs), Decimal("0"))
    if recs and total != applied:
        problem("lost" if total < applied else "duplicated",
                f"{code}: deal {inv['deal_id']} records sum {total}, the app applied {applied}")


# -- the run -----------------------------------------------------------------------------------------------------------
def run_soak(cfg: SoakConfig, log=print) -> SoakReport:
    rng = random.Random(cfg.seed)
    started = time.monotonic()
    report = SoakReport(payments=cfg.payments, portals=cfg.portals)
    stack, plans, payments = _setup(cfg, rng)
    worker = WorkerProcess(stack.settings, cfg.lease_seconds, cfg.worker_concurrency,
                           Path(stack.settings.data_dir) / "soak-worker.log")
    files = _plan_files(cfg, plans, payments, Path(stack.settings.data_dir) / "statements") if cfg.files else []
    import_stats: Counter = Counter()
    import_problems: list[str] = []
    stop_imports = threading.Event()
    importer = None
    try:
        report.accounts = sum(len(p.accounts) for p in plans)
        log(f"soak: {len(payments)} payments, {cfg.portals} portals, {report.accounts} accounts; "
            f"set up in {time.monotonic() - started:.1f} s")
        httpx.post(f"{stack.sandbox_url}/sandbox/config", json={"slow_seconds": 0.3, "timeout_seconds": 1.0,
                                                                 "seed": cfg.seed}, timeout=30)
        httpx.post(f"{stack.bank_url}/sandbox/config", json={"fault_timeout": 1.0}, timeout=30)
        httpx.post(f"{stack.sandbox_url}/sandbox/faults", json={"kinds": cfg.portal_faults, "seed": cfg.seed},
                   timeout=30).raise_for_status()
        httpx.post(f"{stack.bank_url}/sandbox/faults", json={"kinds": cfg.bank_faults}, timeout=30).raise_for_status()
        if "tochka" in cfg.banks:
            httpx.post(f"{stack.tochka_url}/sandbox/fault-rates", json={"kinds": cfg.tochka_faults, "seed": cfg.seed},
                       timeout=30).raise_for_status()
        worker.start()
        t0 = time.monotonic()
        if files:
            importer = threading.Thread(target=_run_imports, name="soak-imports", daemon=True, args=(
                stack, plans, files, t0, import_stats, import_problems, stop_imports))
            importer.start()
        next_kill = t0 + rng.uniform(*cfg.kill_every)
        kill_until = t0 + cfg.seconds * 1.25
        with httpx.Client(timeout=30) as bank:
            for n, p in enumerate(payments):
                due = t0 + cfg.seconds * n / len(payments)
                while time.monotonic() < due:
                    time.sleep(min(0.05, max(0.0, due - time.monotonic())))
                if time.monotonic() >= next_kill:
                    worker.kill()
                    worker.start()
                    next_kill = time.monotonic() + rng.uniform(*cfg.kill_every)
                plan = plans[p.portal]
                if p.bank == "tochka":
                    r = bank.post(f"{stack.tochka_url}/sandbox/operations", json={
                        "amount": str(p.amount), "purpose": p.purpose, "account_id": plan.tochka_ids[p.account],
                        "payer_inn": p.inn, "payer_name": f"Плательщик {p.doc}", "payer_account": p.payer_account,
                        "document_number": p.doc})
                    r.raise_for_status()
                    continue
                body = {"amount": str(p.amount), "payPurpose": p.purpose, "payerInn": p.inn,
                        "payerName": f"Плательщик {p.doc}", "documentNumber": p.doc,
                        "accountNumber": p.account if cfg.mixed else rng.choice(plan.accounts)}
                if cfg.mixed:
                    body["payerAccount"] = p.payer_account
                r = bank.post(f"{stack.bank_url}/sandbox/operations", json=body)
                r.raise_for_status()
        while time.monotonic() < kill_until:  # the worker keeps dying while it catches up
            time.sleep(min(0.1, max(0.0, next_kill - time.monotonic())))
            if time.monotonic() >= next_kill:
                worker.kill()
                worker.start()
                next_kill = time.monotonic() + rng.uniform(*cfg.kill_every)
        if importer is not None:  # the last files are due by now; an import may still wait for a lease
            importer.join(timeout=120)
        worker.ensure_running()
        httpx.delete(f"{stack.sandbox_url}/sandbox/faults", timeout=30)
        httpx.delete(f"{stack.bank_url}/sandbox/faults", timeout=30)
        if "tochka" in cfg.banks:
            httpx.delete(f"{stack.tochka_url}/sandbox/fault-rates", timeout=30)
        faults_off = time.monotonic()
        deadline = faults_off + cfg.settle_timeout
        while time.monotonic() < deadline:
            worker.ensure_running()
            if _quiet(stack, plans, len(payments)):
                time.sleep(1.0)  # one more look: nothing half-done in between
                if _quiet(stack, plans, len(payments)):
                    break
            time.sleep(0.5)
        report.seconds_to_settle = time.monotonic() - faults_off
        worker.stop()
        report.kills, report.worker_starts = worker.kills, worker.starts
        sandbox = httpx.get(f"{stack.sandbox_url}/sandbox/state", timeout=30).json()
        pf: Counter = Counter()
        for p in sandbox["portals"].values():
            pf.update(p["faults"])
        report.portal_faults = dict(pf)
        report.bank_faults = dict(stack.bank_state()["faults"]["fired"])
        if cfg.mixed:
            report.by_bank = dict(Counter(p.bank for p in payments))
        if "tochka" in cfg.banks:
            report.tochka_faults = dict(stack.tochka_state()["fired"])
        if cfg.files:
            if importer is not None and importer.is_alive():
                import_problems.append("import_failed: the imports did not finish")
            for text in import_problems:
                import_stats["duplicated" if text.startswith("duplicated") else "failed"] += 1
            report.duplicated += import_stats["duplicated"]
            report.problems += import_problems
            report.files = {k: import_stats[k] for k in ("files", "reimports", "deferred", "documents", "new", "known",
                                                          "failed")}
        _verify(stack, plans, payments, report)
        if report.problems and cfg.data_dir:
            # Evidence for whoever looks next: the worker's log and database are in the data dir already; the
            # portals' memory (comments, notifications, triggers with their times) is gone once we stop.
            states = {p.code: httpx.get(f"{stack.sandbox_url}/p/{p.code}/sandbox/state", timeout=30,
                                        follow_redirects=True).json() for p in plans}  # a renamed one redirects
            (Path(cfg.data_dir) / "portals-state.json").write_text(json.dumps(states, ensure_ascii=False))
    finally:
        stop_imports.set()
        if importer is not None:
            importer.join(timeout=60)
        worker.stop()
        report.seconds_total = time.monotonic() - started
        stack.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--payments", type=int, default=2000)
    ap.add_argument("--portals", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=None, help="how long payments keep arriving")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    ap.add_argument("--data-dir", default=None,
                    help="keep the app's data here (database, worker log; the portals' state too if a check fails)")
    ap.add_argument("--banks", default="tbank",
                    help="live banks every portal links, comma-separated: tbank, tochka (default: tbank)")
    ap.add_argument("--files", action="store_true",
                    help="also import some of the same payments from 1C statement files, at random moments")
    ap.add_argument("--json", action="store_true", help="print the report as JSON as well")
    args = ap.parse_args(argv)
    banks = tuple(dict.fromkeys(b.strip() for b in args.banks.split(",") if b.strip()))
    if not banks or set(banks) - set(BANKS):
        ap.error(f"--banks: choose from {', '.join(BANKS)}")
    seconds = args.seconds if args.seconds is not None else max(20.0, args.payments / 20)
    cfg = SoakConfig(payments=args.payments, portals=args.portals, seconds=seconds, seed=args.seed,
                     database_url=args.database_url, data_dir=args.data_dir, banks=banks, files=args.files)
    report = run_soak(cfg, log=lambda m: print(m, file=sys.stderr))
    print(report.render())
    if args.json:
        print(json.dumps({k: v for k, v in vars(report).items() if k != "problems"}, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
