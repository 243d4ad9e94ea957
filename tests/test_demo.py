"""`make demo` is half the README's contract: it must run the main job by itself and say what happened."""
from __future__ import annotations

from b24app.demo import run_demo


def test_demo_pays_one_invoice_in_full_and_one_partly_and_says_so(tmp_path, capsys):
    run_demo(base_port=0, data_dir=str(tmp_path / "data"), exit_after_ready=True)
    out = capsys.readouterr().out
    assert "installFinish seen" in out and "T-Bank linked by SMS" in out and "Tochka linked by its consent flow" in out
    assert "→ invoice 1207 paid after" in out and "the manager (Борис Менеджеров) notified" in out
    assert "СЧ-00412 частично» → underpaid, 9\u00a0700,00\u00a0₽ still due" in out and "the invoice stays open" in out
    assert "Tochka: 3\u00a0000,00\u00a0₽ «Оплата по счету № 1208 от 15.01.2026» → invoice 1208 paid after" in out
    assert "Pay invoice INV-2025-0042 (deal 3) yourself" in out and "/crm/deal/details/1/" in out and out.rstrip().endswith("stopping…")


def test_demo_on_a_busy_port_says_which_and_how_to_pick_another(tmp_path):
    import socket

    from click.testing import CliRunner

    from b24app.cli import main

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        result = CliRunner().invoke(main, ["demo", "--base-port", str(port), "--data-dir", str(tmp_path),
                                           "--exit-after-ready"])
    finally:
        busy.close()
    assert result.exit_code != 0
    assert f"port {port} is already in use" in result.output and "--base-port" in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, OSError)
