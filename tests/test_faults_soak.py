"""A short soak under faults (the long one is `python -m benchmarks.soak`): a few hundred payments across two
portals and four accounts, both sandboxes injecting faults, the worker process SIGKILLed at random moments and
restarted. Nothing may be lost or applied twice, no notification or timeline comment duplicated, no invoice
changed that should not be, and the review queue must hold exactly the ambiguous payments."""
from __future__ import annotations

import sys

import pytest

from conftest import PG_URL, REPO

if str(REPO) not in sys.path:  # benchmarks/ holds the engine shared with the long run
    sys.path.insert(0, str(REPO))

from benchmarks.soak import BANK_FAULTS, PORTAL_FAULTS, TOCHKA_FAULTS, SoakConfig, run_soak  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_short_soak_under_faults_and_kills_loses_and_duplicates_nothing(tmp_path, database_url):
    # The app batches Bitrix24 calls, so a short run makes few of them: the portal faults are tripled to
    # make sure they still fire. Kills come less often than a dead worker's leases (4 s) last, so the next
    # worker gets to do some work under faults before it dies in turn.
    cfg = SoakConfig(payments=240, portals=2, seconds=20.0, kill_every=(4.0, 7.0), lease_seconds=4,
                     settle_timeout=45.0, seed=11, data_dir=str(tmp_path / "soak"),
                     database_url=database_url if PG_URL else None,
                     portal_faults={k: min(1.0, 3 * v) for k, v in PORTAL_FAULTS.items()},
                     bank_faults=dict(BANK_FAULTS))
    report = run_soak(cfg, log=lambda message: print(message))
    print(report.render())
    assert report.problems == [], report.render()
    assert report.ok and report.lost == 0 and report.duplicated == 0 and report.wrongly_changed == 0
    assert report.review_actual == report.review_expected > 0
    # payment records are on by default: one paid record per applied amount, each deal checked (soak._check_records)
    assert report.records > 0, report.render()
    # the run really was hostile
    assert report.kills >= 3, report.render()
    assert sum(report.portal_faults.values()) >= 5 and sum(report.bank_faults.values()) >= 10, report.render()
    assert len(report.portal_faults) >= 3 and len(report.bank_faults) >= 3, report.render()


@pytest.mark.slow  # 25-50 s on a loaded 2-core machine
def test_short_mixed_soak_two_live_banks_and_1c_files_loses_and_duplicates_nothing(tmp_path, database_url):
    # Both live banks (T-Bank and Tochka, each with its faults), and some of the same payments also in 1C
    # files imported at random moments (before, during and after the API delivers them; overlapping; some
    # twice): every payment still ends up stored, applied and announced exactly once.
    cfg = SoakConfig(payments=72, portals=2, seconds=14.0, kill_every=(4.0, 6.0), lease_seconds=4,
                     settle_timeout=45.0, seed=5, data_dir=str(tmp_path / "soak"),
                     database_url=database_url if PG_URL else None, banks=("tbank", "tochka"), files=True,
                     file_share=0.6, file_early=0.5, portal_faults={k: min(1.0, 3 * v) for k, v in PORTAL_FAULTS.items()},
                     bank_faults=dict(BANK_FAULTS), tochka_faults={k: min(1.0, 2 * v) for k, v in TOCHKA_FAULTS.items()})
    report = run_soak(cfg, log=lambda message: print(message))
    print(report.render())
    assert report.problems == [], report.render()
    assert report.ok and report.lost == 0 and report.duplicated == 0 and report.wrongly_changed == 0
    assert report.review_actual == report.review_expected > 0
    # both banks and the files really carried payments, and files really overlapped what the API delivered
    assert report.by_bank.get("tbank", 0) >= 10 and report.by_bank.get("tochka", 0) >= 10, report.render()
    assert report.files["files"] >= 3 and report.files["known"] >= 5, report.render()
    assert report.first_source.get("1c", 0) >= 1, report.render()  # some payments came from a file first
    assert report.first_source.get("1c", 0) + report.first_source.get("tbank", 0) \
        + report.first_source.get("tochka", 0) == cfg.payments, report.render()
    # the run really was hostile, for both banks
    assert report.kills >= 2, report.render()
    assert sum(report.bank_faults.values()) >= 3 and sum(report.tochka_faults.values()) >= 3, report.render()
