//! `Idempotency-Key` handling: canonical request bytes, replay of stored
//! responses, and naming the difference when a key comes back with another body.
//!
//! The key is claimed in the same store transaction as the events the request
//! appends, so uniqueness is enforced across processes and keys never expire.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use eventstore_adapter::{IdempotencyClaim, IdempotencyRecord};
use serde_json::{json, Value};

use crate::problem::ApiError;

/// Header carrying the key.
pub const HEADER: &str = "Idempotency-Key";

/// Response header set when a stored response is replayed.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

/// Longest accepted key, in bytes.
const MAX_KEY_LEN: usize = 255;

/// Stored in place of a request body that carries personal fields (a payee's name or
/// account, an ABA file). Only the request's hash is kept, so an erasure has nothing of
/// the body to reach. A mismatch then names the request line but not the field.
const BODY_NOT_KEPT: &[u8] = b"\0body not kept: it carried personal fields";

/// A POST's idempotency key and canonical request.
#[derive(Debug, Clone)]
pub struct IdempotentRequest {
    /// The client's key.
    pub key: String,
    /// Canonical request bytes: method, path and body.
    pub canonical: Vec<u8>,
    /// blake3 of `canonical`.
    pub hash: [u8; 32],
}

impl IdempotentRequest {
    /// Reads the key from `request` and canonicalises the body.
    ///
    /// A JSON body is re-serialised with sorted keys, so whitespace and key order
    /// do not make two equal requests differ. Any other body is taken as bytes.
    ///
    /// # Errors
    /// 400 `idempotency_key_missing` when the header is missing or empty, and
    /// `idempotency_key_invalid` when it is too long or not visible ASCII.
    pub fn from_request(request: &HttpRequest, body: &[u8]) -> Result<Self, ApiError> {
        let key = request
            .headers()
            .get(HEADER)
            .ok_or_else(ApiError::idempotency_key_missing)?
            .to_str()
            .map_err(|_| {
                ApiError::idempotency_key_invalid(
                    "the Idempotency-Key header is not visible ASCII; use 1 to 255 characters \
                     from ! to ~, such as a UUID",
                )
            })?
            .to_owned();
        let visible = key.bytes().all(|b| b.is_ascii_graphic());
        if key.is_empty() {
            return Err(ApiError::idempotency_key_missing());
        }
        if key.len() > MAX_KEY_LEN || !visible {
            return Err(ApiError::idempotency_key_invalid(format!(
                "the Idempotency-Key header has {} bytes{}; use 1 to {MAX_KEY_LEN} characters \
                 from ! to ~ (no spaces), such as a UUID",
                key.len(),
                if visible {
                    ""
                } else {
                    " and characters outside ! to ~"
                }
            )));
        }
        let canonical_body = match serde_json::from_slice::<Value>(body) {
            // serde_json's default map is ordered by key, so this sorts every object.
            Ok(value) => serde_json::to_vec(&value).map_err(ApiError::internal)?,
            Err(_) => body.to_vec(),
        };
        let mut canonical = format!("{} {}\n", request.method(), request.path()).into_bytes();
        canonical.extend_from_slice(&canonical_body);
        let hash = *blake3::hash(&canonical).as_bytes();
        Ok(IdempotentRequest {
            key,
            canonical,
            hash,
        })
    }

    /// Builds the claim stored with the request's events. With `keep_body` false only
    /// the request line and the hash of the whole request are stored.
    pub fn claim(&self, status: StatusCode, body: &Value, keep_body: bool) -> IdempotencyClaim {
        let request = if keep_body {
            self.canonical.clone()
        } else {
            let (line, _) = split_canonical(&self.canonical);
            [line, b"\n", BODY_NOT_KEPT].concat()
        };
        IdempotencyClaim {
            key: self.key.clone(),
            request_hash: self.hash,
            request,
            response_status: status.as_u16(),
            response_body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// Checks that a stored record was made by this same request.
    ///
    /// # Errors
    /// `idempotency_key_reused`, naming what differs, when the stored request is another.
    pub fn check_same(&self, record: &IdempotencyRecord) -> Result<(), ApiError> {
        if record.claim.request_hash != self.hash {
            return Err(self.mismatch(&record.claim.request));
        }
        Ok(())
    }

    fn mismatch(&self, stored: &[u8]) -> ApiError {
        let differences = describe_differences(stored, &self.canonical);
        ApiError::idempotency_key_reused(format!(
            "Idempotency-Key {:?} was first used with a different request ({}); \
             use a new key for a new operation, or resend the original request unchanged",
            self.key,
            differences.join("; ")
        ))
        .with("differences", json!(differences))
    }
}

/// Rebuilds the original response from a stored record and its (opened) body, with the
/// original position.
pub fn stored_response(record: &IdempotencyRecord, mut body: Value) -> HttpResponse {
    let status = StatusCode::from_u16(record.claim.response_status)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        crate::problem::PROBLEM_JSON
    };
    if let Value::Object(map) = &mut body {
        map.insert("position".to_owned(), Value::from(record.last_position));
    }
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((REPLAYED_HEADER, "true"))
        .body(serde_json::to_vec(&body).unwrap_or_default())
}

/// Lists what differs between two canonical requests, field by field for JSON bodies.
fn describe_differences(stored: &[u8], presented: &[u8]) -> Vec<String> {
    let (stored_line, stored_body) = split_canonical(stored);
    let (presented_line, presented_body) = split_canonical(presented);
    let mut differences = Vec::new();
    if stored_line != presented_line {
        differences.push(format!(
            "request line was `{}`, now `{}`",
            String::from_utf8_lossy(stored_line),
            String::from_utf8_lossy(presented_line)
        ));
    }
    if stored_body == BODY_NOT_KEPT {
        if differences.is_empty() {
            differences.push(
                "the body differs; the first body carried personal fields, so only its hash \
                 was kept and the field cannot be named"
                    .to_owned(),
            );
        }
        return differences;
    }
    let parsed = (
        serde_json::from_slice::<Value>(stored_body),
        serde_json::from_slice::<Value>(presented_body),
    );
    match parsed {
        (Ok(Value::Object(before)), Ok(Value::Object(after))) => {
            let keys: std::collections::BTreeSet<&String> =
                before.keys().chain(after.keys()).collect();
            for key in keys {
                match (before.get(key), after.get(key)) {
                    (Some(a), Some(b)) if a != b => {
                        differences.push(format!("field `{key}` was {a}, now {b}"));
                    }
                    (Some(a), None) => {
                        differences.push(format!("field `{key}` was {a}, now absent"))
                    }
                    (None, Some(b)) => {
                        differences.push(format!("field `{key}` was absent, now {b}"))
                    }
                    _ => {}
                }
            }
        }
        _ if stored_body != presented_body => {
            differences.push(format!(
                "body differs (first {} bytes, now {} bytes; blake3 {} vs {})",
                stored_body.len(),
                presented_body.len(),
                &blake3::hash(stored_body).to_hex()[..16],
                &blake3::hash(presented_body).to_hex()[..16]
            ));
        }
        _ => {}
    }
    if differences.is_empty() {
        differences.push("the body differs".to_owned());
    }
    differences
}

fn split_canonical(canonical: &[u8]) -> (&[u8], &[u8]) {
    match canonical.iter().position(|&b| b == b'\n') {
        Some(newline) => (&canonical[..newline], &canonical[newline + 1..]),
        None => (canonical, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_changed_fields() {
        let stored = b"POST /v1/x\n{\"amount_minor\":100,\"currency\":\"AUD\"}";
        let presented = b"POST /v1/x\n{\"amount_minor\":250,\"currency\":\"AUD\",\"note\":\"a\"}";
        let differences = describe_differences(stored, presented);
        assert_eq!(differences.len(), 2);
        assert!(differences[0].contains("`amount_minor` was 100, now 250"));
        assert!(differences[1].contains("`note` was absent"));
    }

    #[test]
    fn claim_without_body_names_no_field() {
        let request = IdempotentRequest {
            key: "k".to_owned(),
            canonical: b"POST /v1/p\n{\"name\":\"Jo Citizen\"}".to_vec(),
            hash: [7; 32],
        };
        let claim = request.claim(StatusCode::CREATED, &json!({}), false);
        let stored = String::from_utf8_lossy(&claim.request);
        assert!(!stored.contains("Citizen"), "{stored}");
        let differences = describe_differences(&claim.request, b"POST /v1/p\n{\"name\":\"X\"}");
        assert_eq!(differences.len(), 1);
        assert!(differences[0].contains("only its hash"), "{differences:?}");
    }

    #[test]
    fn differences_name_other_path() {
        let differences = describe_differences(b"POST /v1/a\n{}", b"POST /v1/b\n{}");
        assert_eq!(
            differences,
            vec!["request line was `POST /v1/a`, now `POST /v1/b`".to_owned()]
        );
    }
}
