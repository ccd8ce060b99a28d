//! HTTP routes, one module per resource, all under `/v1`.

pub mod anomalies;
pub mod audit;
pub mod bundles;
pub mod console;
pub mod controls;
pub mod dlq;
pub mod dlq_decisions;
pub mod health;
pub mod keys;
pub mod ledgers;
pub mod openapi;
pub mod operators;
pub mod payees;
pub mod payments;
pub mod proofs;
pub mod proposals;
pub mod replay;
pub mod sessions;

use actix_web::web;
use serde::Deserialize;
use uuid::Uuid;

use crate::problem::ApiError;
use crate::state::AppState;

/// Registers every route.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(openapi::document)
        .service(console::root)
        .service(console::index)
        .service(console::file)
        .service(
            web::scope("/v1")
                .service(ledgers::create)
                .service(ledgers::list)
                .service(ledgers::get)
                .service(payees::add)
                .service(payees::change)
                .service(payees::remove)
                .service(payees::erase)
                .service(payees::list)
                .service(proposals::list)
                .service(proposals::approve)
                .service(proposals::reject)
                .service(proposals::revise)
                .service(sessions::sign_in)
                .service(sessions::verify)
                .service(sessions::current)
                .service(sessions::revoke)
                .service(operators::enrol_totp)
                .service(operators::recovery_codes)
                .service(operators::activate)
                .service(operators::create)
                .service(operators::list)
                .service(operators::unlock)
                .service(operators::propose_reset)
                .service(operators::approve_reset)
                .service(payments::submit_batch)
                .service(payments::submit)
                .service(payments::list)
                .service(payments::get)
                .service(dlq::list)
                .service(dlq::view)
                .service(dlq_decisions::propose_retry)
                .service(dlq_decisions::propose_ignore)
                .service(dlq_decisions::list)
                .service(dlq_decisions::approve)
                .service(dlq_decisions::reject)
                .service(dlq_decisions::pause)
                .service(dlq_decisions::resume)
                .service(anomalies::list)
                .service(anomalies::release)
                .service(anomalies::reject)
                .service(anomalies::analytics)
                .service(audit::query)
                .service(replay::state_at)
                .service(replay::diff)
                .service(controls::start_run)
                .service(controls::latest)
                .service(replay::history)
                .service(proofs::list)
                .service(proofs::inclusion)
                .service(proofs::consistency)
                .service(bundles::export)
                .service(keys::rotate_signing)
                .service(keys::revoke_signing)
                .service(keys::rotate_kek),
        );
}

/// Query parameters shared by read endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// Wait until the read model has applied this ledger position.
    pub min_position: Option<u64>,
}

/// Checks that the ledger exists, then waits (bounded by configuration) until its read models
/// reach `min_position`.
///
/// # Errors
/// 404 for an unknown ledger, 400 for a position beyond the head, 503 `not_ready` when the
/// position is not reached in time.
pub(crate) async fn wait_for(
    state: &AppState,
    ledger_id: Uuid,
    min_position: Option<u64>,
) -> Result<(), ApiError> {
    // The store, not the read model, decides whether the ledger exists and how far it goes.
    let head = state.store.head(ledger_id).await?;
    let Some(min_position) = min_position else {
        return Ok(());
    };
    if min_position > head.position {
        return Err(ApiError::invalid(format!(
            "min_position {min_position} is beyond the head of ledger {ledger_id} (position {}); \
             pass a position returned by a command",
            head.position
        )));
    }
    let timeout = std::time::Duration::from_millis(state.config.server.min_position_wait_ms);
    let reached = state
        .models
        .wait_for_position(ledger_id, min_position, timeout)
        .await
        .map_err(ApiError::internal)?;
    if reached {
        Ok(())
    } else {
        Err(ApiError::unavailable(format!(
            "read model of ledger {ledger_id} has not reached position {min_position} within \
             {} ms; retry shortly",
            timeout.as_millis()
        )))
    }
}

/// Parses a ledger id path segment.
///
/// # Errors
/// 400 naming the segment.
pub fn ledger_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::invalid(format!("ledger id {text:?} is not a UUID")))
}

/// Largest JSON request body accepted, in bytes; ABA files have their own limit.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Parses a JSON request body, naming the limit or the decoding problem.
///
/// # Errors
/// 413 `body_too_large` over [`MAX_JSON_BODY`], 400 `invalid_request` for invalid JSON.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    if body.len() > MAX_JSON_BODY {
        return Err(ApiError::too_large(format!(
            "the {what} request body is {} bytes; the limit for JSON requests is {MAX_JSON_BODY}",
            body.len()
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("invalid {what}: {e}")))?;
    // serde fills a struct from a JSON array by position, in declaration order. The API
    // takes named fields only, so anything but an object is rejected here.
    if !value.is_object() {
        return Err(ApiError::invalid(format!(
            "invalid {what}: the body is a JSON {}, not an object; send the fields by name, \
             as in {{\"field\": value}}",
            json_kind(&value)
        )));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("invalid {what}: {e}")))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // The fields are read only through Debug.
    struct Named {
        tenant: String,
    }

    #[test]
    fn json_body_must_be_an_object() {
        let named: Named = parse_json(br#"{"tenant": "acme"}"#, "ledger request").unwrap();
        assert_eq!(named.tenant, "acme");
        for body in [&br#"["acme"]"#[..], b"\"acme\"", b"null", b"7"] {
            let error = parse_json::<Named>(body, "ledger request").unwrap_err();
            assert!(error.detail.contains("not an object"), "{}", error.detail);
        }
    }
}
