"""Read models: the queries that build what the deal tab and the admin page show, returned as plain data
(frozen dataclasses; the assign selector's invoices are detached rows).

- `deal_tab`: the invoices of one deal (or invoice), their payments, the review items that point at them.
- `admin_page`: the review queue, assign targets, history, the chart's numbers, the first-run checklist.
- `bank`: the bank link and accounts as a person needs to see them.
- `review`: review lines and the search/amount helpers both pages share.
- `lookups`: the lookups the web layer needs to check a request (is this payment this portal's, who owns an
  invoice) and the few counts it shows.

May import: `models`, `db`, `domain`, and read-only helpers of the pipeline (`credit`, `banklink`, `sync`).
Never Flask, HTTP, templates or display texts: wording, chart geometry and formatting live in `web/`
(`web/charts.py`, templates) and reason texts in `domain/explain.py`. Nothing here writes.
"""
