//! `folio operator`: bootstrap the first administrator of a ledger.
//!
//! Later operators are created by an administrator over the API, with step-up, so that
//! each creation is an event with its authentication context. The bootstrap writes to the
//! operator store directly: the data directory, or the PostgreSQL database that the nodes
//! share. The server records its `operator.created` event at the administrator's first
//! sign-in.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use domain::clock::{Clock, SystemClock};
use domain::operators::Role;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::operators::{create_operator, OperatorStore, SecretHasher};

/// `folio operator` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the first administrator of a ledger; the password is read from standard
    /// input (one line) or from `--password-file`.
    Create {
        /// Data directory of the server.
        #[arg(long, env = "FOLIO_DATA_DIR", default_value = "folio-data")]
        data_dir: PathBuf,
        /// PostgreSQL event store of the server, when it does not use the data directory's
        /// SQLite file; the ledger is looked up there, and the operator is stored there.
        #[arg(long, env = "FOLIO_STORE__URL", hide_env_values = true)]
        store_url: Option<String>,
        /// PostgreSQL database of operators and tokens, when `operators.url` names one apart
        /// from the event store.
        #[arg(long, env = "FOLIO_OPERATORS__URL", hide_env_values = true)]
        operators_url: Option<String>,
        /// Ledger the administrator works on.
        #[arg(long)]
        ledger: Uuid,
        /// User name (3 to 64 letters, digits, '.', '_', '-', '@').
        #[arg(long)]
        username: String,
        /// Create an administrator (the only kind this command creates).
        #[arg(long)]
        admin: bool,
        /// File holding the password on its first line.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Create another administrator although the ledger has one, because no
        /// administrator can sign in (docs/operations/mfa-incident.md, step 5).
        #[arg(long)]
        break_glass: bool,
    },
}

pub(super) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Create {
        data_dir,
        store_url,
        operators_url,
        ledger,
        username,
        admin,
        password_file,
        break_glass,
    } = command;
    if !admin {
        bail!(
            "this command only bootstraps administrators: pass --admin; an administrator \
             creates other operators with POST /v1/ledgers/{{ledger_id}}/operators"
        );
    }
    // An administrator of a ledger that does not exist could never sign in usefully, and a
    // mistyped id or data directory is the usual cause.
    let location = crate::store::StoreLocation::from_dir_or_url(&data_dir, store_url.as_deref());
    let events = location.open_read_only().await?;
    if events.head(ledger).await?.is_none() {
        bail!(
            "ledger {ledger} is not in {}; create it first (POST /v1/ledgers) or check \
             --ledger and --data-dir",
            location.describe()
        );
    }
    let password = read_password(password_file.as_ref())?;
    let operators = crate::credentials::CredentialsLocation::from_args(
        &data_dir,
        store_url.as_deref(),
        operators_url.as_deref(),
    );
    let store = OperatorStore::open(&operators).await?;
    check_first_admin(&store, ledger, break_glass).await?;
    let hasher = SecretHasher::new(false)?;
    let now = SystemClock.now_micros();
    let created = create_operator(
        &store,
        &hasher,
        &crate::operators::OperatorRequest {
            ledger_id: ledger,
            username: &username,
            password: &password,
            roles: &[Role::Admin],
            created_recorded: false,
            now_micros: now,
        },
    )
    .await?;
    match created {
        Ok(operator_id) => {
            println!("{operator_id}");
            eprintln!(
                "Administrator {username} created on ledger {ledger}. Sign in with \
                 POST /v1/sessions and enrol an authenticator app before anything else."
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(problem) => {
            eprintln!("error: {problem}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Refuses a second administrator unless `break_glass` says every administrator lost
/// access: later operators are created over the API, where the creation is an event with
/// the creating administrator and a step-up.
async fn check_first_admin(
    store: &OperatorStore,
    ledger: Uuid,
    break_glass: bool,
) -> anyhow::Result<()> {
    let admins: Vec<String> = (store.list(ledger).await?.into_iter())
        .filter(|operator| operator.roles.contains(&Role::Admin))
        .map(|operator| operator.username)
        .collect();
    if admins.is_empty() {
        return Ok(());
    }
    if !break_glass {
        bail!(
            "ledger {ledger} already has administrators ({}); an administrator creates \
             operators with POST /v1/ledgers/{ledger}/operators. Only if none of them can sign \
             in, pass --break-glass (docs/operations/mfa-incident.md)",
            admins.join(", ")
        );
    }
    eprintln!(
        "warning: break-glass administrator for ledger {ledger}, which already has {}; \
         record why in the incident timeline",
        admins.join(", ")
    );
    Ok(())
}

fn read_password(file: Option<&PathBuf>) -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    match file {
        Some(path) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read password file {}", path.display()))?,
            );
            line.push_str(text.lines().next().unwrap_or_default());
        }
        None => {
            std::io::stdin().lock().read_line(&mut line)?;
        }
    }
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if trimmed.is_empty() {
        bail!("no password given: write it on standard input or pass --password-file");
    }
    Ok(trimmed)
}
