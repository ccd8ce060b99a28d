//! Event times as stored (microseconds since the Unix epoch, UTC) and as shown (RFC 3339).

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::ProjectionError;

/// Formats microseconds since the Unix epoch as RFC 3339 in UTC with six fractional digits.
///
/// Times outside the years 1..=9999 cannot be written in RFC 3339, so they come back
/// as the raw number of microseconds; no sealed event carries such a time.
pub fn format_micros(micros: i64) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    let nanos = i128::from(micros) * 1_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_else(|| micros.to_string())
}

/// Parses a time bound given as RFC 3339 or as an integer number of microseconds.
///
/// # Errors
/// [`ProjectionError::InvalidQuery`] naming `name` when the text is neither form.
pub fn parse_time_bound(name: &'static str, text: &str) -> Result<i64, ProjectionError> {
    if let Ok(micros) = text.parse::<i64>() {
        return Ok(micros);
    }
    let invalid = |reason: String| ProjectionError::InvalidQuery { name, reason };
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        invalid(format!(
            "{text:?} is neither RFC 3339 nor integer microseconds ({e})"
        ))
    })?;
    let micros = at.unix_timestamp_nanos() / 1_000;
    i64::try_from(micros).map_err(|_| invalid(format!("{text:?} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_has_six_fraction_digits() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_micros(1_764_806_400_000_001),
            "2025-12-04T00:00:00.000001Z"
        );
    }

    #[test]
    fn parse_accepts_both_forms() {
        assert_eq!(
            parse_time_bound("from", "1764806400000001").unwrap(),
            1_764_806_400_000_001
        );
        let parsed = parse_time_bound("from", "2025-12-04T10:00:00.000001+10:00").unwrap();
        assert_eq!(parsed, 1_764_806_400_000_001);
    }

    #[test]
    fn parse_rejects_other_text() {
        let err = parse_time_bound("to", "yesterday").unwrap_err();
        assert!(
            err.to_string().contains("invalid query parameter to"),
            "{err}"
        );
    }
}
