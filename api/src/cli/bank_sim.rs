//! `folio bank-sim`: the bank simulator over mutual TLS, for local runs and tests.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::bank::sim::{BankSim, BankSimConfig, FaultMode};

/// Arguments of `folio bank-sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: String,
    /// Directory of the PKI (CA, server and client certificates); created with fresh
    /// development certificates if it has none.
    #[arg(long, default_value = "folio-data/bank-pki")]
    pki_dir: PathBuf,
    /// Fault mode at start: ok, fail, timeout or slow.
    #[arg(long, default_value = "ok")]
    mode: String,
    /// Delay of `slow` mode, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    delay_ms: u64,
    /// Apply the fault mode to this many calls only, then respond normally.
    #[arg(long)]
    count: Option<u64>,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pki = if args.pki_dir.join("ca.pem").exists() {
        crate::tls::PkiPaths::in_dir(&args.pki_dir)
    } else {
        crate::tls::generate_dev_pki(&args.pki_dir)?
    };
    let mode = FaultMode::parse(&args.mode, args.delay_ms).map_err(anyhow::Error::msg)?;
    let sim = BankSim::start(BankSimConfig::new(&args.listen, &pki)).await?;
    sim.set_fault(mode, args.count);
    println!(
        "bank simulator listening on https://{} (client certificates from {})",
        sim.addr(),
        pki.ca_cert.display()
    );
    tokio::signal::ctrl_c().await?;
    sim.stop().await;
    Ok(ExitCode::SUCCESS)
}
