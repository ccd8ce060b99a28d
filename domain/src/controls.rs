//! Continuous control monitoring: checks computed from the ledger itself.
//!
//! A [`ControlsEvaluator`] is fed a ledger's sealed events in order and returns one
//! [`ControlResult`] per control. The results of a run are recorded as a
//! [`ControlsRunRecorded`] event, so the proof that the controls held is as tamper-evident
//! as the events it covers. The caller supplies what the events cannot tell: whether the
//! chain verified, and the time of the run.

use serde::{Deserialize, Serialize};

use crate::events::{DomainEvent, EventPayload};
use crate::record::SealedEvent;

/// Stable identifier of the chain verification control.
pub const CHAIN_VERIFIES: &str = "chain_verifies";
/// Stable identifier of the signing key age control.
pub const SIGNING_KEY_AGE: &str = "signing_key_age";
/// Stable identifier of the control that no secret appears in an event.
pub const NO_SECRETS_IN_EVENTS: &str = "no_secrets_in_events";
/// Stable identifier of the control that no secret appears in the log.
pub const NO_SECRETS_IN_LOGS: &str = "no_secrets_in_logs";

/// Outcome of one control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlStatus {
    /// The control held over every event examined.
    Pass,
    /// The control was broken; the detail names the positions.
    Fail,
    /// Nothing in scope to examine (for example, no log file was given).
    NotApplicable,
}

impl ControlStatus {
    /// Lower-case name used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlStatus::Pass => "pass",
            ControlStatus::Fail => "fail",
            ControlStatus::NotApplicable => "not_applicable",
        }
    }
}

/// Result of one control in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResult {
    /// Stable control identifier, such as `signing_key_age`.
    pub control: String,
    /// Outcome.
    pub status: ControlStatus,
    /// Events (or log lines) examined.
    pub examined: u64,
    /// Findings with their positions, and the fix for a failure.
    pub detail: String,
}

/// One run of the controls over a ledger, up to and including `last_position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlsRunRecorded {
    /// Last ledger position the run examined.
    pub last_position: u64,
    /// Hash of the event at `last_position`.
    pub last_hash: [u8; 32],
    /// One result per control, in a fixed order.
    pub results: Vec<ControlResult>,
}

impl EventPayload for ControlsRunRecorded {
    const EVENT_TYPE: &'static str = "controls.run_recorded";
    const SCHEMA_VERSION: u16 = 1;
}

impl ControlsRunRecorded {
    /// Returns true when no control failed.
    pub fn passed(&self) -> bool {
        self.results
            .iter()
            .all(|result| result.status != ControlStatus::Fail)
    }
}

/// Limits the controls check against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPolicy {
    /// Maximum time a signing key may stay in use, in microseconds.
    pub max_signing_key_age_micros: i64,
}

/// Where in the ledger a secret-looking value was found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    position: u64,
    pattern: &'static str,
}

/// Streaming evaluator of the controls over one ledger.
#[derive(Debug)]
pub struct ControlsEvaluator {
    policy: ControlPolicy,
    examined: u64,
    last: Option<(u64, [u8; 32])>,
    /// Time and position of the genesis or last key rotation.
    key_since: Option<(i64, u64)>,
    secret_findings: Vec<Finding>,
}

/// Findings kept per run; past this, only the count grows.
const MAX_FINDINGS: usize = 20;

impl ControlsEvaluator {
    /// Creates an evaluator with `policy`.
    pub fn new(policy: ControlPolicy) -> Self {
        ControlsEvaluator {
            policy,
            examined: 0,
            last: None,
            key_since: None,
            secret_findings: Vec::new(),
        }
    }

    /// Examines the next event, in ledger order.
    pub fn push(&mut self, event: &SealedEvent) {
        if let Some((position, _)) = self.last {
            assert_eq!(
                event.position,
                position + 1,
                "controls need events in order"
            );
        }
        self.examined += 1;
        self.last = Some((event.position, event.hash));

        match DomainEvent::decode(&event.event_type, event.schema_version, &event.payload) {
            Ok(DomainEvent::LedgerCreated(_)) | Ok(DomainEvent::LedgerKeyRotated(_)) => {
                self.key_since = Some((event.recorded_at_micros, event.position));
            }
            _ => {}
        }
        if let Some(pattern) = secret_pattern(&String::from_utf8_lossy(&event.payload)) {
            if self.secret_findings.len() < MAX_FINDINGS {
                self.secret_findings.push(Finding {
                    position: event.position,
                    pattern,
                });
            }
        }
    }

    /// Finishes the run at `now_micros` and returns its record, or `None` for an empty
    /// ledger. `chain` is the verifier's verdict on the same events: `Err` carries its
    /// failure message. `log` is the result of [`scan_log`], when a log was given.
    pub fn finish(
        self,
        now_micros: i64,
        chain: Result<(), String>,
        log: Option<ControlResult>,
    ) -> Option<ControlsRunRecorded> {
        let (last_position, last_hash) = self.last?;
        let results = vec![
            self.chain_result(chain),
            self.key_age_result(now_micros),
            self.secrets_result(),
            log.unwrap_or_else(|| ControlResult {
                control: NO_SECRETS_IN_LOGS.to_owned(),
                status: ControlStatus::NotApplicable,
                examined: 0,
                detail: "no log file was given to this run".to_owned(),
            }),
        ];
        Some(ControlsRunRecorded {
            last_position,
            last_hash,
            results,
        })
    }

    fn chain_result(&self, chain: Result<(), String>) -> ControlResult {
        let (status, detail) = match chain {
            Ok(()) => (
                ControlStatus::Pass,
                "every hash, link and signature verified".to_owned(),
            ),
            Err(message) => (ControlStatus::Fail, message),
        };
        ControlResult {
            control: CHAIN_VERIFIES.to_owned(),
            status,
            examined: self.examined,
            detail,
        }
    }

    fn key_age_result(&self, now_micros: i64) -> ControlResult {
        let (status, detail) = match self.key_since {
            None => (
                ControlStatus::Fail,
                "no genesis or key rotation event names the signing key".to_owned(),
            ),
            Some((since, position)) => {
                let age = now_micros.saturating_sub(since);
                let days = age / 86_400_000_000;
                let limit_days = self.policy.max_signing_key_age_micros / 86_400_000_000;
                if age > self.policy.max_signing_key_age_micros {
                    let detail = format!(
                        "the signing key in use since position {position} is {days} days old, \
                         over the {limit_days}-day limit; rotate the signing key"
                    );
                    (ControlStatus::Fail, detail)
                } else {
                    let detail = format!(
                        "the signing key in use since position {position} is {days} days old \
                         (limit {limit_days} days)"
                    );
                    (ControlStatus::Pass, detail)
                }
            }
        };
        ControlResult {
            control: SIGNING_KEY_AGE.to_owned(),
            status,
            examined: self.examined,
            detail,
        }
    }

    fn secrets_result(&self) -> ControlResult {
        let (status, detail) = if self.secret_findings.is_empty() {
            (
                ControlStatus::Pass,
                "no token, private key or TOTP secret pattern in any payload".to_owned(),
            )
        } else {
            let places: Vec<String> = self
                .secret_findings
                .iter()
                .map(|finding| format!("{} at position {}", finding.pattern, finding.position))
                .collect();
            let detail = format!(
                "secret patterns in event payloads: {}; revoke the exposed credentials",
                places.join(", ")
            );
            (ControlStatus::Fail, detail)
        };
        ControlResult {
            control: NO_SECRETS_IN_EVENTS.to_owned(),
            status,
            examined: self.examined,
            detail,
        }
    }
}

/// Scans log lines for secret patterns; the redaction layer should have removed every one.
pub fn scan_log<'a>(lines: impl IntoIterator<Item = &'a str>) -> ControlResult {
    let mut examined = 0;
    let mut findings = Vec::new();
    for (index, line) in lines.into_iter().enumerate() {
        examined += 1;
        if let Some(pattern) = secret_pattern(line) {
            if findings.len() < MAX_FINDINGS {
                findings.push(format!("{pattern} on line {}", index + 1));
            }
        }
    }
    let (status, detail) = if findings.is_empty() {
        (
            ControlStatus::Pass,
            "no token, private key or TOTP secret pattern in the log".to_owned(),
        )
    } else {
        let detail = format!(
            "secret patterns in the log: {}; revoke the exposed credentials and check the \
             redaction layer",
            findings.join(", ")
        );
        (ControlStatus::Fail, detail)
    };
    ControlResult {
        control: NO_SECRETS_IN_LOGS.to_owned(),
        status,
        examined,
        detail,
    }
}

/// Returns the name of the first secret pattern in `text`: an unmasked Folio API token, a
/// PEM private key, a TOTP enrolment URI or a bearer credential.
pub fn secret_pattern(text: &str) -> Option<&'static str> {
    if text.contains("PRIVATE KEY-----") {
        return Some("PEM private key");
    }
    if text.contains("otpauth://") && !text.contains("otpauth://[REDACTED]") {
        return Some("TOTP enrolment URI");
    }
    if contains_api_token(text) {
        return Some("Folio API token");
    }
    let lower = text.to_ascii_lowercase();
    let bearer = lower.match_indices("bearer ").any(|(index, _)| {
        let rest = &text[index + "bearer ".len()..];
        let credential: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
        credential.len() >= 16 && credential != "[REDACTED]"
    });
    bearer.then_some("bearer credential")
}

/// Finds `folio_<16+ hex>_<20+ token characters>`, the shape of an unmasked API token.
fn contains_api_token(text: &str) -> bool {
    text.match_indices("folio_").any(|(index, _)| {
        let rest = &text[index + "folio_".len()..];
        let id_len = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
        if id_len < 16 || rest.as_bytes().get(id_len) != Some(&b'_') {
            return false;
        }
        let secret = &rest[id_len + 1..];
        let secret_len = secret
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .count();
        secret_len >= 20
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmasked_token_is_found() {
        let text = "token folio_0123456789abcdef_AbCdEfGhIjKlMnOpQrStUv issued";
        assert_eq!(secret_pattern(text), Some("Folio API token"));
    }

    #[test]
    fn masked_token_passes() {
        let text = "token folio_0123456789abcdef_[REDACTED] issued";
        assert_eq!(secret_pattern(text), None);
    }

    #[test]
    fn private_key_and_otpauth_are_found() {
        assert_eq!(
            secret_pattern("-----BEGIN PRIVATE KEY-----\nabc"),
            Some("PEM private key")
        );
        assert_eq!(
            secret_pattern("otpauth://totp/Folio:ann?secret=JBSWY3DPEHPK3PXP"),
            Some("TOTP enrolment URI")
        );
        assert_eq!(secret_pattern("otpauth://[REDACTED]"), None);
    }

    #[test]
    fn bearer_credential_is_found() {
        assert_eq!(
            secret_pattern("Authorization: Bearer eyJhbGciOiJFZERTQSJ9.abc"),
            Some("bearer credential")
        );
        assert_eq!(secret_pattern("Authorization: Bearer [REDACTED]"), None);
    }

    #[test]
    fn log_scan_reports_line_numbers() {
        let log = ["ok", "leaked folio_0123456789abcdef_AbCdEfGhIjKlMnOpQrStUv"];
        let result = scan_log(log);
        assert_eq!(result.status, ControlStatus::Fail);
        assert_eq!(result.examined, 2);
        assert!(result.detail.contains("line 2"), "{}", result.detail);
    }
}
