//! Log output: masking of secrets and account numbers, and a limit on repeated warnings.
//!
//! Every formatted log line passes through [`redact`] before it reaches standard error, so a
//! token, a one-time code or an account number that slips into a message or a field is
//! masked wherever it appears, whichever code logged it. Warnings and errors from one call
//! site are limited to [`REPEAT_LIMIT`] per [`REPEAT_WINDOW`], so a failing bank or a
//! password-guessing client cannot flood the log. What was dropped is counted, and reported
//! when the window ends.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use regex_lite::{Captures, Regex};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter};

/// Warnings and errors from one call site allowed per window.
pub const REPEAT_LIMIT: u32 = 20;

/// Length of the window over which [`REPEAT_LIMIT`] applies.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Replacement text for a masked secret.
const MASK: &str = "[REDACTED]";

/// Log lines dropped by the repeat limit since the process started, for `/metrics`.
pub static SUPPRESSED_LINES: AtomicU64 = AtomicU64::new(0);

/// One masking rule: a pattern and how to rewrite each match.
struct Rule {
    pattern: Regex,
    rewrite: fn(&Captures<'_>) -> String,
}

fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        // Each pattern is a fixed literal, and the unit tests compile every one of them.
        let rule = |pattern: &str, rewrite| Rule {
            pattern: Regex::new(pattern).expect("redaction pattern compiles"),
            rewrite,
        };
        vec![
            // PEM private keys, whole block.
            rule(
                r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
                |_| format!("-----PRIVATE KEY {MASK}-----"),
            ),
            // Folio API tokens `folio_<id>_<secret>`: the id is public and stays.
            rule(r"folio_([0-9a-f]{8,})_[A-Za-z0-9_-]+", |c| {
                format!("folio_{}_{MASK}", &c[1])
            }),
            // Any bearer credential in a header echoed into a message.
            rule(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+", |c| {
                format!("{}{MASK}", &c[1])
            }),
            // TOTP enrolment URIs carry the shared secret.
            rule(r"otpauth://[^\s\x22]+", |_| format!("otpauth://{MASK}")),
            // Named secrets in `key=value`, `key: value` and JSON `"key":"value"` forms.
            rule(
                r#"(?i)("?\b(?:password|passphrase|secret|totp_secret|otp|totp_code|mfa_code|recovery_code|api_key|private_key|client_key|authorization|session_token)"?\s*[:=]\s*"?)([^"\s,}]+)"#,
                |c| format!("{}{MASK}", &c[1]),
            ),
            // A one-time code: six to eight digits right after the word "code".
            rule(r"(?i)(\bcode\b\W{0,3})\d{6,8}\b", |c| {
                format!("{}{MASK}", &c[1])
            }),
            // IBANs: country, check digits and up to 30 characters of account.
            rule(r"\b([A-Z]{2}\d{2}[A-Z0-9]{8,27})([A-Z0-9]{3})\b", |c| {
                format!("{}{}", "*".repeat(c[1].len()), &c[2])
            }),
            // Account numbers after a field or word that names them.
            rule(
                r#"(?i)(\b(?:account|account_number|acct)"?\s*[:=]?\s*"?)(\d{1,13})(\d{3})\b"#,
                |c| format!("{}{}{}", &c[1], "*".repeat(c[2].len()), &c[3]),
            ),
        ]
    })
}

/// Masks tokens, credentials, one-time codes, private keys and all but the last three
/// digits of account numbers in `line`.
pub fn redact(line: &str) -> String {
    let mut text = line.to_owned();
    for rule in rules() {
        if rule.pattern.is_match(&text) {
            text = rule
                .pattern
                .replace_all(&text, |c: &Captures<'_>| (rule.rewrite)(c))
                .into_owned();
        }
    }
    text
}

/// A [`MakeWriter`] that masks each formatted line with [`redact`] and writes it to
/// standard error.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr;

/// Buffers one formatted event and writes it, masked, when dropped.
pub struct RedactingLine {
    buffer: Vec<u8>,
}

impl Write for RedactingLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingLine {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let line = redact(&String::from_utf8_lossy(&self.buffer));
        // A log line that cannot be written has nowhere to be reported.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingLine;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine { buffer: Vec::new() }
    }
}

/// Count of events from one call site in the current window.
struct Window {
    started: Instant,
    passed: u32,
    dropped: u64,
}

/// A per-layer filter that lets at most [`REPEAT_LIMIT`] warnings and errors from each call
/// site through per [`REPEAT_WINDOW`]. Info and lower levels pass untouched.
#[derive(Default)]
pub struct RepeatLimit {
    windows: Mutex<HashMap<tracing::callsite::Identifier, Window>>,
}

impl RepeatLimit {
    /// Decides whether one more event from `metadata`'s call site may be written at `now`.
    fn admit(&self, metadata: &Metadata<'_>, now: Instant) -> bool {
        if *metadata.level() > Level::WARN {
            return true;
        }
        let mut windows = match self.windows.lock() {
            Ok(windows) => windows,
            // A panic while the map was locked leaves counts that are still usable.
            Err(poisoned) => poisoned.into_inner(),
        };
        let window = windows
            .entry(metadata.callsite())
            .or_insert_with(|| Window {
                started: now,
                passed: 0,
                dropped: 0,
            });
        if now.duration_since(window.started) >= REPEAT_WINDOW {
            if window.dropped > 0 {
                report_dropped(metadata, window.dropped);
            }
            *window = Window {
                started: now,
                passed: 0,
                dropped: 0,
            };
        }
        if window.passed < REPEAT_LIMIT {
            window.passed += 1;
            return true;
        }
        window.dropped += 1;
        SUPPRESSED_LINES.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// Writes one line with the number of events a call site lost to the limit, so a reader of
/// the log can tell that the failure went on.
fn report_dropped(metadata: &Metadata<'_>, dropped: u64) {
    let site = format!(
        "{}:{}",
        metadata.file().unwrap_or("?"),
        metadata.line().unwrap_or(0)
    );
    let line = serde_json::json!({
        "level": "WARN",
        "target": "folio::logging",
        "fields": {
            "message": "repeated log lines were dropped",
            "dropped": dropped,
            "callsite": site,
            "window_seconds": REPEAT_WINDOW.as_secs(),
        }
    });
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

impl<S> Filter<S> for RepeatLimit {
    fn enabled(&self, _metadata: &Metadata<'_>, _context: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _context: &Context<'_, S>) -> bool {
        self.admit(event.metadata(), Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_token_keeps_id_only() {
        // Split so that .ci/check-secrets does not take the test input for a real token.
        let line = redact(concat!(
            "auth failed for folio_0123456789abcdef",
            "_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg"
        ));
        assert_eq!(line, "auth failed for folio_0123456789abcdef_[REDACTED]");
    }

    #[test]
    fn bearer_header_is_masked() {
        let line = redact("header Authorization: Bearer abc.def-123");
        assert!(!line.contains("abc.def-123"), "{line}");
    }

    #[test]
    fn json_secret_fields_are_masked() {
        let line = redact(r#"{"fields":{"password":"hunter2hunter2","totp_secret":"JBSWY3DP"}}"#);
        assert!(!line.contains("hunter2hunter2"), "{line}");
        assert!(!line.contains("JBSWY3DP"), "{line}");
        assert!(line.contains(r#""password":"[REDACTED]"#), "{line}");
    }

    #[test]
    fn one_time_code_is_masked() {
        let line = redact("rejected code 123456 for operator op-1");
        assert_eq!(line, "rejected code [REDACTED] for operator op-1");
    }

    #[test]
    fn error_codes_are_kept() {
        let line = redact(r#"{"code":"payee_not_allowed","position":1234567}"#);
        assert_eq!(line, r#"{"code":"payee_not_allowed","position":1234567}"#);
    }

    #[test]
    fn otpauth_uri_is_masked() {
        let line = redact("uri otpauth://totp/Folio:ann?secret=JBSWY3DPEHPK3PXP&issuer=Folio");
        assert!(!line.contains("JBSWY3DPEHPK3PXP"), "{line}");
    }

    #[test]
    fn account_number_keeps_last_three_digits() {
        let line = redact(r#"payee {"bsb":"062-000","account":"123456789"}"#);
        assert!(line.contains(r#""account":"******789""#), "{line}");
        let plain = redact("account 00123456 rejected");
        assert_eq!(plain, "account *****456 rejected");
    }

    #[test]
    fn iban_keeps_last_three_characters() {
        let line = redact("iban GB82WEST12345698765432 added");
        assert_eq!(line, format!("iban {}432 added", "*".repeat(19)));
    }

    #[test]
    fn private_key_block_is_masked() {
        let pem = concat!(
            "-----BEGIN PRIVATE",
            " KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----"
        );
        let line = redact(&format!("loaded {pem} ok"));
        assert!(!line.contains("MC4CAQAw"), "{line}");
    }

    #[test]
    fn repeat_limit_drops_past_limit_then_resets() {
        let limit = RepeatLimit::default();
        let metadata = warn_metadata();
        let start = Instant::now();

        let passed = (0..REPEAT_LIMIT + 5)
            .filter(|_| limit.admit(metadata, start))
            .count();
        assert_eq!(passed, REPEAT_LIMIT as usize);

        let later = start + REPEAT_WINDOW;
        assert!(limit.admit(metadata, later));
    }

    fn warn_metadata() -> &'static Metadata<'static> {
        struct Site;
        static SITE: Site = Site;
        static META: Metadata<'static> = tracing::metadata!(
            name: "test",
            target: "folio::test",
            level: Level::WARN,
            fields: &[],
            callsite: &SITE,
            kind: tracing::metadata::Kind::EVENT
        );
        impl tracing::callsite::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                &META
            }
        }
        &META
    }
}
