//! The error returned for an invalid ABA file.

/// An ABA file broke the format: where, which field, what was found and what the
/// format expects there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ABA file at line {line}, field {field}: found {value:?}, expected {expected}")]
pub struct AbaError {
    /// 1-based line number of the record.
    pub line: u32,
    /// Field name in snake_case, such as `bsb` or `credit_total`; `record` for the
    /// whole line and `record_type` for its first character.
    pub field: &'static str,
    /// The offending value as found in the file, or a summary of it.
    pub value: String,
    /// The value or form the format expects in that place.
    pub expected: String,
}

impl AbaError {
    pub(crate) fn new(
        line: u32,
        field: &'static str,
        value: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            line,
            field,
            value: value.into(),
            expected: expected.into(),
        }
    }
}
