//! Field positions of the three ABA record types, and the checks that read one
//! field out of a 120-character record.
//!
//! Positions are 1-based and inclusive, as the format describes them, so each
//! table below can be compared line by line with a description of the format.

use super::error::AbaError;
use crate::payments::{AccountNumber, Bsb};

/// Length of every record in bytes, without the line ending.
pub(crate) const RECORD_LEN: usize = 120;

/// A named, fixed-width field: characters `start..=end`, counted from 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    start: usize,
    end: usize,
}

const fn field(name: &'static str, start: usize, end: usize) -> Field {
    assert!(start >= 1, "field positions start at 1");
    assert!(start <= end, "field ends before it starts");
    assert!(end <= RECORD_LEN, "field ends past the record");
    Field { name, start, end }
}

pub(crate) const RECORD_TYPE: Field = field("record_type", 1, 1);

/// Descriptive record (type 0), the first record of a file.
pub(crate) mod descriptive {
    use super::{field, Field};

    pub(crate) const BLANK_2_18: Field = field("reserved", 2, 18);
    pub(crate) const REEL_SEQUENCE: Field = field("reel_sequence", 19, 20);
    pub(crate) const FINANCIAL_INSTITUTION: Field = field("financial_institution", 21, 23);
    pub(crate) const BLANK_24_30: Field = field("reserved", 24, 30);
    pub(crate) const USER_NAME: Field = field("user_name", 31, 56);
    pub(crate) const USER_ID: Field = field("user_id", 57, 62);
    pub(crate) const DESCRIPTION: Field = field("description", 63, 74);
    pub(crate) const PROCESSING_DATE: Field = field("processing_date", 75, 80);
    pub(crate) const BLANK_81_120: Field = field("reserved", 81, 120);
}

/// Detail record (type 1), one per transaction.
pub(crate) mod detail {
    use super::{field, Field};

    pub(crate) const BSB: Field = field("bsb", 2, 8);
    pub(crate) const ACCOUNT_NUMBER: Field = field("account_number", 9, 17);
    pub(crate) const INDICATOR: Field = field("indicator", 18, 18);
    pub(crate) const TRANSACTION_CODE: Field = field("transaction_code", 19, 20);
    pub(crate) const AMOUNT: Field = field("amount", 21, 30);
    pub(crate) const ACCOUNT_TITLE: Field = field("account_title", 31, 62);
    pub(crate) const LODGEMENT_REFERENCE: Field = field("lodgement_reference", 63, 80);
    pub(crate) const TRACE_BSB: Field = field("trace_bsb", 81, 87);
    pub(crate) const TRACE_ACCOUNT: Field = field("trace_account_number", 88, 96);
    pub(crate) const REMITTER_NAME: Field = field("remitter_name", 97, 112);
    pub(crate) const WITHHOLDING_TAX: Field = field("withholding_tax", 113, 120);
}

/// File total record (type 7), the last record of a file.
pub(crate) mod total {
    use super::{field, Field};

    pub(crate) const BSB_FILLER: Field = field("bsb_filler", 2, 8);
    pub(crate) const BLANK_9_20: Field = field("reserved", 9, 20);
    pub(crate) const NET_TOTAL: Field = field("net_total", 21, 30);
    pub(crate) const CREDIT_TOTAL: Field = field("credit_total", 31, 40);
    pub(crate) const DEBIT_TOTAL: Field = field("debit_total", 41, 50);
    pub(crate) const BLANK_51_74: Field = field("reserved", 51, 74);
    pub(crate) const RECORD_COUNT: Field = field("record_count", 75, 80);
    pub(crate) const BLANK_81_120: Field = field("reserved", 81, 120);
}

/// One record: exactly 120 printable ASCII bytes, with its line number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) line: u32,
    bytes: &'a [u8],
}

impl<'a> Record<'a> {
    /// Checks the characters and the length of a line.
    pub(crate) fn new(line: u32, bytes: &'a [u8]) -> Result<Self, AbaError> {
        if let Some(index) = bytes.iter().position(|b| !(b' '..=b'~').contains(b)) {
            let found = bytes[index].escape_ascii().to_string();
            let expected = format!(
                "printable ASCII at character {}; lines end with CRLF or LF only",
                index + 1
            );
            return Err(AbaError::new(line, "record", found, expected));
        }
        if bytes.len() != RECORD_LEN {
            let value = format!("{} characters", bytes.len());
            return Err(AbaError::new(
                line,
                "record",
                value,
                "exactly 120 characters",
            ));
        }
        Ok(Self { line, bytes })
    }

    /// Returns a field's text. Records are checked to be ASCII, so any byte range
    /// is a valid string.
    pub(crate) fn raw(&self, field: Field) -> &'a str {
        let bytes = &self.bytes[field.start - 1..field.end];
        std::str::from_utf8(bytes).expect("record bytes are printable ASCII")
    }

    pub(crate) fn record_type(&self) -> u8 {
        self.bytes[0]
    }

    fn error(&self, field: Field, expected: impl Into<String>) -> AbaError {
        AbaError::new(self.line, field.name, self.raw(field), expected)
    }

    /// Requires a field of spaces only.
    pub(crate) fn blank(&self, field: Field) -> Result<(), AbaError> {
        if self.raw(field).bytes().all(|b| b == b' ') {
            return Ok(());
        }
        Err(self.error(field, format!("{} blanks", field.end - field.start + 1)))
    }

    /// Requires an exact value.
    pub(crate) fn literal(&self, field: Field, value: &str) -> Result<(), AbaError> {
        if self.raw(field) == value {
            return Ok(());
        }
        Err(self.error(field, format!("{value:?}")))
    }

    /// Reads a zero-filled number: every character a digit.
    pub(crate) fn number(&self, field: Field) -> Result<u64, AbaError> {
        let text = self.raw(field);
        let width = field.end - field.start + 1;
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.error(field, format!("{width} digits, zero-filled")));
        }
        // Numeric fields have at most 10 digits, so this parse cannot overflow.
        assert!(
            width <= 10,
            "numeric field {} wider than 10 digits",
            field.name
        );
        text.parse()
            .map_err(|_| self.error(field, format!("{width} digits, zero-filled")))
    }

    /// Reads left-justified text with its blank fill removed.
    pub(crate) fn text(&self, field: Field, required: bool) -> Result<String, AbaError> {
        let text = self.raw(field);
        if required && text.trim().is_empty() {
            return Err(self.error(field, "text, not all blanks"));
        }
        if text.starts_with(' ') && !text.trim().is_empty() {
            return Err(self.error(field, "left-justified text (no leading blanks)"));
        }
        Ok(text.trim_end().to_owned())
    }

    /// Reads a BSB written as `nnn-nnn`.
    pub(crate) fn bsb(&self, field: Field) -> Result<Bsb, AbaError> {
        let text = self.raw(field);
        let dashed = text.as_bytes().get(3) == Some(&b'-');
        match Bsb::parse(text) {
            Ok(bsb) if dashed => Ok(bsb),
            _ => Err(self.error(field, "a BSB written as nnn-nnn, such as 062-000")),
        }
    }

    /// Reads an account number: digits, right-justified and blank-filled.
    pub(crate) fn account(&self, field: Field) -> Result<AccountNumber, AbaError> {
        let digits = self.raw(field).trim_start_matches(' ');
        AccountNumber::parse(digits).map_err(|_| {
            self.error(
                field,
                "1 to 9 digits, right-justified and blank-filled, not all zeros",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> Result<Record<'_>, AbaError> {
        Record::new(7, text.as_bytes())
    }

    fn padded(prefix: &str) -> String {
        format!("{prefix:<120}")
    }

    #[test]
    fn record_length_exact() {
        assert!(record(&padded("1")).is_ok());
        let err = record(&"x".repeat(119)).unwrap_err();
        assert_eq!(
            (err.line, err.field, err.value.as_str()),
            (7, "record", "119 characters")
        );
        assert!(record(&"x".repeat(121)).is_err());
    }

    #[test]
    fn record_rejects_non_ascii() {
        let text = format!("{:<119}é", "1");
        let err = record(&text).unwrap_err();
        assert_eq!(err.field, "record");
        assert_eq!(err.value, "\\xc3");
        assert!(err.expected.contains("character 120"), "{err}");
        let err = record(&format!("{:<119}\r", "1")).unwrap_err();
        assert_eq!(err.value, "\\r");
    }

    #[test]
    fn number_requires_digits() {
        let text = padded("1000-000  0012345");
        let rec = record(&text).unwrap();
        assert_eq!(rec.number(field("x", 11, 17)), Ok(12345));
        let err = rec.number(field("x", 9, 17)).unwrap_err();
        assert_eq!(err.value, "  0012345");
    }

    #[test]
    fn bsb_requires_dash() {
        let text = padded("1123456 ");
        let err = record(&text).unwrap().bsb(detail::BSB).unwrap_err();
        assert_eq!((err.field, err.value.as_str()), ("bsb", "123456 "));
        let text = padded("1012-003");
        assert_eq!(
            record(&text)
                .unwrap()
                .bsb(detail::BSB)
                .map(|b| b.to_string()),
            Ok("012-003".into())
        );
    }

    #[test]
    fn account_right_justified() {
        let rec = |account: &str| {
            let text = padded(&format!("1123-456{account}"));
            record(&text).and_then(|r| r.account(detail::ACCOUNT_NUMBER).map(|a| a.to_string()))
        };
        assert_eq!(rec("   001234"), Ok("001234".into()));
        assert_eq!(rec("123456789"), Ok("123456789".into()));
        assert!(rec("001234   ").is_err());
        assert!(rec("  12 34  ").is_err());
        assert!(rec("   12-345").is_err());
        assert!(rec("000000000").is_err());
        assert!(rec("         ").is_err());
    }

    #[test]
    fn text_left_justified() {
        let text = padded("1 ACME");
        let rec = record(&text).unwrap();
        let err = rec.text(field("name", 2, 10), true).unwrap_err();
        assert_eq!(err.value, " ACME    ");
        let text = padded("1ACME CO");
        let rec = record(&text).unwrap();
        assert_eq!(rec.text(field("name", 2, 10), true), Ok("ACME CO".into()));
        assert!(rec.text(field("name", 20, 30), true).is_err());
        assert_eq!(rec.text(field("name", 20, 30), false), Ok(String::new()));
    }
}
