//! Request and correlation ids.
//!
//! Every request runs inside a `http_request` span that carries a fresh request id and a
//! correlation id, so each log line of one request can be found together. The correlation
//! id is the client's `X-Correlation-Id` when it sends one (a UUID), else the request id.
//! The command routes stamp it on every event they record, so an auditor can follow one
//! client action from the log to the ledger. Both ids come back as response headers.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};
use tracing::Instrument;
use uuid::Uuid;

use crate::problem::ApiError;

/// Response header with the id Folio gave the request.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Request and response header with the id that groups the events of one client action.
pub const CORRELATION_ID_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// Ids of one request, stored in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct RequestIds {
    /// Id of this request (UUIDv7), unique per request.
    pub request_id: Uuid,
    /// Id shared by the events this request records.
    pub correlation_id: Uuid,
}

/// Returns the correlation id of `request`, or a fresh one outside the middleware (tests
/// that call a handler directly).
pub fn correlation_id(request: &HttpRequest) -> Uuid {
    request
        .extensions()
        .get::<RequestIds>()
        .map_or_else(Uuid::now_v7, |ids| ids.correlation_id)
}

/// Middleware that assigns the ids, runs the request in its span, logs its outcome and
/// echoes the ids.
///
/// # Errors
/// A `X-Correlation-Id` that is not a UUID is rejected with 400.
pub async fn assign(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = Uuid::now_v7();
    let correlation_id = match request.headers().get(&CORRELATION_ID_HEADER) {
        None => request_id,
        Some(value) => parse_correlation_id(value)?,
    };
    request.extensions_mut().insert(RequestIds {
        request_id,
        correlation_id,
    });

    let span = tracing::info_span!(
        "http_request",
        %request_id,
        %correlation_id,
        method = %request.method(),
        path = %request.path(),
    );
    let started = Instant::now();
    let mut response = next.call(request).instrument(span.clone()).await?;

    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis();
    span.in_scope(|| tracing::info!(status, elapsed_ms, "request finished"));
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID_HEADER, uuid_header(request_id));
    headers.insert(CORRELATION_ID_HEADER, uuid_header(correlation_id));
    Ok(response)
}

fn parse_correlation_id(value: &HeaderValue) -> Result<Uuid, ApiError> {
    value
        .to_str()
        .ok()
        .and_then(|text| Uuid::parse_str(text.trim()).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "the X-Correlation-Id header is not a UUID; send a UUID such as \
                 0192f3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d, or leave the header out",
            )
        })
}

fn uuid_header(id: Uuid) -> HeaderValue {
    // A hyphenated UUID is ASCII, which every header value accepts.
    HeaderValue::from_str(&id.to_string()).expect("a UUID is a valid header value")
}
