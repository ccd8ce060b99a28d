//! `folio token`: issue and revoke API tokens in the data directory, or in the PostgreSQL
//! database that the nodes share.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use domain::clock::{Clock, SystemClock};
use uuid::Uuid;

use crate::auth::{parse_scopes, TokenStore};
use crate::credentials::CredentialsLocation;

/// Location of the token store, from the same flags and variables as `folio serve` reads.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Data directory of the server.
    #[arg(long, env = "FOLIO_DATA_DIR", default_value = "folio-data")]
    data_dir: PathBuf,
    /// PostgreSQL event store the nodes share; their tokens live in the same database.
    #[arg(long, env = "FOLIO_STORE__URL", hide_env_values = true)]
    store_url: Option<String>,
    /// PostgreSQL database of operators and tokens, when `operators.url` names one apart
    /// from the event store.
    #[arg(long, env = "FOLIO_OPERATORS__URL", hide_env_values = true)]
    operators_url: Option<String>,
}

impl StoreArgs {
    fn location(&self) -> CredentialsLocation {
        CredentialsLocation::from_args(
            &self.data_dir,
            self.store_url.as_deref(),
            self.operators_url.as_deref(),
        )
    }
}

/// `folio token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Issue a token and print it once.
    Create {
        /// Store of the server's tokens.
        #[command(flatten)]
        store: StoreArgs,
        /// Client name recorded as the actor of the token's events.
        #[arg(long)]
        client: String,
        /// Comma-separated scopes (such as `payments:submit,payments:read`) or `all`.
        #[arg(long)]
        scopes: String,
        /// Restrict the token to these ledgers (repeatable); default: every ledger.
        #[arg(long = "ledger")]
        ledgers: Vec<Uuid>,
    },
    /// Revoke a token by its public id (the part after `folio_`); it stops working at once.
    Revoke {
        /// Store of the server's tokens.
        #[command(flatten)]
        store: StoreArgs,
        /// Public token id (16 hex digits).
        #[arg(long)]
        id: String,
    },
}

async fn revoke(location: &CredentialsLocation, id: &str) -> anyhow::Result<ExitCode> {
    let store = TokenStore::open(location).await?;
    if store.revoke(id, SystemClock.now_micros()).await? {
        println!("revoked token {id}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("no active token with id {id:?} in {}", location.describe());
        Ok(ExitCode::FAILURE)
    }
}

pub(super) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let (store, client, scopes, ledgers) = match command {
        Command::Create {
            store,
            client,
            scopes,
            ledgers,
        } => (store, client, scopes, ledgers),
        Command::Revoke { store, id } => return revoke(&store.location(), &id).await,
    };
    let client = client.trim().to_owned();
    if client.is_empty() || client.len() > 128 {
        anyhow::bail!(
            "--client must name the client in 1 to 128 characters; it is recorded as the actor"
        );
    }
    let scopes = parse_scopes(&scopes).map_err(anyhow::Error::msg)?;
    if scopes.is_empty() {
        anyhow::bail!(
            "--scopes is empty; give a comma-separated list such as \
             payments:submit,payments:read, or all"
        );
    }
    let location = store.location();
    let data_dir = &store.data_dir;
    if !location.is_shared() && !data_dir.join("events.sqlite").exists() {
        // Not an error, because a PostgreSQL node has no events.sqlite, but a mistyped
        // --data-dir would otherwise issue a token no server reads.
        eprintln!(
            "note: {} holds no events.sqlite; make sure `folio serve` uses this data \
             directory, or pass --store-url for nodes on PostgreSQL",
            data_dir.display()
        );
    }
    // The same modes as `folio serve` gives the file: the token digests are private.
    let store = TokenStore::open(&location).await?;
    let ledgers: Option<BTreeSet<Uuid>> = if ledgers.is_empty() {
        None
    } else {
        Some(ledgers.into_iter().collect())
    };
    let token = store
        .issue(&client, &scopes, ledgers.as_ref(), SystemClock.now_micros())
        .await?;
    println!("{token}");
    // The id is the part between `folio_` and the next underscore; revocation takes it.
    let id = token.split('_').nth(1).unwrap_or_default();
    eprintln!(
        "This token is shown once; store it in your secret manager. Its id is {id}: \
         revoke it with `folio token revoke --id {id}`."
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes a secret to a new file readable only by its owner.
pub(crate) fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}
