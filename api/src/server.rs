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
    let listener = TcpListener::bind(listen_addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {listen_addr}: {e}; set server.listen_addr")
    })?;
    let addr = listener.local_addr()?;
    let data = web::Data::from(Arc::clone(&state));
    let tokens = web::Data::new(state.tokens.clone());
    let max_body = state.config.server.max_body_bytes;
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
            .wrap(middleware::Logger::new("%r %s %Dms").log_target("folio::http"))
            .configure(crate::routes::configure)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::not_found(
                    "no such route; see /openapi.json for the API",
                ))
            }))
    })
    .listen(listener)?
    .shutdown_timeout(10)
    .run();
    let handle = server.handle();
    Ok(RunningServer {
        addr,
        handle,
        server,
    })
}
