"""A VAT number's format (2.1 VatNumberValidation, C21): a company asks for an invoice at
the charger. We check what can be checked without a tax office: a Chinese unified social
credit code (GB 32100-2015: 18 characters and its check character), or an EU VAT number's
shape (country prefix and 2-12 characters). Pure."""

from __future__ import annotations

import re

# The 31 characters of a unified social credit code (no I, O, S, V, Z) and the weights of
# its first 17 positions.
USCC = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
EU = re.compile(r"(AT|BE|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO"
                r"|SE|SI|SK|XI)[0-9A-Z+*]{2,12}")


def vat_problem(number: str) -> str | None:
    """Why `number` cannot be a VAT number (None: its format holds)."""
    text = number.strip().upper().replace(" ", "")
    if len(text) == 18 and all(c in USCC for c in text):
        total = sum(USCC.index(c) * w for c, w in zip(text, USCC_WEIGHTS, strict=False))
        check = USCC[(31 - total % 31) % 31]
        if text[17] != check:
            return f"the check character of this credit code is {check}, not {text[17]}"
        return None
    if EU.fullmatch(text):
        return None
    return ("neither an 18-character unified social credit code nor an EU VAT number "
            "(country prefix and 2-12 characters)")
