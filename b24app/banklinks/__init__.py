"""A portal's linked banks: the consent flows (`tbank` T-ID by SMS, `tochka` Open Banking consent), tokens
refreshed under a row lock, unlink; accounts known only from 1C files (`files`); and each bank as a source of
operations (`sources.BankSource`) for the sync.

May import adapters, storage and domain. One upward import, lazy and named: `tbank` asks `pipeline.notices` to
tell the admin when the bank refused a refresh token. Never web or sandbox.
"""
