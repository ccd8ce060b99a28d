//! Personal fields inside stored idempotent responses.
//!
//! A proposal's response repeats the payee's name and account. The store keeps that
//! response beside the idempotency key so that a retry gets the same response. Keys never
//! expire, so a clear copy there would outlive an erasure of the payee. Before it is
//! stored, every `name` and `account` of an object that names a `payee_id` is sealed under
//! that payee's data key, bound to the ledger, the idempotency key and the field's JSON
//! pointer. A replay opens them again, and once the payee is erased they read `[erased]`.
//!
//! The subject is the `new_payee_id` of the object when it has one (a change proposal
//! carries the new payee's details), else its `payee_id`, as for sealed proposals.

use base64::Engine as _;
use domain::envelope::{FieldContext, SealedField};
use domain::personal::{payee_subject, ERASED};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::kms::data_keys::{DataKeyError, Opened};
use crate::personal::PersonalFields;

/// Object key of a sealed value in a stored response.
const SEALED_KEY: &str = "folio_sealed";

/// Keys whose values are a payee's personal fields.
const PERSONAL_KEYS: [&str; 2] = ["name", "account"];

/// A sealed response field could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("stored response field {pointer} cannot be opened: {reason}")]
pub struct ReplyFieldError {
    pointer: String,
    reason: String,
}

fn stream_of(key: &str) -> String {
    format!("idempotency/{key}")
}

/// Finds `(pointer, subject)` for every personal value in `value`.
fn personal_places(value: &Value, pointer: &str, places: &mut Vec<(String, Uuid)>) {
    match value {
        Value::Object(map) => {
            let subject = ["new_payee_id", "payee_id"]
                .iter()
                .find_map(|key| map.get(*key)?.as_str()?.parse::<Uuid>().ok());
            for (key, child) in map {
                let child_pointer = format!("{pointer}/{}", escape(key));
                match subject {
                    Some(subject) if PERSONAL_KEYS.contains(&key.as_str()) => {
                        places.push((child_pointer, subject));
                    }
                    _ => personal_places(child, &child_pointer, places),
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                personal_places(child, &format!("{pointer}/{index}"), places);
            }
        }
        _ => {}
    }
}

/// Escapes a JSON pointer token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Seals the personal fields of `body` for storage under idempotency key `key`. Returns
/// `body` unchanged when sealing of payee fields is off.
///
/// # Errors
/// KMS or key-store failures.
pub async fn seal(
    personal: &PersonalFields,
    ledger_id: Uuid,
    key: &str,
    mut body: Value,
    now_micros: i64,
) -> Result<Value, DataKeyError> {
    if !personal.seals_new() {
        return Ok(body);
    }
    let mut places = Vec::new();
    personal_places(&body, "", &mut places);
    let stream = stream_of(key);
    for (pointer, payee_id) in places {
        let Some(slot) = body.pointer_mut(&pointer) else {
            continue;
        };
        let plaintext = serde_json::to_vec(slot).unwrap_or_default();
        let context = FieldContext {
            ledger_id,
            stream: &stream,
            event_id: Uuid::nil(),
            field: &pointer,
        };
        let subject = payee_subject(payee_id);
        let sealed = (personal.keys())
            .seal_field(&subject, &context, &plaintext, now_micros)
            .await?;
        let bytes = postcard::to_allocvec(&sealed).expect("postcard encoding of a sealed field");
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        *slot = json!({ SEALED_KEY: text });
    }
    Ok(body)
}

/// Opens the sealed personal fields of a stored response. An erased payee's fields read
/// `[erased]`. Values that were never sealed are left as they are.
///
/// # Errors
/// A sealed value that does not decode or does not open under its key.
pub async fn open(
    personal: &PersonalFields,
    ledger_id: Uuid,
    key: &str,
    mut body: Value,
) -> Result<Value, ReplyFieldError> {
    let mut places = Vec::new();
    personal_places(&body, "", &mut places);
    let stream = stream_of(key);
    for (pointer, _) in places {
        let Some(slot) = body.pointer_mut(&pointer) else {
            continue;
        };
        let Some(text) = slot.get(SEALED_KEY).and_then(Value::as_str) else {
            continue;
        };
        let failed = |reason: String| ReplyFieldError {
            pointer: pointer.clone(),
            reason,
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|error| failed(format!("not base64url: {error}")))?;
        let sealed: SealedField = postcard::from_bytes(&bytes)
            .map_err(|error| failed(format!("not a sealed field: {error}")))?;
        let context = FieldContext {
            ledger_id,
            stream: &stream,
            event_id: Uuid::nil(),
            field: &pointer,
        };
        let opened = (personal.keys())
            .open_field(&context, &sealed)
            .await
            .map_err(|error| failed(error.to_string()))?;
        *slot = match opened {
            Opened::Plain(plaintext) => serde_json::from_slice(&plaintext)
                .map_err(|error| failed(format!("not JSON: {error}")))?,
            Opened::Erased => Value::from(ERASED),
        };
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_under_payee_objects() {
        let payee = Uuid::from_u128(1);
        let new_payee = Uuid::from_u128(2);
        let body = json!({
            "proposal_id": Uuid::from_u128(9),
            "name": "not a payee field",
            "change": {"kind": "change", "payee_id": payee, "new_payee_id": new_payee,
                       "name": "Jo", "account": {"bsb": "062000", "account": "1234"}},
            "items": [{"payee_id": payee, "name": "Jo/Old"}],
        });
        let mut places = Vec::new();
        personal_places(&body, "", &mut places);
        places.sort();
        assert_eq!(
            places,
            vec![
                ("/change/account".to_owned(), new_payee),
                ("/change/name".to_owned(), new_payee),
                ("/items/0/name".to_owned(), payee),
            ]
        );
    }
}
