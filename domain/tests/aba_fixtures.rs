//! Runs the ABA parser over the files in `fixtures/aba` and checks each verdict
//! listed in `fixtures/aba/README.md`.

use std::path::PathBuf;

use domain::aba::{self, AbaError, AbaFile};
use serde_json::Value;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/aba")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn parse_ok(name: &str) -> AbaFile {
    aba::parse(&read(name)).unwrap_or_else(|e| panic!("{name} must parse: {e}"))
}

fn parse_err(name: &str) -> AbaError {
    match aba::parse(&read(name)) {
        Ok(_) => panic!("{name} must be rejected"),
        Err(err) => err,
    }
}

#[test]
fn valid_minimal_accepted() {
    let file = parse_ok("valid-minimal.aba");
    assert_eq!(file.details.len(), 1);
    assert_eq!(file.total.credit_total_minor, 120_050);
    assert_eq!(file.details[0].account_number.as_str(), "000123456");
    assert_eq!(file.details[0].transaction_code.get(), 50);
    assert_eq!(file.check_payments(), Ok(()));
}

#[test]
fn crlf_accepted() {
    let bytes = read("crlf.aba");
    assert!(
        bytes.windows(2).filter(|w| w == b"\r\n").count() == 4,
        "fixture must use CRLF"
    );
    let file = parse_ok("crlf.aba");
    assert_eq!(file.details.len(), 2);
    assert_eq!(file.total.credit_total_minor, 120_149);
    assert_eq!(file.details[1].account_title, "O'BRIEN J");
}

#[test]
fn rejected_fixtures_point_at_field() {
    let cases = [
        ("bad-total.aba", 4, "credit_total", "120150"),
        ("bad-count.aba", 4, "record_count", "3"),
        ("bad-bsb.aba", 3, "bsb", "12-3456"),
        ("short-line.aba", 2, "record", "119 characters"),
        ("missing-trailer.aba", 3, "record_type", "1"),
        ("non-digit-amount.aba", 2, "amount", "000012005O"),
    ];
    for (name, line, field, value) in cases {
        let err = parse_err(name);
        assert_eq!(err.line, line, "{name}: {err}");
        assert_eq!(err.field, field, "{name}: {err}");
        assert_eq!(err.value, value, "{name}: {err}");
        assert!(!err.expected.is_empty(), "{name}: {err}");
    }
}

#[test]
fn generated_files_match_sidecars() {
    let names = ["small", "50-records", "leading-zeros", "odd-names"];
    for name in names {
        let file = parse_ok(&format!("generated-{name}.aba"));
        let sidecar_path = fixture_path(&format!("generated-{name}.json"));
        let sidecar_text = std::fs::read_to_string(&sidecar_path).expect("sidecar exists");
        let sidecar: Value = serde_json::from_str(&sidecar_text).expect("sidecar is JSON");
        check_against_sidecar(name, &file, &sidecar);
    }
}

fn check_against_sidecar(name: &str, file: &AbaFile, sidecar: &Value) {
    let descriptive = &sidecar["descriptive"];
    assert_eq!(
        file.descriptive.financial_institution,
        descriptive["financial_institution"]
    );
    assert_eq!(file.descriptive.user_name, descriptive["user_name"]);
    assert_eq!(file.descriptive.user_id, descriptive["user_id"]);
    assert_eq!(file.descriptive.description, descriptive["description"]);
    assert_eq!(
        file.descriptive.processing_date,
        descriptive["processing_date"]
    );

    let expected = sidecar["records"].as_array().expect("records array");
    assert_eq!(file.details.len(), expected.len(), "{name}");
    for (detail, want) in file.details.iter().zip(expected) {
        let at = format!("{name} line {}", detail.line);
        assert_eq!(
            u64::from(detail.line),
            want["line"].as_u64().unwrap(),
            "{at}"
        );
        assert_eq!(detail.bsb.to_string(), want["bsb"], "{at}");
        assert_eq!(
            detail.account_number.as_str(),
            want["account_number"],
            "{at}"
        );
        assert_eq!(
            u64::from(detail.transaction_code.get()),
            want["transaction_code"],
            "{at}"
        );
        assert_eq!(
            detail.amount_minor,
            want["amount_minor"].as_u64().unwrap(),
            "{at}"
        );
        assert_eq!(detail.account_title, want["account_title"], "{at}");
        assert_eq!(
            detail.lodgement_reference, want["lodgement_reference"],
            "{at}"
        );
        assert_eq!(detail.trace_bsb.to_string(), want["trace_bsb"], "{at}");
        assert_eq!(
            detail.trace_account_number.as_str(),
            want["trace_account_number"],
            "{at}"
        );
        assert_eq!(detail.remitter_name, want["remitter_name"], "{at}");
    }

    assert_eq!(
        file.total.credit_total_minor,
        sidecar["credit_total_minor"].as_u64().unwrap()
    );
    assert_eq!(
        file.total.debit_total_minor,
        sidecar["debit_total_minor"].as_u64().unwrap()
    );
    assert_eq!(
        u64::from(file.total.record_count),
        sidecar["record_count"].as_u64().unwrap()
    );
    assert_eq!(file.check_payments(), Ok(()), "{name}");
}
