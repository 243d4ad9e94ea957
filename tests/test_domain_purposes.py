"""Invoice numbers extracted from payment purposes: the shared corpus plus hand-written rules and traps."""
from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from b24app.domain import extract_invoice_numbers
from b24app.domain.numbers import fold_lookalikes
from b24app.domain.purposes import MAX_NUMBER_LENGTH

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / ".." / "shared" / "corpus" / "purposes-dev.tsv"


def _corpus_cases() -> list:
    if not CORPUS.is_file():
        return [pytest.param("", "", id="corpus-absent",
                             marks=pytest.mark.skip(reason=f"corpus file not found: {CORPUS}"))]
    cases = []
    for lineno, line in enumerate(CORPUS.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        columns = line.split("\t")
        purpose = columns[0]
        expected = columns[1] if len(columns) > 1 else ""
        cases.append(pytest.param(purpose, expected, id=f"line{lineno}"))
    return cases


@pytest.mark.parametrize(("purpose", "expected"), _corpus_cases())
def test_corpus(purpose: str, expected: str) -> None:
    # Compared after folding Cyrillic/Latin look-alikes only: the corpus writes «1000001-В24» as Latin B24.
    wanted = [fold_lookalikes(n.strip()) for n in expected.split(",") if n.strip()]
    assert [fold_lookalikes(n) for n in extract_invoice_numbers(purpose)] == wanted


HAND_CASES = [
    # keyword forms
    ("Оплата по счёту №12", ["12"]),
    ("ОПЛАТА СЧЕТА 77", ["77"]),
    ("оплата по счетам 5 и 6", ["5", "6"]),
    ("Оплата счетов № 8, 9", ["8", "9"]),
    ("оплата согласно счету № 31", ["31"]),
    ("Оплата по счетам: № 41; № 42", ["41", "42"]),
    ("в счёт оплаты по счетe 17", ["17"]),  # mixed Cyrillic/Latin keyword
    ("Оплата по cчету № 10", ["10"]),  # Latin c in «счету»
    ("ОПЛАТА ПО СЧЁТУ НА ОПЛАТУ №18", ["18"]),
    ("Оплата по сч. 19", ["19"]),
    ("Оплата по сч 20 от 01.01.2026", ["20"]),
    ("Оплата по счету-оферте № 11", ["11"]),
    ("Оплата по счёт-договору №12 от 1.1.2026", ["12"]),
    ("Оплата по счету-договору N 13", ["13"]),
    ("Payment for invoice INV-2025-0042", ["INV-2025-0042"]),
    ("Оплата INV-2025-0042", ["INV-2025-0042"]),
    ("Invoices 12, 13 and 14", ["12", "13", "14"]),
    ("invoice no. 77 dated 01.02.2026", ["77"]),
    ("inv #88", ["88"]),
    ("оплата по инвойсу 12", ["12"]),
    ("Оплата СЧ-00412 за март", ["СЧ-00412"]),
    ("Оплата по счету СЧ00412", ["СЧ00412"]),
    # number signs
    ("по счету №№ 12, 13", ["12", "13"]),
    ("по счету Nº 14", ["14"]),
    ("по счету No.15", ["15"]),
    ("по счету #16", ["16"]),
    ("по счету номер 21", ["21"]),
    ("По сч.№771от31.10.2021 г.", ["771"]),
    ("Оплата по счету от 12.03.2024 № 45", ["45"]),
    # lists
    ("счет 12 от 01.02.2026, 15 от 03.02.2026", ["12", "15"]),
    ("ОПЛАТА ПО СЧЕТУ № 12 ОТ 12 ЯНВАРЯ 2026 Г., № 13 ОТ 13 ЯНВАРЯ 2026 Г.", ["12", "13"]),
    ("Оплата по счету № 12 от 01.02.2026г.; № 13", ["12", "13"]),
    ("Оплата по счетам 1395,1401", ["1395", "1401"]),
    ("Оплата по счету №12 и счету №13 и счету 14", ["12", "13", "14"]),
    ("по счетам 12-15", ["12-15"]),  # a range is not expanded
    ("оплата по счету № 00412 и № 412", ["00412"]),  # the same number twice
    ("оплата по счету № 7 и по счету № 7", ["7"]),
    # traps
    ("оплата по сч.-ф. № 12", []),
    ("по с/ф 12", []),
    ("Оплата по счету № 12 и счет-фактуре № 13", ["12"]),
    ("Оплата по счету 12 и УПД 13", ["12"]),
    ("по счету 12, ТОРГ-12 № 5", ["12"]),
    ("Оплата по счету 12 ТН 45", ["12"]),
    ("Оплата по УПД № 45", []),
    ("Оплата по договору № 5 от 01.01.2026", []),
    ("Оплата по дог. № 5", []),
    ("Оплата по акту № 5", []),
    ("Оплата по накладной № 5", []),
    ("Оплата заказа 789", []),
    ("Оплата счета по заказу № 123", []),
    ("Оплата по счету № 45 по заказу № 12", ["45"]),
    ("Оплата по спец. № 3 к дог. 4", []),
    ("по лицевому счету 12345", []),
    ("Перевод на расч. счет 123", []),
    ("Перевод между своими счетами", []),
    ("Пополнение счета 40817810099910004312", []),
    ("Комиссия по счету 4070281000000000000012", []),  # 22 digits
    ("Оплата по счету 4276 1234 5678 9012", []),  # spaced card number
    ("Оплата по счету 1 500,00 руб", []),  # spaced thousands
    ("Оплата по счету 12 500 руб", []),
    ("Оплата по счету 12 500", ["12"]),  # no unit: «500» is left alone, «12» stays
    ("Оплата по счету 4276123456789012", []),  # card number
    ("Оплата по счету № 123 ИНН 7701234567 КПП 770101001", ["123"]),
    ("ИНН 7701234567 КПП 770101001 БИК 044525225 ОГРН 1027700132195", []),
    ("оплата по счету 8-800-555-35-35", []),
    ("тел. 8-800-555-35-35, по счету 5", ["5"]),
    ("по счету 1.2.26", []),
    ("по счету 12/12/2020", []),
    ("по счету 5 марта", []),
    ("по счёту от 11января 2021г.", []),
    ("Оплата по счету 1500 руб", []),
    ("Оплата по счету № 7, 8 шт", ["7"]),
    ("по счету № 50%", []),
    ("Оплата по счету 18026,52", []),
    ("Оплата по счету № 12, в т.ч. НДС 20% 200-00", ["12"]),
    ("Оплата по счету № 12, 5.616.666,67", ["12"]),
    ("Оплата по счету 3, 1 объектового прибора", ["3"]),
    ("Комиссия за ведение счета 12 месяцев", []),
    ("Оплата по счету за товар, 2 шт", []),
    ("Оплата по счету № 5, 2024 г.", ["5"]),
    ("ОПЛАТА ЗА КЛЕЙ2000 И ГРУНТ3000 ПО ДОГОВОРУ 4", []),
]


@pytest.mark.parametrize(("purpose", "expected"), HAND_CASES, ids=[c[0][:40] for c in HAND_CASES])
def test_hand_written(purpose: str, expected: list[str]) -> None:
    assert extract_invoice_numbers(purpose) == expected


HOSTILE_CASES = [
    ("<script>alert('по счету № 1')</script> по счету № 12<b>", ["1", "12"]),
    ("<b>Оплата</b> по счету № 12&nbsp;за товар", ["12"]),
    ("по сч\u200bету № 5", ["5"]),  # zero-width space inside the keyword
    ("по счету\u200f № 6\u202e", ["6"]),  # RTL marks
    ("\ufeffпо\x00счету\x07№\t9\r\n", ["9"]),  # BOM and control characters
    ("по счету\u00a0№\u00a0\u2007 42", ["42"]),  # odd spaces
    ("по счету № СЧ\u20141234", ["СЧ-1234"]),  # em dash unified
    ("по счету № ١٢٣", []),  # non-ASCII digits are not invoice digits
    ("по счету № " + "9" * (MAX_NUMBER_LENGTH + 1), []),
    ("", []),
    ("   ", []),
]


@pytest.mark.parametrize(("purpose", "expected"), HOSTILE_CASES, ids=[repr(c[0][:30]) for c in HOSTILE_CASES])
def test_hostile_input(purpose: str, expected: list[str]) -> None:
    assert extract_invoice_numbers(purpose) == expected


def test_results_are_short_substrings_with_digits_on_random_text() -> None:
    rng = random.Random(20260)
    alphabet = list("счетуфакрNo№#-/.,; 0123456789иот") + ["счету ", " № ", "сч.", "от 01.02.2026", "\u200b"]
    for _ in range(2000):
        purpose = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        cleaned = purpose.replace("\u200b", "")
        for number in extract_invoice_numbers(purpose):
            assert number in cleaned
            assert len(number) <= MAX_NUMBER_LENGTH
            assert any(ch.isdigit() for ch in number)
            assert all(ch.isalnum() or ch in "-/" for ch in number)


LINEAR_SCRIPT = textwrap.dedent(
    """
    from b24app.domain import extract_invoice_numbers as extract
    N = 100_000
    inputs = [
        "счет " * (N // 5),
        "по счету № " * (N // 11),
        "по счетам " + ", ".join(str(i) for i in range(N // 7)),
        "по счету " + "1-" * (N // 2) + "1",
        "сч-1-" * (N // 5),
        "inv-1-" * (N // 6),
        "1" * N,
        "а" * N,
        "по счету № 1 от 01.01.2020, " * (N // 28),
        "счету1" * (N // 6),
        "№" * N,
        "по сч.№1от1.1.20г,№" * (N // 19),
        "<script>по счету № 1</script>" * (N // 30),
        "\\u200b" * N + "по счету 5",
        "счету-договору-" * (N // 15),
        "по счету " + "от " * (N // 3),
    ]
    counts = [len(extract(text)) for text in inputs]
    assert counts[2] == N // 7, counts
    assert counts[13] == 1, counts
    print("ok")
    """
)


@pytest.mark.slow  # a size/stress check: out of the fast tier, in `make test`
def test_100kb_inputs_finish(tmp_path: Path) -> None:
    """Adversarial 100 KB purposes run in a child process bounded by a timeout (hang guard, not a benchmark)."""
    script = tmp_path / "linear.py"
    script.write_text(LINEAR_SCRIPT, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
