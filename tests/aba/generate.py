#!/usr/bin/env python3
"""Generate ABA fixture files with the PyPI package `aba`, an ABA writer that
shares no code with Folio's parser.

Each fixtures/aba/generated-NAME.aba gets a sidecar generated-NAME.json with the
records the generator put in, so domain/tests/aba_fixtures.rs can check that the
parser reads back exactly those values.

Usage:
    python3 -m venv /tmp/aba-venv && /tmp/aba-venv/bin/pip install aba==0.2
    /tmp/aba-venv/bin/python tests/aba/generate.py

The output is deterministic: the random records come from a fixed seed.

`aba` 0.2 adds only transaction code 53 to the credit total of the file total
record, so a file with code 50 would get a wrong total. Every generated record
therefore uses code 53.
"""

import datetime
import json
import pathlib
import random

from aba import generator, records

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "aba"
PROCESSING_DATE = datetime.date(2026, 1, 5)
HEADER = {
    "financial_institution": "WBC",
    "user_name": "FOLIO TEST PAYROLL",
    "user_id": "012345",
    "description": "PAYROLL",
}
TRACE_BSB = "062-000"
TRACE_ACCOUNT = "12223123"
REMITTER = "FOLIO TEST"


def record(bsb, account, amount, title, reference):
    """Return one detail record as the sidecar describes it."""
    return {
        "bsb": bsb,
        "account_number": account,
        "transaction_code": 53,
        "amount_minor": amount,
        "account_title": title,
        "lodgement_reference": reference,
        "trace_bsb": TRACE_BSB,
        "trace_account_number": TRACE_ACCOUNT,
        "remitter_name": REMITTER,
    }


def small():
    return [
        record("062-000", "12345678", 150000, "J SMITH", "PAY 2026-01"),
        record("033-001", "987654", 275050, "A NGUYEN", "PAY 2026-01"),
        record("082-124", "111222333", 99, "R PATEL", "PAY 2026-01"),
    ]


def fifty():
    rng = random.Random(20260105)
    rows = []
    for i in range(50):
        bsb = f"{rng.randrange(1000):03d}-{rng.randrange(1000):03d}"
        account = str(rng.randrange(1, 10 ** rng.randint(1, 9))).zfill(rng.randint(1, 9))
        # Keep the sum within the 10 digits of the file total fields.
        amount = rng.randrange(1, 100_000_000)
        rows.append(record(bsb, account[-9:], amount, f"EMPLOYEE {i:03d}", f"PAYRUN 42 #{i}"))
    return rows


def leading_zeros():
    return [
        record("012-003", "000123", 1, "ZERO ONE", "REF 0001"),
        record("001-001", "000000001", 7, "ZERO TWO", "000000000000000001"),
        record("000-000", "012345678", 100, "ZERO THREE", "0"),
        record("010-010", "0000001", 8_999_999_999, "LARGE AMOUNT", "LARGE"),
        record("062-000", "00001", 1_000_000, "TEN THOUSAND", "REF 0002"),
    ]


def odd_names():
    return [
        record("062-000", "123", 1001, "O'BRIEN & SONS", "INV #42/a"),
        record("062-000", "124", 1002, "SMITH-JONES (TRUSTEE)", "A;B:C,D.E"),
        record("062-000", "125", 1003, "A/C 42 \"QUOTED\" PTY. LTD.", "{braces}[sq]<ang>"),
        # Exactly 32 characters, filling the field with no blank fill.
        record("062-000", "126", 1004, "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", "~`!@$%^*_+=|\\?"),
        record("062-000", "127", 1005, "mixed Case name", "lower case ref"),
        record("062-000", "128", 1006, "DOUBLE  SPACE  NAME", "TRAILING DOTS..."),
    ]


def render(rows, line_ending):
    header = records.DescriptiveRecord(
        user_bank=HEADER["financial_institution"],
        user_name=HEADER["user_name"],
        user_number=HEADER["user_id"],
        description=HEADER["description"],
        date=PROCESSING_DATE,
    )
    aba_file = generator.AbaFile(header)
    for row in rows:
        aba_file.add_record(
            records.DetailRecord(
                bsb=row["bsb"],
                account_number=row["account_number"],
                txn_code=str(row["transaction_code"]),
                amount=row["amount_minor"],
                payee_name=row["account_title"],
                lodgment_ref=row["lodgement_reference"],
                sender_bsb=row["trace_bsb"],
                sender_account=row["trace_account_number"],
                remitter_name=row["remitter_name"],
            )
        )
    return aba_file.render_to_string(line_ending=line_ending)


def write(name, rows, line_ending):
    text = render(rows, line_ending)
    (FIXTURES / f"generated-{name}.aba").write_bytes(text.encode("ascii"))
    for line, row in enumerate(rows, start=2):
        row["line"] = line
    sidecar = {
        "generator": "PyPI aba 0.2 via tests/aba/generate.py",
        "line_ending": line_ending,
        "descriptive": {**HEADER, "processing_date": PROCESSING_DATE.strftime("%d%m%y")},
        "records": rows,
        "credit_total_minor": sum(r["amount_minor"] for r in rows),
        "debit_total_minor": 0,
        "record_count": len(rows),
    }
    path = FIXTURES / f"generated-{name}.json"
    path.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="ascii")


def main():
    FIXTURES.mkdir(parents=True, exist_ok=True)
    write("small", small(), "\r\n")
    write("50-records", fifty(), "\n")
    write("leading-zeros", leading_zeros(), "\r\n")
    write("odd-names", odd_names(), "\r\n")


if __name__ == "__main__":
    main()
