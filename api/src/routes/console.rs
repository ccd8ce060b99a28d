//! The operator console: static files compiled into the binary and served under
//! `/console/`. The console calls the public API like any client, so it holds no
//! privileges of its own.

use actix_web::http::header;
use actix_web::{get, web, HttpResponse};

use crate::problem::ApiError;

/// Content Security Policy of every console file: scripts and styles from this origin
/// only, no inline code, no framing, and API calls back to this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// Files of the console: name, media type and content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../console/console.css"),
    ),
];

/// Redirects `/console` to the console's page.
#[get("/console")]
pub(crate) async fn root() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/console/"))
        .finish()
}

/// Serves one console file.
#[get("/console/{file}")]
pub(crate) async fn file(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(name.as_str())
}

/// Serves the console's page at `/console/`.
#[get("/console/")]
pub(crate) async fn index() -> Result<HttpResponse, ApiError> {
    serve("index.html")
}

fn serve(wanted: &str) -> Result<HttpResponse, ApiError> {
    let (_, media_type, content) = FILES
        .iter()
        .find(|(name, _, _)| *name == wanted)
        .ok_or_else(|| ApiError::not_found(format!("the console has no file {wanted:?}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, *media_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(*content))
}
