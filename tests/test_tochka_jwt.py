"""Tochka's own example webhook, verified with Tochka's own published key (both from the «Вебхуки» page,
developers.tochka.com/docs/tochka-api/opisanie-metodov/vebhuki: the incomingPayment example body and the JWK in
its Python/PHP handler examples). This pins our JWT check to what the bank really sends, not only to our sandbox."""
from __future__ import annotations

import json

import pytest

from b24app.adapters.banks.tochka import WebhookRejected, _b64url, public_key_from_jwk, verify_webhook
from b24app.sandbox.tochka.state import b64url

DOC_INCOMING_PAYMENT = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJTaWRlUGF5ZXIiOiB7ImJhbmtDb2RlIjogIjAwMDAwMDAwMCIsICJiYW5rTmF"
    "tZSI6ICJcdTA0MWVcdTA0MWVcdTA0MWUgXHUwNDExXHUwNDMwXHUwNDNkXHUwNDNhIFx1MDQyMlx1MDQzZVx1MDQ0N1x1MDQzYVx"
    "1MDQzMCIsICJiYW5rQ29ycmVzcG9uZGVudEFjY291bnQiOiAiMDAwMDAwMDAwMDAwMDAwMDAwMDAiLCAiYWNjb3VudCI6ICIwMDA"
    "wMDAwMDAwMDAwMDAwMDAwMCIsICJuYW1lIjogIlx1MDQxOFx1MDQxZiBcdTA0MjJcdTA0MzVcdTA0NDFcdTA0NDIiLCAiYW1vdW5"
    "0IjogIjQwLjAiLCAiY3VycmVuY3kiOiAiUlVCIiwgImlubiI6ICIwMDAwMDAwMDAwIiwgImtwcCI6ICIwMDAwMDAwMDAwIn0sICJ"
    "TaWRlUmVjaXBpZW50IjogeyJiYW5rQ29kZSI6ICIwMDAwMDAwMDAiLCAiYmFua05hbWUiOiAiXHUwNDFlXHUwNDFlXHUwNDFlIFx"
    "1MDQxMVx1MDQzMFx1MDQzZFx1MDQzYSBcdTA0MjJcdTA0M2VcdTA0NDdcdTA0M2FcdTA0MzAiLCAiYmFua0NvcnJlc3BvbmRlbnR"
    "BY2NvdW50IjogIjAwMDAwMDAwMDAwMDAwMDAwMDAwIiwgImFjY291bnQiOiAiMDAwMDAwMDAwMDAwMDAwMDAwMDAiLCAibmFtZSI"
    "6ICJcdTA0MThcdTA0MWYgXHUwNDIyXHUwNDM1XHUwNDQxXHUwNDQyIiwgImFtb3VudCI6ICI0MC4wIiwgImN1cnJlbmN5IjogIlJ"
    "VQiIsICJpbm4iOiAiMDAwMDAwMDAwMCIsICJrcHAiOiAiMDAwMDAwMDAwMCJ9LCAicHVycG9zZSI6ICJcdTA0MjJcdTA0MzVcdTA"
    "0NDFcdTA0NDJcdTA0M2VcdTA0MzJcdTA0M2VcdTA0MzUgXHUwNDNkXHUwNDMwXHUwNDM3XHUwNDNkXHUwNDMwXHUwNDQ3XHUwNDM"
    "1XHUwNDNkXHUwNDM4XHUwNDM1IFx1MDQzZlx1MDQzYlx1MDQzMFx1MDQ0Mlx1MDQzNVx1MDQzNlx1MDQzMCIsICJkb2N1bWVudE5"
    "1bWJlciI6ICIwMDAwMCIsICJwYXltZW50SWQiOiAiMDAwMDAwMDAwMCIsICJkYXRlIjogIjIwMTgtMTAtMDEiLCAid2ViaG9va1R"
    "5cGUiOiAiaW5jb21pbmdQYXltZW50IiwgImN1c3RvbWVyQ29kZSI6ICIzMDAxMjMxMjMifQ.j7FCYrHL6pmR7m8TZxtBPBdsHG3u"
    "Ou6bBl7HZq-VaK_LDj7Lyjb_B0L6zWZjVTRWvyfi6CZ-T-yT8IWzXdN5csoIEiwSuzLeC17oW-9c359Z5AYbL9x4SHSlYd3Q_hPM"
    "4DQVxPnPKb_IYpZGDCTovU_wtlAxiBdXQbY3qWEzzDzCuqZNjlVQalu7XipuSt7nNDBuwcDWJAC8Ry0U7UwRH6wboufhL7WcrQgs"
    "En-2ZV--sKzinhUyfyYMw8_cFt9MNX3x_x3Fhu56708MDviu57O5u9t-diWrw2X75QKjnlf-PAamb0idK_8bJ5XbLXymnaBuYgSZ"
    "Sd-HZMHYLWiMHDL-z1OIsLgPKanUPJeKsSlmiVA1VJH2oZVRMv9Pf05O_cbN26d-LIjqn9z_m8XeZ1w0I9sfGP96IfT7xONsTLdb"
    "TCiKAJ-he4nzscxpzQc3tYnaeqETTZiyjB1U_chh88bG2n_0tNlQEtRT3j0sPyCWX3qLSFlkp6kKmQkIfeBn"
)
DOC_JWK = {"kty": "RSA", "e": "AQAB", "n": (
    "rwm77av7GIttq-JF1itEgLCGEZW_zz16RlUQVYlLbJtyRSu61fCec_rroP6PxjXU2uLzUOaGaLgAPeUZAJrGuVp9nryKgbZceHck"
    "dHDYgJd9TsdJ1MYUsXaOb9joN9vmsCscBx1lwSlFQyNQsHUsrjuDk-opf6RCuazRQ9gkoDCX70HV8WBMFoVm-YWQKJHZEaIQxg_D"
    "U4gMFyKRkDGKsYKA0POL-UgWA1qkg6nHY5BOMKaqxbc5ky87muWB5nNk4mfmsckyFv9j1gBiXLKekA_y4UwG2o1pbOLpJS3bP_c9"
    "5rm4M9ZBmGXqfOQhbjz8z-s9C11i-jmOQ2ByohS-ST3E5sqBzIsxxrxyQDTw--bZNhzpbciyYW4GfkkqyeYoOPd_84jPTBDKQXss"
    "vj8ZOj2XboS77tvEO1n1WlwUzh8HPCJod5_fEgSXuozpJtOggXBv0C2ps7yXlDZf-7Jar0UYc_NJEHJF-xShlqd6Q3sVL02PhSCM"
    "-ibn9DN9BKmD"
)}


def test_the_docs_example_incoming_payment_verifies_with_the_docs_key():
    claims = verify_webhook(DOC_INCOMING_PAYMENT, [public_key_from_jwk(DOC_JWK)])
    assert claims["webhookType"] == "incomingPayment" and claims["customerCode"] == "300123123"
    assert claims["SideRecipient"]["account"] == "0" * 20 and claims["SidePayer"]["amount"] == "40.0"
    assert set(claims) == {"SidePayer", "SideRecipient", "purpose", "documentNumber", "paymentId", "date",
                           "webhookType", "customerCode"}  # no exp, iat or jti: replays are ours to refuse
    header = json.loads(_b64url(DOC_INCOMING_PAYMENT.split(".")[0]))
    assert header == {"typ": "JWT", "alg": "RS256"}


def test_the_docs_example_altered_or_checked_with_another_key_is_refused():
    head, body, sig = DOC_INCOMING_PAYMENT.split(".")
    claims = json.loads(_b64url(body))
    claims["SidePayer"]["amount"] = "40000.0"
    altered = ".".join([head, b64url(json.dumps(claims).encode()), sig])
    with pytest.raises(WebhookRejected) as exc:
        verify_webhook(altered, [public_key_from_jwk(DOC_JWK)])
    assert exc.value.reason == "signature"
    other = {**DOC_JWK, "n": DOC_JWK["n"][:-4] + "AAAB"}
    with pytest.raises(WebhookRejected):
        verify_webhook(DOC_INCOMING_PAYMENT, [public_key_from_jwk(other)])
