//! Readable views of sealed events: decoded payloads as JSON, RFC 3339 times, and the
//! actor and authentication context of each event.

use anyhow::{anyhow, Context};
use domain::events::DomainEvent;
use domain::operator_events::AuthContext;
use domain::record::{ActorKind, SealedEvent};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::format_description::FormatItem;
use time::OffsetDateTime;

/// Status printed for the signature of an event that the chain verifier accepted.
pub const SIGNATURE_VERIFIED: &str = "verified";

/// Returns the event as a JSON object: its envelope, decoded payload, authentication
/// context, hash and signature status. Every event given here has been verified.
pub fn event_json(event: &SealedEvent) -> Value {
    let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload);
    let (payload, auth) = match &decoded {
        Ok(domain_event) => (payload_json(domain_event), auth_json(domain_event)),
        Err(error) => (
            json!({"undecoded": error.to_string(), "hex": hex::encode(&event.payload)}),
            Value::Null,
        ),
    };
    json!({
        "position": event.position,
        "recorded_at": format_micros(event.recorded_at_micros),
        "recorded_at_micros": event.recorded_at_micros,
        "stream_id": event.stream_id,
        "stream_version": event.stream_version,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "actor": {
            "kind": actor_kind(event.actor.kind),
            "id": event.actor.id,
            "credential": event.actor.credential,
        },
        "auth": auth,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "payload": payload,
        "prev_hash": hex::encode(event.prev_hash),
        "hash": hex::encode(event.hash),
        "key_id": event.key_id.to_string(),
        "signature": SIGNATURE_VERIFIED,
    })
}

/// Returns the wire name of an actor kind.
pub fn actor_kind(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::System => "system",
        ActorKind::ApiClient => "api_client",
        ActorKind::Operator => "operator",
        _ => "unknown",
    }
}

/// Returns the authentication context a payload carries, if any.
pub fn auth_context(event: &DomainEvent) -> Option<&AuthContext> {
    match event {
        DomainEvent::SessionStarted(e) => Some(&e.auth),
        DomainEvent::MfaEnrolmentStarted(e) => Some(&e.auth),
        DomainEvent::RecoveryCodesIssued(e) => Some(&e.auth),
        DomainEvent::RecoveryCodesAcknowledged(e) => Some(&e.auth),
        DomainEvent::MfaEnrolled(e) => Some(&e.auth),
        DomainEvent::ChallengePassed(e) => Some(&e.auth),
        DomainEvent::RecoveryCodeUsed(e) => Some(&e.auth),
        DomainEvent::StepUpGranted(e) => Some(&e.auth),
        DomainEvent::MfaResetProposed(e) => Some(&e.auth),
        DomainEvent::MfaReset(e) => Some(&e.auth),
        DomainEvent::ChangeProposed(e) => Some(&e.auth),
        DomainEvent::ChangeProposedSealed(e) => Some(&e.auth),
        DomainEvent::ChangeApproved(e) => Some(&e.auth),
        DomainEvent::ChangeRejected(e) => Some(&e.auth),
        DomainEvent::OperatorUnlocked(e) => Some(&e.by),
        DomainEvent::OperatorCreated(e) => e.created_by.as_ref(),
        _ => None,
    }
}

fn auth_json(event: &DomainEvent) -> Value {
    match auth_context(event) {
        None => Value::Null,
        Some(auth) => json!({
            "operator_id": auth.operator_id,
            "session_id": auth.session_id,
            "factor": auth.factor,
            "factor_verified_at": format_micros(auth.factor_verified_at_micros),
        }),
    }
}

macro_rules! payload_to_value {
    ($event:expr; $($variant:ident),* $(,)?) => {
        match $event {
            $(DomainEvent::$variant(payload) => serde_json::to_value(payload),)*
            _ => Ok(Value::Null),
        }
    };
}

/// Returns the payload as JSON, with fixed-size byte arrays (hashes, keys) as hex.
fn payload_json(event: &DomainEvent) -> Value {
    let value = payload_to_value!(event;
        LedgerCreated, LedgerKeyRotated, PayeeAdded, PayeeAddedSealed, SubjectErased,
        PayeeRemoved, PaymentSubmitted, PaymentSubmittedSealed,
        PaymentRejected, AbaBatchImported, DispatchAttempted, DispatchFailed, ReceiptRecorded,
        PaymentDeadLettered, BreakerStateChanged, ControlsRunRecorded, OperatorCreated,
        SessionStarted, SessionRevoked, MfaEnrolmentStarted, RecoveryCodesIssued,
        RecoveryCodesAcknowledged, MfaEnrolled, ChallengeIssued, ChallengePassed,
        ChallengeFailed, OperatorLocked, OperatorUnlocked, RecoveryCodeUsed, StepUpGranted,
        MfaResetProposed, MfaReset, ChangeProposed, ChangeProposedSealed, ChangeApproved,
        ChangeRejected, ChangeExpired, LedgerKeyRevoked, KekRotated, DataKeysRewrapped,
        KekRetired, RetentionApplied, DlqItemViewed, DlqDecisionProposed, DlqDecisionApproved,
        DlqDecisionRejected, DlqRetryReleased, DlqReleasePaused, DlqReleaseResumed,
        PaymentFlagged, PaymentReviewed,
    );
    // Serialising these derived payload structs to a JSON value fails only on a map with
    // non-string keys, which no payload has. A failure would show the payload as null.
    bytes_as_hex(value.unwrap_or(Value::Null))
}

/// Replaces arrays of 32 byte values, which is how serde writes the `[u8; 32]` hashes and
/// public keys of payloads, with hex strings. No payload has another array of that shape.
fn bytes_as_hex(value: Value) -> Value {
    match value {
        Value::Array(items) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|item| item.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            match bytes {
                Some(bytes) if bytes.len() == 32 => Value::String(hex::encode(bytes)),
                _ => Value::Array(items.into_iter().map(bytes_as_hex).collect()),
            }
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, item)| (key, bytes_as_hex(item)))
                .collect(),
        ),
        other => other,
    }
}

/// RFC 3339 in UTC with exactly six fractional digits, so times sort as text and line up.
const UTC_MICROS: &[FormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// Formats microseconds since the Unix epoch as an RFC 3339 UTC time with six fractional
/// digits, or as `<micros>us` for a value outside the years 0 to 9999.
pub fn format_micros(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|time| time.format(UTC_MICROS).ok())
        .unwrap_or_else(|| format!("{micros}us"))
}

/// Parses a time given as RFC 3339 (`2026-12-04T21:00:00Z`) or as microseconds since the
/// Unix epoch, and returns microseconds.
///
/// # Errors
/// Names the text and the two accepted forms.
pub fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(micros) = text.parse::<i64>() {
        return Ok(micros);
    }
    let time = OffsetDateTime::parse(text, &Rfc3339).with_context(|| {
        format!(
            "invalid time {text:?}: expected RFC 3339 such as 2026-12-04T21:00:00Z, or \
             microseconds since the Unix epoch"
        )
    })?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000)
        .map_err(|_| anyhow!("time {text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_six_fraction_digits() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_micros(1_796_417_711_320_000),
            "2026-12-04T20:55:11.320000Z"
        );
    }

    #[test]
    fn time_parses_rfc3339_and_micros() {
        let micros = 1_796_417_711_320_000;
        assert_eq!(parse_time(&format_micros(micros)).unwrap(), micros);
        assert_eq!(parse_time("2026-12-04T20:55:11.32Z").unwrap(), micros);
        assert_eq!(parse_time("2026-12-05T07:55:11.32+11:00").unwrap(), micros);
        assert_eq!(parse_time("1796417711320000").unwrap(), micros);
        let error = parse_time("yesterday").unwrap_err().to_string();
        assert!(error.contains("\"yesterday\""), "{error}");
    }

    #[test]
    fn byte_arrays_become_hex() {
        let (hash, key) = ([7u8; 32], [0u8; 32]);
        let value = json!({"hash": hash, "roles": [1, 2], "nested": [{"key": key}]});
        let converted = bytes_as_hex(value);
        assert_eq!(converted["hash"], "07".repeat(32));
        assert_eq!(converted["roles"], json!([1, 2]));
        assert_eq!(converted["nested"][0]["key"], "00".repeat(32));
    }
}
