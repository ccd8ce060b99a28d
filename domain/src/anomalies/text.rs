//! Numbers as the explanations write them: money in major units, durations in words.

/// Writes an amount in minor units as the currency's major units with thousands
/// separators, such as `AUD 1,250.00` (JPY has no minor unit: `JPY 1,250`).
pub fn format_money(amount_minor: u64, currency: &str) -> String {
    let decimals = if currency == "JPY" { 0 } else { 2 };
    let divisor = 10u64.pow(decimals);
    let major = group_thousands(amount_minor / divisor);
    if decimals == 0 {
        return format!("{currency} {major}");
    }
    let minor = amount_minor % divisor;
    format!("{currency} {major}.{minor:02}")
}

fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Writes a duration in whole seconds as its two largest units, such as `2 days 3 hours`,
/// `45 minutes` or `12 seconds`.
pub fn format_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let units = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut parts = Vec::new();
    let mut rest = seconds;
    for (size, name) in units {
        let count = rest / size;
        rest %= size;
        if count > 0 && parts.len() < 2 {
            let plural = if count == 1 { "" } else { "s" };
            parts.push(format!("{count} {name}{plural}"));
        } else if !parts.is_empty() {
            // Only adjacent units are shown: "1 day 4 minutes" would read as precise.
            break;
        }
    }
    if parts.is_empty() {
        return "0 seconds".to_owned();
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_in_major_units() {
        assert_eq!(format_money(125_000, "AUD"), "AUD 1,250.00");
        assert_eq!(format_money(5, "AUD"), "AUD 0.05");
        assert_eq!(format_money(123_456_789, "EUR"), "EUR 1,234,567.89");
        assert_eq!(format_money(1_250, "JPY"), "JPY 1,250");
        assert_eq!(format_money(0, "AUD"), "AUD 0.00");
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(format_duration(0), "0 seconds");
        assert_eq!(format_duration(12), "12 seconds");
        assert_eq!(format_duration(2_700), "45 minutes");
        assert_eq!(format_duration(3_600), "1 hour");
        assert_eq!(
            format_duration(2 * 86_400 + 3 * 3_600 + 59),
            "2 days 3 hours"
        );
        assert_eq!(format_duration(86_400 + 240), "1 day");
    }
}
