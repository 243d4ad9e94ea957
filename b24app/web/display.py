"""How the pages write what the read models return: texts derived for display only (template filters)."""
from __future__ import annotations


def mask_account(number: str) -> str:
    """An account number as pages and the API show it: its last four digits only."""
    return f"•••• {number[-4:]}" if len(number) > 4 else number


def invoice_subtitle(line) -> str:
    """The invoice's title unless it only repeats the number ("Счёт 1207")."""
    rest = line.title.replace(line.number, "").strip(" №#-:.")
    return "" if rest.lower() in ("", "счёт", "счет", "invoice", "inv") else line.title
