//! `folio export-bundle` and `folio verify-bundle`: evidence bundles for auditors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use uuid::Uuid;

use crate::bundle::content::Scope;
use crate::bundle::{self, ExportRequest};

/// Arguments of `folio export-bundle`. Pass at most one scope option; none exports the whole
/// ledger (the tenant's ledger).
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Data directory of the embedded store and keys, opened read-only.
    #[arg(long, env = "FOLIO_DATA_DIR", default_value = "folio-data")]
    data_dir: PathBuf,
    /// TOML configuration file (also `FOLIO_CONFIG`), for the `[kms]` that unwraps the
    /// signing keys; without one, the local KMS of the data directory.
    #[arg(long)]
    config: Option<PathBuf>,
    /// PostgreSQL store to export from instead of the data directory's SQLite file (the keys
    /// still come from the data directory).
    #[arg(long, env = "FOLIO_STORE__URL", hide_env_values = true)]
    store_url: Option<String>,
    /// Ledger to export.
    #[arg(long)]
    ledger: Uuid,
    /// Scope: positions FROM..=TO, written as `FROM-TO`.
    #[arg(long)]
    positions: Option<String>,
    /// Scope: events recorded from this time (microseconds since the Unix epoch, inclusive).
    #[arg(long, requires = "to_micros")]
    from_micros: Option<i64>,
    /// Scope: events recorded before this time (microseconds since the Unix epoch).
    #[arg(long, requires = "from_micros")]
    to_micros: Option<i64>,
    /// Scope: the events of one payment.
    #[arg(long)]
    payment: Option<Uuid>,
    /// Scope: the events of one payee and of the payments to it.
    #[arg(long)]
    payee: Option<Uuid>,
    /// Output directory, or archive file with `--tar`; it must not exist.
    #[arg(long)]
    out: PathBuf,
    /// Write one ustar archive instead of a BagIt directory.
    #[arg(long)]
    tar: bool,
    /// Print the process's peak resident memory (`peak_rss_kib N`) at the end, for benchmarks.
    #[arg(long, hide = true)]
    report_peak_rss: bool,
}

/// Arguments of `folio verify-bundle`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Bundle directory or archive.
    bundle: PathBuf,
}

pub(super) async fn run_export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut config = super::load_config(args.config.as_ref())?;
    config.data_dir = args.data_dir.clone();
    let secrets = std::sync::Arc::new(crate::secrets::Secrets::new(config.secrets.clone())?);
    let kms = crate::kms::open(&config.kms, config.profile, &config.data_dir, &secrets)?;
    let request = ExportRequest {
        kms,
        store: crate::store::StoreLocation::from_dir_or_url(
            &args.data_dir,
            args.store_url.as_deref(),
        ),
        data_dir: args.data_dir.clone(),
        ledger_id: args.ledger,
        scope: scope_of(&args)?,
        out: args.out.clone(),
        archive: args.tar,
    };
    let exported = bundle::export(&request).await?;
    println!(
        "wrote bundle {} of ledger {}: scope {}, {} events selected, checkpoint of tree size {}, manifest BLAKE3 {}",
        args.out.display(),
        args.ledger,
        request.scope.describe(),
        exported.selected,
        exported.tree_size,
        exported.manifest_blake3
    );
    if args.report_peak_rss {
        let kib = super::bench_bundle::peak_rss_kib();
        println!(
            "peak_rss_kib {}",
            kib.map_or_else(|| "n/a".to_owned(), |k| k.to_string())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn scope_of(args: &ExportArgs) -> anyhow::Result<Scope> {
    let mut scopes = Vec::new();
    if let Some(range) = &args.positions {
        let parsed = range
            .split_once('-')
            .and_then(|(from, to)| Some((from.parse().ok()?, to.parse().ok()?)));
        let Some((from, to)) = parsed.filter(|(from, to)| from <= to) else {
            bail!("--positions {range:?} is not FROM-TO with FROM <= TO, such as 0-99");
        };
        scopes.push(Scope::Positions { from, to });
    }
    if let (Some(from_micros), Some(to_micros)) = (args.from_micros, args.to_micros) {
        scopes.push(Scope::Time {
            from_micros,
            to_micros,
        });
    }
    scopes.extend(args.payment.map(Scope::Payment));
    scopes.extend(args.payee.map(Scope::Payee));
    match scopes.len() {
        0 => Ok(Scope::Ledger),
        1 => {
            let scope = scopes.remove(0);
            scope.validate()?;
            Ok(scope)
        }
        _ => bail!(
            "pass one scope option of --positions, --from-micros/--to-micros, --payment, --payee"
        ),
    }
}

pub(super) async fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    match bundle::verify::verify_path(&args.bundle)? {
        Ok(summary) => {
            println!(
                "{}: VALID: scope {}, {}, {} inclusion proof(s)",
                args.bundle.display(),
                summary.scope.describe(),
                bundle::chain_status(&summary.chain),
                summary.proofs
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            println!("{}: INVALID: {failure}", args.bundle.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
