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

/// Returns the methods the document lists for the route matching `path` (upper case,
/// sorted), or `None` when no route matches. A `{name}` segment matches any one segment.
pub fn allowed_methods(path: &str) -> Option<Vec<String>> {
    static PARSED: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let parsed = PARSED.get_or_init(|| serde_json::from_str(DOCUMENT).unwrap_or_default());
    let wanted: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    // The most specific template wins: `/dlq/retries` over `/dlq/{payment_id}`.
    let literal_matches = |template: &str| {
        let segments: Vec<&str> = template.split('/').collect();
        let fits = segments.len() == wanted.len()
            && segments.iter().zip(&wanted).all(|(template, actual)| {
                template == actual || (template.starts_with('{') && !actual.is_empty())
            });
        fits.then(|| segments.iter().filter(|s| !s.starts_with('{')).count())
    };
    let (_, operations) = parsed["paths"]
        .as_object()?
        .iter()
        .filter_map(|(template, operations)| Some((literal_matches(template)?, operations)))
        .max_by_key(|(literals, _)| *literals)?;
    let mut methods: Vec<String> = operations
        .as_object()?
        .keys()
        .filter(|key| ["get", "post", "put", "patch", "delete"].contains(&key.as_str()))
        .map(|key| key.to_uppercase())
        .collect();
    methods.sort();
    Some(methods)
}

#[cfg(test)]
mod tests {
    #[test]
    fn allowed_methods_match_templates() {
        let methods = super::allowed_methods("/v1/ledgers/0190/proposals/abc/approval");
        assert_eq!(methods, Some(vec!["POST".to_owned()]));
        let both = super::allowed_methods("/v1/ledgers/0190/payments").unwrap();
        assert_eq!(both, ["GET", "POST"]);
        let literal = super::allowed_methods("/v1/ledgers/0190/dlq/retries").unwrap();
        assert_eq!(literal, ["POST"]);
        assert_eq!(super::allowed_methods("/v1/nothing/here"), None);
        assert_eq!(super::allowed_methods("/v1/ledgers//payments"), None);
    }

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
