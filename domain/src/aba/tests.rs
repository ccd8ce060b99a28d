//! Unit tests of the ABA parser on files built field by field.

use super::*;

const HEADER: &str = concat!(
    "0",
    "                 ",
    "01",
    "WBC",
    "       ",
    "ACME PAYROLL PTY LTD      ",
    "123456",
    "PAYROLL     ",
    "040126",
    "                                        ",
);

/// Builds a detail record; widths follow the detail record layout.
fn detail(bsb: &str, account: &str, code: &str, amount: u64, title: &str) -> String {
    let line = format!(
        "1{bsb:7}{account:>9} {code:2}{amount:010}{title:<32}{reference:<18}{trace:7}{trace_acct:>9}{remitter:<16}{tax:08}",
        reference = "INV 42",
        trace = "062-000",
        trace_acct = "12223123",
        remitter = "ACME PAYROLL",
        tax = 0,
    );
    assert_eq!(line.len(), 120, "test detail record width");
    line
}

fn trailer(net: u64, credit: u64, debit: u64, count: u32) -> String {
    let line = format!(
        "7999-999{blank:12}{net:010}{credit:010}{debit:010}{blank:24}{count:06}{blank:40}",
        blank = ""
    );
    assert_eq!(line.len(), 120, "test trailer width");
    line
}

fn file(lines: &[String], ending: &str) -> Vec<u8> {
    lines.join(ending).into_bytes()
}

fn valid_lines() -> Vec<String> {
    vec![
        HEADER.to_owned(),
        detail("012-003", "000123", "53", 1_234, "SMITH J"),
        detail("123-456", "987654321", "50", 99, "JONES & CO"),
        trailer(1_333, 1_333, 0, 2),
    ]
}

fn parse_err(lines: &[String]) -> AbaError {
    parse(&file(lines, "\r\n")).expect_err("file must be rejected")
}

/// A named edit of one record, for tables of invalid fields.
type FieldEdit = (&'static str, fn(&mut String));

fn assert_err(err: &AbaError, line: u32, field: &str) {
    assert_eq!((err.line, err.field), (line, field), "{err}");
}

#[test]
fn header_is_120_characters() {
    assert_eq!(HEADER.len(), 120);
}

#[test]
fn parses_valid_file() {
    let parsed = parse(&file(&valid_lines(), "\r\n")).unwrap();
    assert_eq!(parsed.descriptive.reel_sequence, 1);
    assert_eq!(parsed.descriptive.financial_institution, "WBC");
    assert_eq!(parsed.descriptive.user_name, "ACME PAYROLL PTY LTD");
    assert_eq!(parsed.descriptive.user_id, "123456");
    assert_eq!(parsed.descriptive.description, "PAYROLL");
    assert_eq!(parsed.descriptive.processing_date, "040126");

    let first = &parsed.details[0];
    assert_eq!(first.line, 2);
    assert_eq!(first.bsb.to_string(), "012-003");
    assert_eq!(first.account_number.as_str(), "000123");
    assert_eq!(first.indicator, ' ');
    assert_eq!(first.transaction_code.get(), 53);
    assert_eq!(first.amount_minor, 1_234);
    assert_eq!(first.account_title, "SMITH J");
    assert_eq!(first.lodgement_reference, "INV 42");
    assert_eq!(first.trace_bsb.to_string(), "062-000");
    assert_eq!(first.trace_account_number.as_str(), "12223123");
    assert_eq!(first.remitter_name, "ACME PAYROLL");
    assert_eq!(first.withholding_tax_minor, 0);
    assert_eq!(parsed.details[1].account_title, "JONES & CO");

    let total = parsed.total;
    assert_eq!(
        (total.net_total_minor, total.credit_total_minor),
        (1_333, 1_333)
    );
    assert_eq!((total.debit_total_minor, total.record_count), (0, 2));
}

#[test]
fn line_endings_lf_crlf_and_final() {
    let lines = valid_lines();
    let crlf = parse(&file(&lines, "\r\n")).unwrap();
    assert_eq!(parse(&file(&lines, "\n")), Ok(crlf.clone()));
    let mut ended = file(&lines, "\r\n");
    ended.extend_from_slice(b"\r\n");
    assert_eq!(parse(&ended), Ok(crlf.clone()));
    let mut ended = file(&lines, "\n");
    ended.push(b'\n');
    assert_eq!(parse(&ended), Ok(crlf));
}

#[test]
fn mixed_line_endings_rejected() {
    let lines = valid_lines();
    let mut bytes = format!("{}\r\n{}\n", lines[0], lines[1]).into_bytes();
    bytes.extend(file(&lines[2..], "\r\n"));
    assert_err(&parse(&bytes).unwrap_err(), 2, "line_ending");

    let mut bytes = format!("{}\n{}\r\n", lines[0], lines[1]).into_bytes();
    bytes.extend(file(&lines[2..], "\n"));
    assert_err(&parse(&bytes).unwrap_err(), 2, "record");
}

#[test]
fn bare_cr_rejected() {
    let err = parse(&file(&valid_lines(), "\r")).unwrap_err();
    assert_err(&err, 1, "record");
    assert_eq!(err.value, "\\r");
}

#[test]
fn blank_line_rejected() {
    let mut lines = valid_lines();
    lines.insert(2, String::new());
    let err = parse_err(&lines);
    assert_err(&err, 3, "record");
    assert_eq!(err.value, "0 characters");
}

#[test]
fn empty_and_header_only_rejected() {
    assert_err(&parse(b"").unwrap_err(), 1, "record");
    let err = parse(HEADER.as_bytes()).unwrap_err();
    assert_err(&err, 1, "record");
    assert_eq!(err.value, "end of file");
}

#[test]
fn no_details_rejected() {
    let err = parse_err(&[HEADER.to_owned(), trailer(0, 0, 0, 0)]);
    assert_err(&err, 2, "record_type");
}

#[test]
fn record_order_enforced() {
    let mut lines = valid_lines();
    lines.swap(0, 1);
    assert_err(&parse_err(&lines), 1, "record_type");

    let mut lines = valid_lines();
    lines.insert(2, HEADER.to_owned());
    assert_err(&parse_err(&lines), 3, "record_type");

    let mut lines = valid_lines();
    lines.pop();
    let err = parse_err(&lines);
    assert_err(&err, 3, "record_type");
    assert_eq!(err.value, "1");
}

#[test]
fn totals_checked() {
    let base = valid_lines();
    let with_trailer = |t: String| {
        let mut lines = base.clone();
        lines[3] = t;
        parse_err(&lines)
    };
    let err = with_trailer(trailer(1_333, 1_333, 0, 3));
    assert_err(&err, 4, "record_count");
    assert_eq!(
        (err.value.as_str(), err.expected.starts_with("2,")),
        ("3", true)
    );
    assert_err(
        &with_trailer(trailer(1_333, 1_334, 0, 2)),
        4,
        "credit_total",
    );
    assert_err(&with_trailer(trailer(1_333, 1_333, 1, 2)), 4, "debit_total");
    assert_err(&with_trailer(trailer(1_332, 1_333, 0, 2)), 4, "net_total");
}

#[test]
fn debits_counted_and_net_is_difference() {
    let lines = vec![
        HEADER.to_owned(),
        detail("012-003", "1", "13", 500, "DEBTOR"),
        detail("012-003", "2", "53", 200, "PAYEE"),
        trailer(300, 200, 500, 2),
    ];
    let parsed = parse(&file(&lines, "\n")).unwrap();
    assert_eq!(parsed.total.net_total_minor, 300);
    let err = parsed.check_payments().unwrap_err();
    assert_err(&err, 2, "transaction_code");
    assert_eq!(err.value, "13");
}

#[test]
fn payment_codes_enforced() {
    for (code, ok) in [
        ("50", true),
        ("53", true),
        ("51", false),
        ("54", false),
        ("57", false),
    ] {
        let lines = vec![
            HEADER.to_owned(),
            detail("012-003", "1", code, 500, "PAYEE"),
            trailer(500, 500, 0, 1),
        ];
        let parsed = parse(&file(&lines, "\n")).unwrap();
        assert_eq!(parsed.check_payments().is_ok(), ok, "code {code}");
    }
}

#[test]
fn unknown_transaction_code_rejected() {
    for code in ["99", "12", "5 ", "AB"] {
        let mut lines = valid_lines();
        lines[1] = detail("012-003", "000123", code, 1_234, "SMITH J");
        let err = parse_err(&lines);
        assert_err(&err, 2, "transaction_code");
        assert_eq!(err.value, code);
    }
}

#[test]
fn detail_fields_checked() {
    let cases: [FieldEdit; 10] = [
        ("bsb", |l| l.replace_range(1..8, "0120003")),
        ("bsb", |l| l.replace_range(1..8, "01a-003")),
        ("account_number", |l| l.replace_range(8..17, "000000000")),
        ("account_number", |l| l.replace_range(8..17, "123      ")),
        ("indicator", |l| l.replace_range(17..18, "Z")),
        ("amount", |l| l.replace_range(20..30, "00000012.3")),
        ("amount", |l| l.replace_range(20..30, "0000000000")),
        ("account_title", |l| {
            l.replace_range(30..62, &" ".repeat(32))
        }),
        ("trace_bsb", |l| l.replace_range(80..87, "062 000")),
        ("withholding_tax", |l| l.replace_range(112..120, "00000100")),
    ];
    for (field, edit) in cases {
        let mut lines = valid_lines();
        edit(&mut lines[1]);
        assert_eq!(lines[1].len(), 120);
        assert_err(&parse_err(&lines), 2, field);
    }
}

#[test]
fn withholding_tax_with_indicator_parses() {
    let mut lines = valid_lines();
    lines[1].replace_range(17..18, "W");
    lines[1].replace_range(112..120, "00000100");
    let parsed = parse(&file(&lines, "\n")).unwrap();
    assert_eq!(parsed.details[0].withholding_tax_minor, 100);
    assert_err(&parsed.check_payments().unwrap_err(), 2, "withholding_tax");
}

#[test]
fn descriptive_fields_checked() {
    let cases: [FieldEdit; 8] = [
        ("reserved", |l| l.replace_range(5..6, "X")),
        ("reel_sequence", |l| l.replace_range(18..20, "00")),
        ("financial_institution", |l| l.replace_range(20..23, "wbc")),
        ("user_name", |l| l.replace_range(30..56, &" ".repeat(26))),
        ("user_id", |l| l.replace_range(56..62, "12345A")),
        ("description", |l| l.replace_range(62..74, &" ".repeat(12))),
        ("processing_date", |l| l.replace_range(74..80, "310226")),
        ("reserved", |l| l.replace_range(119..120, "9")),
    ];
    for (field, edit) in cases {
        let mut lines = valid_lines();
        edit(&mut lines[0]);
        assert_err(&parse_err(&lines), 1, field);
    }
}

#[test]
fn trailer_fields_checked() {
    let cases: [FieldEdit; 4] = [
        ("bsb_filler", |l| l.replace_range(1..8, "999999 ")),
        ("reserved", |l| l.replace_range(10..11, "0")),
        ("net_total", |l| l.replace_range(20..30, "         1")),
        ("reserved", |l| l.replace_range(60..61, "X")),
    ];
    for (field, edit) in cases {
        let mut lines = valid_lines();
        edit(&mut lines[3]);
        assert_err(&parse_err(&lines), 4, field);
    }
}

#[test]
fn error_message_names_everything() {
    let mut lines = valid_lines();
    lines[2].replace_range(1..8, "12-3456");
    let message = parse_err(&lines).to_string();
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("bsb"), "{message}");
    assert!(message.contains("\"12-3456\""), "{message}");
    assert!(message.contains("nnn-nnn"), "{message}");
}

#[test]
fn batch_event_from_file() {
    let bytes = file(&valid_lines(), "\r\n");
    let parsed = parse(&bytes).unwrap();
    let batch_id = Uuid::from_u128(7);
    let event = parsed.batch_imported(batch_id, &bytes);
    assert_eq!(event.batch_id, batch_id);
    assert_eq!(event.file_blake3, *blake3::hash(&bytes).as_bytes());
    assert_eq!(
        (
            event.detail_count,
            event.credit_total_minor,
            event.debit_total_minor
        ),
        (2, 1_333, 0)
    );
    assert_eq!(event.user_name, "ACME PAYROLL PTY LTD");
    assert_eq!(event.processing_date, "040126");
    let account = parsed.details[0].payee_account();
    assert_eq!(
        account,
        PayeeAccount::Bsb {
            bsb: "012003".into(),
            account: "000123".into()
        }
    );
}

#[test]
fn detail_to_payment_request() {
    let parsed = parse(&file(&valid_lines(), "\n")).unwrap();
    let mut allow_list = AllowList::new();
    let payee_id = Uuid::from_u128(1);
    let account = PayeeAccount::Bsb {
        bsb: "012-003".into(),
        account: "000123".into(),
    };
    let added = allow_list
        .propose_add(payee_id, "Smith J", &account)
        .unwrap();
    allow_list
        .apply(&crate::events::DomainEvent::PayeeAdded(added))
        .unwrap();
    let (payment_id, batch_id) = (Uuid::from_u128(2), Uuid::from_u128(3));

    let request = parsed.details[0]
        .payment_request(&allow_list, payment_id, batch_id)
        .unwrap();
    assert_eq!(request.payment_id, payment_id);
    assert_eq!(request.payee_id, payee_id);
    assert_eq!(request.amount_minor, 1_234);
    assert_eq!(request.currency, "AUD");
    assert_eq!(request.reference, "INV 42");
    assert_eq!(request.source, PaymentSource::AbaFile { batch_id, line: 2 });

    let err = parsed.details[1]
        .payment_request(&allow_list, payment_id, batch_id)
        .unwrap_err();
    let expected = PaymentRejection::AccountNotAllowListed {
        account: "123-456 987654321".into(),
    };
    assert_eq!(err, expected);
    assert_eq!(err.code(), "account_not_allow_listed");
}

/// Returns the next value of a xorshift64 generator, so the corruption test is
/// repeatable without a random number crate.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn corrupted_files_never_panic() {
    let original = file(&valid_lines(), "\r\n");
    let replacements = b" 0123456789-\r\nA\x00\xff";
    let mut state = 0x9E37_79B9_7F4A_7C15;
    let mut rejected = 0;
    for _ in 0..3_000 {
        let mut bytes = original.clone();
        for _ in 0..=next_random(&mut state) % 3 {
            let index = (next_random(&mut state) % bytes.len() as u64) as usize;
            let pick = (next_random(&mut state) % replacements.len() as u64) as usize;
            match next_random(&mut state) % 3 {
                0 => bytes[index] = replacements[pick],
                1 => bytes.insert(index, replacements[pick]),
                _ => {
                    bytes.remove(index);
                }
            }
        }
        // Any outcome but a panic is fine; a file that still parses must still
        // have totals that match its details.
        match parse(&bytes) {
            Ok(parsed) => {
                let credits = parsed
                    .details
                    .iter()
                    .filter(|d| !d.transaction_code.is_debit());
                let credit: u64 = credits.map(|d| d.amount_minor).sum();
                assert_eq!(parsed.total.credit_total_minor, credit);
            }
            Err(err) => {
                assert!(err.line >= 1);
                rejected += 1;
            }
        }
    }
    assert!(
        rejected > 2_500,
        "only {rejected} corrupted files were rejected"
    );
}
