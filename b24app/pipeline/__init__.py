"""The payment's path, in order: statement in (`sync` from a bank, `statement_import` from a 1C file), matched
(`reconcile`, using the pure `domain`), effects out to Bitrix24 (`effects` typed, written by `queue.enqueue` in
the decision's transaction, sent by `outbox` in batches and re-checked after a crash), scheduled by `worker`.
Beside it: the invoice cache (`invoices`), the admin's `rules`, partly paid stages (`partial`), the client's
`credit`, the deal's paid-sum field (`paidfield`), payment records (`paymentrecords`), the texts sent to Bitrix24
(`notices`) and the refusals a person sees (`errors`). Services here own their transactions.

May import domain, adapters, storage, portals, banklinks; never web or sandbox.
"""
