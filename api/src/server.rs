//! Building and running the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{middleware, web, App, HttpServer};

use crate::problem::ApiError;
use crate::state::AppState;

/// A running server and the address it listens on.
pub struct RunningServer {
    /// Bound address (useful with port 0).
    pub addr: std::net::SocketAddr,
    /// Handle to stop the server.
    pub handle: ServerHandle,
    /// The server future; await it to run until stopped.
    pub server: Server,
}

/// Binds `listen_addr` and builds the server over `state`.
///
/// # Errors
/// Fails when the address cannot be bound.
pub fn start(state: Arc<AppState>, listen_addr: &str) -> anyhow::Result<RunningServer> {
    start_on(state, bind(listen_addr)?)
}

/// Binds the listening socket, so a busy or invalid address fails before anything else.
///
/// # Errors
/// Names the address and the configuration key to change.
pub fn bind(listen_addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen_addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen_addr}: {e}; set server.listen_addr"))
}

/// Builds the server over `state` on an already bound listener.
///
/// # Errors
/// Fails when the listener cannot be used.
pub fn start_on(state: Arc<AppState>, listener: TcpListener) -> anyhow::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let data = web::Data::from(Arc::clone(&state));
    let tokens = web::Data::new(state.tokens.clone());
    let max_body = state.config.server.max_body_bytes;
    let tls = if state.config.server.uses_tls() {
        let server = &state.config.server;
        Some(crate::tls::api_server_config(
            &server.tls_cert,
            &server.tls_key,
        )?)
    } else {
        None
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(tokens.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(web::QueryConfig::default().error_handler(|error, _| {
                ApiError::invalid(format!("invalid query parameters: {error}")).into()
            }))
            .app_data(web::PathConfig::default().error_handler(|error, _| {
                ApiError::invalid(format!("invalid path: {error}")).into()
            }))
            .wrap(middleware::ErrorHandlers::new().handler(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                move |response| body_too_large(response, max_body),
            ))
            .wrap(middleware::from_fn(crate::db_password::reject_while_stale))
            .wrap(middleware::from_fn(crate::request_id::assign))
            .configure(crate::routes::configure)
            .default_service(web::to(unmatched))
    });
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    let server = server.shutdown_timeout(10).run();
    let handle = server.handle();
    Ok(RunningServer {
        addr,
        handle,
        server,
    })
}

/// Answers a request no route took: 405 with `Allow` when the path exists for other
/// methods, else 404.
async fn unmatched(request: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    let Some(allowed) = crate::routes::openapi::allowed_methods(request.path()) else {
        return Err(ApiError::not_found(
            "no such route; see /openapi.json for the API",
        ));
    };
    let allow = allowed.join(", ");
    let problem = ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        format!(
            "{} is not allowed on {}; use {allow}",
            request.method(),
            request.path()
        ),
    );
    Ok(actix_web::HttpResponse::MethodNotAllowed()
        .insert_header((actix_web::http::header::ALLOW, allow))
        .insert_header((
            actix_web::http::header::CONTENT_TYPE,
            crate::problem::PROBLEM_JSON,
        ))
        .body(problem.body()))
}

/// Turns actix-web's plain-text 413 for an oversized body into a problem document that
/// names the limit; problem documents the handlers built are passed through.
fn body_too_large<B>(
    response: actix_web::dev::ServiceResponse<B>,
    limit: usize,
) -> actix_web::Result<middleware::ErrorHandlerResponse<B>> {
    let is_problem = response
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == crate::problem::PROBLEM_JSON.as_bytes());
    if is_problem {
        return Ok(middleware::ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    let (request, _) = response.into_parts();
    let problem = ApiError::too_large(format!(
        "the request body is over the server.max_body_bytes limit of {limit} bytes; \
         split the file or ask an operator to raise the limit"
    ));
    let response = actix_web::ResponseError::error_response(&problem);
    let response = actix_web::dev::ServiceResponse::new(request, response);
    Ok(middleware::ErrorHandlerResponse::Response(
        response.map_into_right_body(),
    ))
}
