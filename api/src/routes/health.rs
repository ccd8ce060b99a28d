//! Liveness, readiness and metrics.

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// Liveness: the process responds.
#[get("/healthz")]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: every database password secret is served, the store responds and no
/// projection has stopped on an error.
#[get("/readyz")]
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if let Some(problem) = state.secret_health.problem() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "not_ready", "reason": format!("secret: {problem}")}));
    }
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
    let leased = state.workers.held();
    // An open breaker does not make Folio unready (commands are still recorded), but the
    // state is reported so an operator sees why payments wait. Neither does a quarantined
    // ledger: the other ledgers, and reads of that one, still work.
    let quarantined: Vec<_> = ledgers
        .iter()
        .filter_map(|info| {
            let reason = state.store.quarantine_reason(info.ledger_id)?;
            Some(json!({"ledger_id": info.ledger_id, "reason": reason}))
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "quarantined_ledgers": quarantined,
        "status": "ready",
        "ledgers": ledgers.len(),
        "bank_breaker": state.breaker_state(),
        "lease_held": !leased.is_empty(),
        "leased_ledgers": leased,
    }))
}

/// Prometheus text metrics.
#[get("/metrics")]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut out = String::new();
    state.bank_metrics.render_prometheus(&mut out);
    let used = state
        .mfa
        .recovery_codes_used
        .load(std::sync::atomic::Ordering::Relaxed);
    out.push_str("# HELP folio_recovery_codes_used_total Recovery codes used to sign in.\n");
    out.push_str("# TYPE folio_recovery_codes_used_total counter\n");
    out.push_str(&format!("folio_recovery_codes_used_total {used}\n"));
    crate::metrics::API.render(&mut out);
    crate::metrics::MFA.render(&mut out);
    crate::secrets::METRICS.render(&mut out);
    render_key_cache(&mut out, &state.personal.keys().cache_metrics());
    if let Some(pending) = state.rewrap.pending() {
        out.push_str(
            "# HELP folio_kms_rewrap_pending_keys Data keys still wrapped by an older KEK \
             version after the last rewrap pass.\n",
        );
        out.push_str("# TYPE folio_kms_rewrap_pending_keys gauge\n");
        out.push_str(&format!("folio_kms_rewrap_pending_keys {pending}\n"));
    }
    crate::metrics::render_ledgers(&mut out, &ledger_gauges(&state).await);
    crate::metrics::render_controls(&mut out, &crate::controls::latest());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

/// Reads each ledger's head, projection progress and dead-letter queue. A ledger whose
/// read side cannot be read still reports its head, so one failure does not hide the rest.
async fn ledger_gauges(state: &AppState) -> Vec<crate::metrics::LedgerGauges> {
    let Ok(ledgers) = state.store.ledgers().await else {
        return Vec::new();
    };
    let now = state.clock.now_micros();
    let verification = crate::verification::snapshot();
    let mut all = Vec::with_capacity(ledgers.len());
    for info in &ledgers {
        let mut gauges = crate::metrics::LedgerGauges {
            ledger: info.ledger_id.to_string(),
            head_position: info.head.position,
            lease_held: state.workers.for_ledger(info.ledger_id).is_some(),
            ..Default::default()
        };
        if let Ok(status) = state.projection_status(info.ledger_id).await {
            gauges.projection_position = status.position;
            gauges.projection_lag = status.lag;
            gauges.projection_stopped = status.error.is_some();
        }
        if let Ok(stats) = state.models.dead_letter_stats(info.ledger_id, now).await {
            gauges.dlq_depth = Some(stats.count);
            gauges.dlq_oldest_age_seconds = stats.oldest_age_seconds;
        }
        if let Ok((_, proposals, _)) = state.allow_list_and_proposals(info.ledger_id).await {
            let pending = proposals.iter().filter(|proposal| {
                proposal.status == domain::operators::ProposalStatus::Pending
                    && proposal.expires_at_micros > now
            });
            gauges.approvals_pending = Some(pending.count() as u64);
        }
        if let Ok((book, _)) = state.dlq_book(info.ledger_id).await {
            let pending = book.iter().filter(|decision| {
                decision.status == domain::dlq::DecisionStatus::Pending
                    && decision.expires_at_micros > now
            });
            gauges.dlq_decisions_pending = Some(pending.count() as u64);
        }
        if let Some(result) = verification.get(&info.ledger_id) {
            gauges.verified_position = result.verified_position;
            gauges.verification_failed = Some(result.failure.is_some());
        }
        all.push(gauges);
    }
    all
}

/// Renders the data-key cache counters.
fn render_key_cache(out: &mut String, counters: &crate::kms::cache::CacheMetrics) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering;
    for (name, help, counter) in [
        (
            "folio_kms_data_key_cache_hits_total",
            "Data keys served from memory.",
            &counters.hits,
        ),
        (
            "folio_kms_data_key_cache_misses_total",
            "Data keys unwrapped by the KMS.",
            &counters.misses,
        ),
        (
            "folio_kms_data_key_cache_evictions_total",
            "Data keys dropped from memory for age or room.",
            &counters.evictions,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
    }
}
