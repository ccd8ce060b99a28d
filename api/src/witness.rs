//! The witness publisher: hands every new signed checkpoint to outside parties, as a JSON
//! line appended to a file and as a JSON POST to an HTTP endpoint.
//!
//! It runs as its own task and reads checkpoints back from the store, so a slow or failing
//! witness never holds up an append. Each checkpoint gets a bounded number of attempts per
//! witness; after the last one the failure is logged and the publisher moves on, because an
//! auditor can always fetch missed checkpoints from `GET /v1/ledgers/{id}/checkpoints`.
//! Progress (the next `$checkpoints` version per ledger) is kept in a small JSON file in the
//! data directory, so a restart does not publish everything again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use domain::checkpoint::{checkpoint_of, CHECKPOINT_STREAM};
use eventstore_adapter::EventStore;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::CheckpointsConfig;
use crate::proofs::checkpoint_json;

/// Name of the progress file in the data directory.
const PROGRESS_FILE: &str = "witness-progress.json";

/// Checkpoints read per ledger and round.
const PAGE: u32 = 256;

/// Timeout of one POST to the HTTP witness.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Maximum wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A running publisher; [`Publisher::shutdown`] stops it after the checkpoint in hand.
#[derive(Debug)]
pub struct Publisher {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Destinations of the checkpoints.
struct Sinks {
    file: Option<PathBuf>,
    url: Option<String>,
    client: reqwest::Client,
    attempts: u32,
}

impl Publisher {
    /// Starts the publisher when a witness is configured.
    ///
    /// # Errors
    /// Fails when the HTTP client cannot be built or the progress file cannot be read.
    pub fn start(
        config: &CheckpointsConfig,
        data_dir: &Path,
        store: EventStore,
    ) -> anyhow::Result<Option<Publisher>> {
        if !config.has_witness() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .use_rustls_tls()
            .build()
            .context("cannot build the HTTP client of the checkpoint witness")?;
        let sinks = Sinks {
            file: (!config.witness_file.as_os_str().is_empty())
                .then(|| config.witness_file.clone()),
            url: (!config.witness_url.is_empty()).then(|| config.witness_url.clone()),
            client,
            attempts: config.publish_attempts,
        };
        let progress_path = data_dir.join(PROGRESS_FILE);
        let progress = read_progress(&progress_path)?;
        let interval = Duration::from_secs(config.publish_interval_seconds);
        let (stop, stopped) = watch::channel(false);
        let worker = Worker {
            store,
            sinks,
            progress,
            progress_path,
        };
        let task = tokio::spawn(worker.run(interval, stopped));
        Ok(Some(Publisher { stop, task }))
    }

    /// Stops the publisher and waits for it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "checkpoint publisher failed");
        }
    }
}

struct Worker {
    store: EventStore,
    sinks: Sinks,
    /// Next `$checkpoints` stream version to publish, per ledger.
    progress: BTreeMap<Uuid, u64>,
    progress_path: PathBuf,
}

impl Worker {
    async fn run(mut self, interval: Duration, mut stopped: watch::Receiver<bool>) {
        loop {
            if let Err(error) = self.round(&stopped).await {
                tracing::warn!(error = %format!("{error:#}"), "checkpoint publishing round failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stopped.changed() => {}
            }
            if *stopped.borrow() {
                return;
            }
        }
    }

    /// Publishes every checkpoint recorded since the last round, ledger by ledger.
    async fn round(&mut self, stopped: &watch::Receiver<bool>) -> anyhow::Result<()> {
        let ledgers = self.store.ledgers().await?;
        for info in ledgers {
            let ledger_id = info.ledger_id;
            loop {
                if *stopped.borrow() {
                    return Ok(());
                }
                let from = self.progress.get(&ledger_id).copied().unwrap_or(0);
                let page = self
                    .store
                    .read_stream(ledger_id, CHECKPOINT_STREAM, from, PAGE)
                    .await?;
                for event in &page {
                    let checkpoint = checkpoint_of(event).map_err(anyhow::Error::msg)?;
                    self.sinks.publish(&checkpoint_json(&checkpoint)).await;
                    self.progress.insert(ledger_id, event.stream_version + 1);
                    write_progress(&self.progress_path, &self.progress)?;
                }
                if page.len() < PAGE as usize {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl Sinks {
    /// Sends one checkpoint to every witness, each with a bounded number of attempts.
    async fn publish(&self, checkpoint: &serde_json::Value) {
        let tree_size = checkpoint["tree_size"].as_u64().unwrap_or(0);
        let ledger = checkpoint["ledger_id"].as_str().unwrap_or("").to_owned();
        if let Some(path) = &self.file {
            let result = self.retry(|| async { append_line(path, checkpoint) }).await;
            log_outcome("file", &ledger, tree_size, result);
        }
        if let Some(url) = &self.url {
            let result = self.retry(|| self.post(url, checkpoint)).await;
            log_outcome("http", &ledger, tree_size, result);
        }
    }

    async fn retry<F, Fut>(&self, mut attempt: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut last = None;
        for _ in 0..self.attempts {
            match attempt().await {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(error),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt was made")))
    }

    async fn post(&self, url: &str, checkpoint: &serde_json::Value) -> anyhow::Result<()> {
        let response = self.client.post(url).json(checkpoint).send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("witness answered HTTP {status}");
        }
        Ok(())
    }
}

fn log_outcome(witness: &str, ledger: &str, tree_size: u64, result: anyhow::Result<()>) {
    match result {
        Ok(()) => tracing::debug!(witness, ledger, tree_size, "checkpoint published"),
        Err(error) => tracing::warn!(
            witness,
            ledger,
            tree_size,
            error = %format!("{error:#}"),
            "checkpoint not published after every attempt; witnesses can fetch it from the API"
        ),
    }
}

/// Appends one JSON line and flushes it to disk.
fn append_line(path: &Path, checkpoint: &serde_json::Value) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open witness file {}", path.display()))?;
    let mut line = checkpoint.to_string();
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.sync_data()?;
    Ok(())
}

fn read_progress(path: &Path) -> anyhow::Result<BTreeMap<Uuid, u64>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a witness progress file; delete it to publish every checkpoint again",
                path.display()
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the progress file through a temporary file, so a crash leaves the old or the new.
fn write_progress(path: &Path, progress: &BTreeMap<Uuid, u64>) -> anyhow::Result<()> {
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, serde_json::to_vec(progress)?)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}
