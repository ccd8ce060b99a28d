//! `folio import-aba`: submit an ABA file to a running server over HTTP.
//!
//! The command goes through the same endpoint as any API client, so the file
//! gets the same checks, idempotency and audit events.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use uuid::Uuid;

/// Arguments of `folio import-aba`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ABA file.
    file: PathBuf,
    /// Base URL of the Folio server.
    #[arg(
        long,
        env = "FOLIO_SERVER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// Ledger to submit to.
    #[arg(long)]
    ledger: Uuid,
    /// API token with `payments:submit` (read from the environment, not the command line,
    /// so it stays out of shell history).
    #[arg(long = "token-env", default_value = "FOLIO_TOKEN")]
    token_env: String,
    /// Idempotency key; defaults to the file's blake3, so resubmitting a file is a no-op.
    #[arg(long)]
    idempotency_key: Option<String>,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let token = std::env::var(&args.token_env).with_context(|| {
        format!(
            "set {} to an API token with payments:submit",
            args.token_env
        )
    })?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read ABA file {}", args.file.display()))?;
    let key = args
        .idempotency_key
        .unwrap_or_else(|| format!("aba-{}", blake3::hash(&bytes).to_hex()));
    let url = format!(
        "{}/v1/ledgers/{}/payments/batches",
        args.server.trim_end_matches('/'),
        args.ledger
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.trim())
        .header(crate::idempotency::HEADER, &key)
        .header("Content-Type", "text/plain")
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    println!("{}", serde_json::to_string_pretty(&body)?);
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("the server rejected the file ({status})");
        Ok(ExitCode::FAILURE)
    }
}
