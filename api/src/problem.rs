//! API errors as RFC 9457 problem documents, mapped to HTTP status in one place.
//!
//! Every problem carries a stable `code`; codes are never renumbered or reused,
//! so clients may match on them. The `type` URI is `urn:folio:problem:<code>`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Map, Value};

/// Content type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error returned by the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, such as `payee_not_allow_listed`.
    pub code: &'static str,
    /// Short summary of the problem type.
    pub title: &'static str,
    /// Description of this request's problem and how to fix it.
    pub detail: String,
    /// Extra members (for example the differing fields of a reused idempotency key).
    pub extra: Map<String, Value>,
}

/// Wire form of a problem document.
#[derive(Serialize)]
struct ProblemDocument<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: String,
    ) -> Self {
        ApiError {
            status,
            code,
            title,
            detail,
            extra: Map::new(),
        }
    }

    /// Adds an extra member to the document.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// 400 `invalid_request`: the body or a parameter is malformed.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid request",
            detail.into(),
        )
    }

    /// 400 `idempotency_key_missing`.
    pub fn idempotency_key_missing() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "idempotency_key_missing",
            "Idempotency-Key header required",
            "every POST needs an Idempotency-Key header (1 to 255 visible ASCII characters); \
             send a new unique value per operation and reuse it when retrying"
                .to_owned(),
        )
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            detail.into(),
        )
    }

    /// 403 `forbidden`: the token lacks a scope or the ledger.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not allowed",
            detail.into(),
        )
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            detail.into(),
        )
    }

    /// 409 `conflict`: a concurrent change won; retrying may succeed.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "conflict",
            "Concurrent change",
            detail.into(),
        )
    }

    /// 422 `idempotency_key_reused`: same key, different request.
    pub fn idempotency_key_reused(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "Idempotency key reused with a different request",
            detail.into(),
        )
    }

    /// 422 with a business rule's own stable code.
    pub fn rejected(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "Request rejected by a business rule",
            detail.into(),
        )
    }

    /// 422 `aba_file_invalid`.
    pub fn aba_invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "aba_file_invalid",
            "Invalid ABA file",
            detail.into(),
        )
    }

    /// 409 with a stable code for a request that repeats something already recorded.
    pub fn duplicate(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            code,
            "Already recorded",
            detail.into(),
        )
    }

    /// 413 `body_too_large`.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "Request body too large",
            detail.into(),
        )
    }

    /// 400 `idempotency_key_invalid`.
    pub fn idempotency_key_invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "idempotency_key_invalid",
            "Invalid Idempotency-Key header",
            detail.into(),
        )
    }

    /// 503 `not_ready`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "Service unavailable",
            detail.into(),
        )
    }

    /// 500 `internal`: the detail is logged, not returned.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error while handling a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server failed to handle the request; it was logged, and nothing was \
             stored unless a position was returned"
                .to_owned(),
        )
    }

    /// Serialises the problem document to JSON bytes.
    pub fn body(&self) -> Vec<u8> {
        let document = ProblemDocument {
            type_uri: format!("urn:folio:problem:{}", self.code),
            title: self.title,
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
            extra: &self.extra,
        };
        serde_json::to_vec(&document).unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        // A problem that names a wait repeats it as Retry-After (delay-seconds), the header
        // that HTTP clients and proxies act on.
        if let Some(seconds) = self
            .extra
            .get("retry_after_seconds")
            .and_then(Value::as_u64)
        {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.body(self.body())
    }
}

impl From<eventstore_adapter::StoreError> for ApiError {
    fn from(error: eventstore_adapter::StoreError) -> Self {
        use eventstore_adapter::StoreError;
        match error {
            StoreError::LedgerNotFound(id) => ApiError::not_found(format!("ledger {id} not found")),
            StoreError::WrongExpectedVersion { .. } => ApiError::conflict(format!(
                "{error}; another request changed the same record first, so read it again and retry"
            )),
            StoreError::InvalidAppend(reason) => ApiError::invalid(reason),
            StoreError::CommitFailed(error) => ApiError {
                code: "commit_failed",
                ..ApiError::unavailable(format!(
                    "nothing was stored because the group commit failed ({error}); retry with \
                     the same Idempotency-Key"
                ))
                .with("retry_after_seconds", Value::from(1))
            },
            quarantined @ StoreError::LedgerQuarantined { .. } => ApiError {
                code: "ledger_quarantined",
                ..ApiError::unavailable(format!(
                    "{quarantined}; see docs/operations/incident-response.md, \"chain \
                     verification failed\""
                ))
            },
            other => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_commit_is_retryable_503() {
        let lost = eventstore_adapter::BackendError::HeadMoved {
            ledger_id: uuid::Uuid::nil(),
            expected: Some(7),
        };
        let error = eventstore_adapter::StoreError::CommitFailed(std::sync::Arc::new(lost));
        let problem = ApiError::from(error);
        assert_eq!(problem.code, "commit_failed");
        let response = problem.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }

    #[test]
    fn named_wait_becomes_retry_after() {
        let waiting = ApiError::invalid("wait").with("retry_after_seconds", Value::from(42));
        let response = waiting.error_response();
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "42");
        let plain = ApiError::invalid("no wait").error_response();
        assert!(!plain.headers().contains_key(header::RETRY_AFTER));
    }
}
