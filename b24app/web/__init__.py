"""HTTP entry points, one blueprint per concern: an adapter that parses requests, checks access and renders.

Lives here: the blueprints (`placement` the deal/invoice tab, `admin` the app page, `bank`/`tochka` the bank
link, `events`, `install`, `health`), `common` (context, CSRF, link ticket, page texts), `security`,
`throttle`, `i18n`, `people`, `upload` (1C statement files) and `charts`/`display` (display only).
May import: Flask and its extensions, `b24app.queries` (read models), the services beside the pipeline
(`invoices`, `pipelines`, `installation`, `reconcile`, `sync`, `banklink`, `rules`, ...), `domain`.
Never `b24app.storage.models` or SQLAlchemy (tests/test_layers.py); no blueprint imports `factory`.
"""
