//! `folio history`: lists a ledger's events, verified, decoded and filtered.

use std::path::PathBuf;
use std::process::ExitCode;

use uuid::Uuid;

use crate::replay::history::{self, Causation, Filter, Format};
use crate::replay::source::{self, EventSource};
use crate::store::StoreLocation;

/// Event source of the auditor replay commands.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// Export file written by `folio export-ledger`; omit it to read the store.
    file: Option<PathBuf>,
    /// Data directory of the embedded store, opened read-only.
    #[arg(long, env = "FOLIO_DATA_DIR", default_value = "folio-data")]
    data_dir: PathBuf,
    /// PostgreSQL store to read instead of the data directory's SQLite file.
    #[arg(long, env = "FOLIO_STORE__URL", hide_env_values = true)]
    store_url: Option<String>,
    /// Ledger to read. Required when the store contains more than one.
    #[arg(long)]
    ledger: Option<Uuid>,
}

impl SourceArgs {
    /// Returns the event source these arguments name.
    pub fn source(&self) -> EventSource {
        match &self.file {
            Some(file) => EventSource::Export(file.clone()),
            None => EventSource::Store(StoreLocation::from_dir_or_url(
                &self.data_dir,
                self.store_url.as_deref(),
            )),
        }
    }

    /// Returns the ledger named with `--ledger`.
    pub fn ledger(&self) -> Option<Uuid> {
        self.ledger
    }
}

/// Arguments of `folio history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,
    /// List only the events of this stream, such as `allowlist` or `payment-<id>`.
    #[arg(long)]
    stream: Option<String>,
    /// List only the events of this actor id, or with this operator in their
    /// authentication context.
    #[arg(long)]
    actor: Option<String>,
    /// List only the events with this correlation id.
    #[arg(long)]
    correlation: Option<Uuid>,
    /// First position to list.
    #[arg(long)]
    from: Option<u64>,
    /// Last position to list; the chain is verified up to here.
    #[arg(long)]
    to: Option<u64>,
    /// Earliest recording time: RFC 3339 or microseconds since the Unix epoch.
    #[arg(long)]
    since: Option<String>,
    /// Latest recording time: RFC 3339 or microseconds since the Unix epoch.
    #[arg(long)]
    until: Option<String>,
    /// List the event with this id and its causes, back to the first ("why").
    #[arg(long, conflicts_with = "caused")]
    why: Option<Uuid>,
    /// List the event with this id and every event it caused, directly or not.
    #[arg(long)]
    caused: Option<Uuid>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter = filter(&args)?;
    let loaded = source::load(&args.source.source(), args.source.ledger(), filter.cutoff()).await?;
    let walk = match (args.why, args.caused) {
        (Some(id), _) => Some(Causation::Why(id)),
        (None, Some(id)) => Some(Causation::Caused(id)),
        (None, None) => None,
    };
    let (listed, external_cause) = history::select(&loaded.events, walk, &filter)?;
    if let Some(cause) = external_cause {
        eprintln!(
            "note: the first event listed was caused by {cause}, which is not an event of this \
             ledger (a request id)"
        );
    }
    print!("{}", history::render(&listed, args.format));
    if !loaded.signed_head_checked {
        eprintln!("note: verified from genesis up to the cutoff; events after it were not read");
    }
    Ok(ExitCode::SUCCESS)
}

fn filter(args: &Args) -> anyhow::Result<Filter> {
    let parse = |text: &Option<String>| {
        text.as_deref()
            .map(crate::replay::event_view::parse_time)
            .transpose()
    };
    let filter = Filter {
        stream: args.stream.clone(),
        actor: args.actor.clone(),
        correlation: args.correlation,
        from_position: args.from,
        to_position: args.to,
        since_micros: parse(&args.since)?,
        until_micros: parse(&args.until)?,
    };
    filter.check_range()?;
    Ok(filter)
}
