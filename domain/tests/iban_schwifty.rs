//! Cross-checks the IBAN parser against IBANs that the Python package schwifty
//! generated or rejected (`fixtures/iban/schwifty.json`, written by
//! `tests/iban/generate.py`).

use std::path::PathBuf;

use domain::payments::Iban;
use serde_json::Value;

fn load() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/iban/schwifty.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

#[test]
fn schwifty_valid_ibans_accepted() {
    let fixture = load();
    let valid = fixture["valid"].as_array().expect("valid array");
    assert!(
        valid.len() >= 100,
        "fixture has {} valid IBANs",
        valid.len()
    );
    for case in valid {
        let electronic = case["electronic"].as_str().expect("electronic string");
        let formatted = case["formatted"].as_str().expect("formatted string");
        let iban = Iban::parse(electronic).unwrap_or_else(|e| panic!("{electronic}: {e}"));
        assert_eq!(iban.electronic(), electronic);
        assert_eq!(iban.to_string(), formatted);
        // The paper format parses back to the same IBAN.
        assert_eq!(Iban::parse(formatted).as_ref(), Ok(&iban));
    }
}

#[test]
fn schwifty_invalid_ibans_rejected() {
    let fixture = load();
    let invalid = fixture["invalid"].as_array().expect("invalid array");
    assert!(
        invalid.len() >= 100,
        "fixture has {} invalid IBANs",
        invalid.len()
    );
    for case in invalid {
        let text = case["iban"].as_str().expect("iban string");
        let mutation = case["mutation"].as_str().unwrap_or("?");
        assert!(
            Iban::parse(text).is_err(),
            "{text} ({mutation}) must be rejected"
        );
    }
}
