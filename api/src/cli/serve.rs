//! `folio serve`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::auth::parse_scopes;
use crate::state::AppState;

/// Arguments of `folio serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (also `FOLIO_CONFIG`); `FOLIO_` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory, overriding `data_dir` of the configuration and `FOLIO_DATA_DIR`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = super::load_config(args.config.as_ref())?;
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    let listener = crate::server::bind(&config.server.listen_addr)?;
    let state = AppState::open(config).await?;
    ensure_bootstrap_token(&state).await?;
    let running = crate::server::start_on(std::sync::Arc::clone(&state), listener)?;
    let rewrap = tokio::spawn(crate::key_rotation::run_rewrap_job(std::sync::Arc::clone(
        &state,
    )));
    let (stop_verification, stopped) = tokio::sync::watch::channel(false);
    let verification = tokio::spawn(crate::verification::run(
        state.store.clone(),
        Duration::from_secs(state.config.verification.interval_seconds),
        crate::verification::Verification::new(state.config.verification.full_every)
            .quarantining(state.config.verification.quarantine_on_failure),
        stopped,
    ));
    let controls = tokio::spawn(crate::controls::schedule(
        state.store.clone(),
        state.config.controls.policy(),
        std::sync::Arc::clone(&state.clock),
        state.config.controls.interval(),
        stop_verification.subscribe(),
    ));
    tracing::info!(addr = %running.addr, data_dir = %state.config.data_dir.display(), "folio serving");
    running.server.await.context("HTTP server failed")?;
    tracing::info!("HTTP server stopped; draining workers");
    let _ = stop_verification.send(true);
    let _ = verification.await;
    let _ = controls.await;
    state.shutdown().await;
    let _ = rewrap.await;
    tracing::info!("folio stopped");
    Ok(ExitCode::SUCCESS)
}

/// On a fresh data directory, issues one token with every scope and writes it to a 0600
/// file, so the operator can start without a separate step. The token never reaches a log.
async fn ensure_bootstrap_token(state: &AppState) -> anyhow::Result<()> {
    if state.tokens.any_active().await? {
        return Ok(());
    }
    let scopes = parse_scopes("all").map_err(anyhow::Error::msg)?;
    let now = state.clock.now_micros();
    let token = state
        .tokens
        .issue("bootstrap-admin", &scopes, None, now)
        .await?;
    let path = state.config.data_dir.join("bootstrap-token");
    crate::cli::token::write_secret_file(&path, &token)?;
    tracing::warn!(
        path = %path.display(),
        "no API token existed: issued a bootstrap token with every scope; \
         read it from the file, then issue narrower tokens with `folio token create`"
    );
    Ok(())
}
