//! The OpenAPI 3.1 document, kept beside the crate as `api/openapi.json`.

use actix_web::{get, HttpResponse};

/// The document served at `/openapi.json`.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// Serves the OpenAPI document.
#[get("/openapi.json")]
pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_is_valid_json_with_every_path() {
        let document: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        let paths = document["paths"].as_object().unwrap();
        for path in [
            "/v1/ledgers",
            "/v1/ledgers/{ledger_id}",
            "/v1/ledgers/{ledger_id}/payees",
            "/v1/ledgers/{ledger_id}/payees/{payee_id}/removal",
            "/v1/ledgers/{ledger_id}/payments",
            "/v1/ledgers/{ledger_id}/payments/batches",
            "/v1/ledgers/{ledger_id}/payments/{payment_id}",
            "/v1/ledgers/{ledger_id}/dlq",
            "/v1/ledgers/{ledger_id}/dlq/{payment_id}",
            "/v1/ledgers/{ledger_id}/dlq/retries",
            "/v1/ledgers/{ledger_id}/dlq/ignores",
            "/v1/ledgers/{ledger_id}/dlq-decisions",
            "/v1/ledgers/{ledger_id}/dlq-decisions/{decision_id}/approval",
            "/v1/ledgers/{ledger_id}/dlq-decisions/{decision_id}/rejection",
            "/v1/ledgers/{ledger_id}/dlq-decisions/{decision_id}/pause",
            "/v1/ledgers/{ledger_id}/dlq-decisions/{decision_id}/resume",
            "/v1/ledgers/{ledger_id}/audit",
            "/v1/ledgers/{ledger_id}/replay",
            "/v1/ledgers/{ledger_id}/replay/diff",
            "/v1/ledgers/{ledger_id}/history",
            "/v1/ledgers/{ledger_id}/controls/runs",
            "/v1/ledgers/{ledger_id}/controls/runs/latest",
            "/v1/ledgers/{ledger_id}/payees/{payee_id}/change",
            "/v1/ledgers/{ledger_id}/proposals",
            "/v1/ledgers/{ledger_id}/proposals/{proposal_id}/approval",
            "/v1/ledgers/{ledger_id}/proposals/{proposal_id}/rejection",
            "/v1/ledgers/{ledger_id}/proposals/{proposal_id}/revision",
            "/v1/ledgers/{ledger_id}/operators",
            "/v1/ledgers/{ledger_id}/operators/{operator_id}/unlock",
            "/v1/ledgers/{ledger_id}/operators/{operator_id}/mfa-reset",
            "/v1/ledgers/{ledger_id}/operators/{operator_id}/mfa-reset/approval",
            "/v1/sessions",
            "/v1/sessions/current",
            "/v1/sessions/current/verification",
            "/v1/sessions/current/revocation",
            "/v1/operators/me/totp",
            "/v1/operators/me/totp/activation",
            "/v1/operators/me/recovery-codes",
            "/v1/ledgers/{ledger_id}/checkpoints",
            "/v1/ledgers/{ledger_id}/proofs/inclusion",
            "/v1/ledgers/{ledger_id}/proofs/consistency",
            "/v1/ledgers/{ledger_id}/bundles",
        ] {
            assert!(paths.contains_key(path), "missing {path}");
        }
    }
}
