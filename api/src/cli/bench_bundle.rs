//! `folio bench --bundle-sizes A,B`: evidence-bundle export speed and peak memory at two or
//! more ledger sizes, to show that memory stays flat as the range grows.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use domain::clock::SystemClock;
use domain::record::Actor;
use eventstore_adapter::sqlite::SqliteBackend;
use eventstore_adapter::{
    AppendRequest, CheckpointPolicy, EventStore, ExpectedVersion, StreamWrite,
};
use uuid::Uuid;

/// Events per append while the benchmark ledger is built.
const BATCH: u64 = 1_000;

/// Builds a ledger of each size and exports its whole-ledger bundle, printing a table row
/// per size with the export rate and the peak resident memory of the export.
///
/// # Errors
/// A store, key or file error.
pub(super) async fn run(scratch: &Path, sizes: &[u64]) -> anyhow::Result<()> {
    println!(
        "| ledger events | export seconds | events per second | peak RSS during export (MiB) |"
    );
    println!("|---:|---:|---:|---:|");
    for &size in sizes {
        let data_dir = scratch.join(format!("bundle-{size}"));
        let ledger = build(&data_dir, size).await?;
        // Each export runs in a child process, so its peak memory is its own and not what
        // building the ledger left behind in this one.
        let started = Instant::now();
        let output = std::process::Command::new(std::env::current_exe()?)
            .arg("export-bundle")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--ledger")
            .arg(ledger.to_string())
            .arg("--out")
            .arg(data_dir.join("bundle"))
            .arg("--report-peak-rss")
            .output()
            .context("run folio export-bundle")?;
        let seconds = started.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "export failed: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let peak = stdout
            .lines()
            .find_map(|line| line.strip_prefix("peak_rss_kib "))
            .and_then(|kib| kib.trim().parse::<f64>().ok())
            .map_or_else(|| "n/a".to_owned(), |kib| format!("{:.1}", kib / 1024.0));
        let events = size + 1 + size / BATCH;
        println!(
            "| {events} | {seconds:.2} | {:.0} | {peak} |",
            events as f64 / seconds
        );
        std::fs::remove_dir_all(&data_dir).ok();
    }
    Ok(())
}

async fn build(data_dir: &Path, size: u64) -> anyhow::Result<Uuid> {
    std::fs::create_dir_all(data_dir)?;
    let keys = crate::keys::KeyRing::load_or_create(data_dir)?;
    let backend = SqliteBackend::open_dir(data_dir)
        .await
        .context("open the benchmark store")?;
    let store = EventStore::open(Arc::new(backend), keys.current(), Arc::new(SystemClock));
    store.set_checkpoint_policy(Some(CheckpointPolicy {
        every_events: BATCH,
        every_seconds: 0,
    }));
    let ledger = Uuid::now_v7();
    store
        .create_ledger(ledger, "bench", Actor::system("bench"), Uuid::now_v7())
        .await?;
    let mut written = 0;
    while written < size {
        let count = BATCH.min(size - written);
        let events = (0..count).map(|_| super::bench::bench_event()).collect();
        let write = StreamWrite {
            stream_id: format!("s{}", written / BATCH),
            expected: ExpectedVersion::Any,
            events,
        };
        let request = AppendRequest {
            writes: vec![write],
            idempotency: None,
        };
        store.append(ledger, request).await?;
        written += count;
    }
    store.shutdown().await;
    Ok(ledger)
}

/// Returns `VmHWM` (peak resident set size) of this process in KiB, on Linux.
pub(super) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
