//! Liveness, readiness and metrics.

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// Liveness: the process responds.
#[get("/healthz")]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the store responds and no projection has stopped on an error.
#[get("/readyz")]
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ledgers = match state.store.ledgers().await {
        Ok(ledgers) => ledgers,
        Err(error) => {
            return HttpResponse::ServiceUnavailable()
                .json(json!({"status": "not_ready", "reason": format!("event store: {error}")}))
        }
    };
    for info in &ledgers {
        let status = state.projection_status(info.ledger_id).await;
        if let Some(error) = status.ok().and_then(|status| status.error) {
            return HttpResponse::ServiceUnavailable().json(json!({
                "status": "not_ready",
                "reason": format!("projection of ledger {} stopped: {error}", info.ledger_id),
            }));
        }
    }
    // An open breaker does not make Folio unready (commands are still recorded), but the
    // state is reported so an operator sees why payments wait.
    HttpResponse::Ok().json(json!({
        "status": "ready",
        "ledgers": ledgers.len(),
        "bank_breaker": state.breaker_state(),
        "lease_held": state.workers.is_held(),
    }))
}

/// Prometheus text metrics.
#[get("/metrics")]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut out = String::new();
    state.bank_metrics.render_prometheus(&mut out);
    if let Ok(ledgers) = state.store.ledgers().await {
        out.push_str("# HELP folio_chain_head_position Position of the last sealed event.\n");
        out.push_str("# TYPE folio_chain_head_position gauge\n");
        for info in &ledgers {
            out.push_str(&format!(
                "folio_chain_head_position{{ledger=\"{}\"}} {}\n",
                info.ledger_id, info.head.position
            ));
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}
