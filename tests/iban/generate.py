#!/usr/bin/env python3
"""Generate fixtures/iban/schwifty.json: IBANs that the PyPI package `schwifty`
accepts or rejects, to cross-check Folio's IBAN parser against an independent
implementation.

Usage:
    python3 -m venv /tmp/iban-venv && /tmp/iban-venv/bin/pip install schwifty==2026.10.1
    /tmp/iban-venv/bin/python tests/iban/generate.py

The output is deterministic: random IBANs come from a fixed seed.

Only structural checks are compared (length per country and the ISO 7064
mod 97-10 check digits). schwifty also checks the BBAN layout of each country,
which Folio does not, so mutations that keep a valid checksum are left out.
"""

import json
import pathlib
import random

from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

OUT = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "iban" / "schwifty.json"
# The countries in Folio's IBAN length table.
COUNTRIES = (
    "AD AT BE BG CH CY CZ DE DK EE ES FI FR GB GI GR HR HU IE IS IT LI LT LU LV MC MT NL NO "
    "PL PT RO SE SI SK SM VA"
).split()
PER_COUNTRY = 4
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def schwifty_accepts(text):
    try:
        IBAN(text)
        return True
    except SchwiftyException:
        return False


def mutate(rng, iban):
    """Return (mutated IBAN, reason) that breaks the length or the checksum."""
    kind = rng.choice(["substitute", "transpose", "drop", "insert"])
    chars = list(iban)
    position = rng.randrange(4, len(chars) - 1)
    if kind == "substitute":
        chars[position] = rng.choice([c for c in "0123456789" if c != chars[position]])
    elif kind == "transpose":
        chars[position], chars[position + 1] = chars[position + 1], chars[position]
    elif kind == "drop":
        del chars[position]
    else:
        chars.insert(position, rng.choice(ALPHABET))
    return "".join(chars), kind


def main():
    rng = random.Random(13616)
    valid, invalid = [], []
    for country in COUNTRIES:
        for _ in range(PER_COUNTRY):
            iban = IBAN.random(country_code=country, random=rng, use_registry=False)
            valid.append({"electronic": str(iban.compact), "formatted": iban.formatted})
            for _ in range(10):
                text, kind = mutate(rng, str(iban.compact))
                # A transposition of equal characters or a lucky substitution can
                # leave the IBAN valid; keep only what schwifty rejects.
                if not schwifty_accepts(text):
                    invalid.append({"iban": text, "mutation": kind})
                    break
    OUT.parent.mkdir(parents=True, exist_ok=True)
    body = {"generator": "schwifty 2026.10.1 via tests/iban/generate.py", "valid": valid, "invalid": invalid}
    OUT.write_text(json.dumps(body, indent=1) + "\n", encoding="ascii")


if __name__ == "__main__":
    main()
