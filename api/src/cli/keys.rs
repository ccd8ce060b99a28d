//! `folio keys` (signing key and KEK rotation, rewrap, KEK retirement) and
//! `folio retention apply`. They open the data directory like `folio serve`, so they run
//! while the server is stopped; a running server holds `folio.lock` and they say so.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use domain::record::Actor;
use uuid::Uuid;

use crate::key_rotation::Retirement;
use crate::state::AppState;

/// Options shared by the commands that open the data directory.
#[derive(Debug, clap::Args)]
pub struct Open {
    /// TOML configuration file (also `FOLIO_CONFIG`); `FOLIO_` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory, overriding `data_dir` of the configuration and `FOLIO_DATA_DIR`.
    #[arg(long, env = "FOLIO_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl Open {
    fn config(&self) -> anyhow::Result<crate::config::Config> {
        let mut config = super::load_config(self.config.as_ref())?;
        if let Some(data_dir) = &self.data_dir {
            config.data_dir = data_dir.clone();
        }
        Ok(config)
    }

    async fn state(&self) -> anyhow::Result<std::sync::Arc<AppState>> {
        AppState::open(self.config()?).await
    }

    /// Opens only the KMS, for the commands that convert key files of a stopped server.
    /// Returns the data directory, its lock (held until dropped) and the KMS.
    fn kms(&self) -> anyhow::Result<(PathBuf, std::fs::File, Arc<dyn crate::kms::Kms>)> {
        let config = self.config()?;
        let lock = crate::files::lock_data_dir(&config.data_dir)?;
        let secrets = Arc::new(crate::secrets::Secrets::new(config.secrets.clone())?);
        let kms = crate::kms::open(&config.kms, config.profile, &config.data_dir, &secrets)?;
        Ok((config.data_dir, lock, kms))
    }
}

/// `folio keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Rotate a ledger's signing key: `ledger.key_rotated`, signed by the old key.
    RotateSigning {
        #[command(flatten)]
        open: Open,
        /// Ledger whose key rotates.
        #[arg(long)]
        ledger: Uuid,
        /// Why (scheduled, suspected compromise, ...), recorded in the event.
        #[arg(long)]
        reason: String,
    },
    /// Revoke a signing key version: its signatures from a position on are not trusted,
    /// and `folio verify` reports the events it signed there.
    RevokeSigning {
        #[command(flatten)]
        open: Open,
        /// Ledger.
        #[arg(long)]
        ledger: Uuid,
        /// Key id (32 hex digits) of the compromised key.
        #[arg(long)]
        key_id: String,
        /// First position whose signature by that key is not trusted.
        #[arg(long)]
        from_position: u64,
        /// Why, recorded in the event.
        #[arg(long)]
        reason: String,
    },
    /// Wrap a TOTP key file from before the KMS (`keys/mfa-secret.key`) with the KMS and
    /// delete the plain file.
    WrapMfaKey {
        #[command(flatten)]
        open: Open,
    },
    /// Wrap the signing key files from before the KMS (`keys/ledger-<id>.key`) with the
    /// KMS and delete the plain files.
    WrapSigningKeys {
        #[command(flatten)]
        open: Open,
    },
    /// Make a new KEK version current at the KMS; new data keys use it at once.
    RotateKek {
        #[command(flatten)]
        open: Open,
    },
    /// Move data keys off a KEK version, in bounded batches; safe to stop and run again.
    Rewrap {
        #[command(flatten)]
        open: Open,
        /// The KEK version to move off.
        #[arg(long)]
        from_version: String,
        /// Keys per batch, 1 to 1000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        batch: u32,
    },
    /// Delete a KEK version (local provider); refused while anything is wrapped by it.
    RetireKek {
        #[command(flatten)]
        open: Open,
        /// The KEK version to retire.
        #[arg(long)]
        version: String,
    },
}

/// `folio retention` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// Apply `[retention]` to every ledger (or one) and record each run as an event.
    Apply {
        #[command(flatten)]
        open: Open,
        /// Apply to this ledger only.
        #[arg(long)]
        ledger: Option<Uuid>,
    },
}

pub(super) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::RotateSigning {
            open,
            ledger,
            reason,
        } => {
            let state = open.state().await?;
            let actor = Actor::system("folio keys rotate-signing");
            let result = crate::key_rotation::rotate_signing(&state, ledger, actor, &reason).await;
            state.shutdown().await;
            let result = result?;
            println!(
                "ledger {ledger}: signing key rotated at position {}",
                result.last_position
            );
        }
        Command::RevokeSigning {
            open,
            ledger,
            key_id,
            from_position,
            reason,
        } => {
            let state = open.state().await?;
            let result = crate::key_rotation::revoke_signing(
                &state,
                ledger,
                &key_id,
                from_position,
                &reason,
            )
            .await;
            state.shutdown().await;
            let result = result?;
            println!(
                "ledger {ledger}: key {key_id} revoked from position {from_position} \
                 (recorded at position {})",
                result.last_position
            );
        }
        Command::WrapMfaKey { open } => {
            let (data_dir, _lock, kms) = open.kms()?;
            let moved = crate::key_rotation::wrap_legacy_mfa_key(kms.as_ref(), &data_dir);
            if moved.await? {
                println!(
                    "keys/mfa-secret.key is now wrapped by the {} KMS",
                    kms.provider()
                );
            } else {
                println!("no plain keys/mfa-secret.key: nothing to do");
            }
        }
        Command::WrapSigningKeys { open } => {
            let (data_dir, _lock, kms) = open.kms()?;
            let wrapped = crate::keys::wrap_plain_keys(&data_dir, kms.as_ref()).await?;
            if wrapped.is_empty() {
                println!("no plain signing key files in keys/: nothing to do");
            }
            for key_id in wrapped {
                println!(
                    "signing key {key_id} is now wrapped by the {} KMS",
                    kms.provider()
                );
            }
        }
        Command::RotateKek { open } => {
            let state = open.state().await?;
            let rotated = rotate_kek(&state).await;
            state.shutdown().await;
            let (before, after) = rotated?;
            if before == after {
                println!(
                    "the {} KMS rotated the key material of {after} in place and keeps the old \
                     material for decryption: no data key needs rewrapping",
                    state.kms.provider()
                );
            } else {
                println!(
                    "KEK version {after} is current; the background job of `folio serve` moves \
                     the keys off {before}, or run `folio keys rewrap --from-version {before}`"
                );
            }
        }
        Command::Rewrap {
            open,
            from_version,
            batch,
        } => {
            let state = open.state().await?;
            let result = rewrap_all(&state, &from_version, batch).await;
            state.shutdown().await;
            println!(
                "{} data key(s) moved off KEK version {from_version}",
                result?
            );
        }
        Command::RetireKek { open, version } => {
            let state = open.state().await?;
            let result = retire(&state, &version).await;
            state.shutdown().await;
            match result? {
                Retirement::Local => println!("KEK version {version} retired"),
                Retirement::AtProvider { provider } => println!(
                    "no data key or key file depends on KEK version {version} any more; \
                     retire it at the {provider} KMS itself (see docs/operations/key-rotation.md)"
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn run_retention(command: RetentionCommand) -> anyhow::Result<ExitCode> {
    let RetentionCommand::Apply { open, ledger } = command;
    let state = open.state().await?;
    let result = apply_retention(&state, ledger).await;
    state.shutdown().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn apply_retention(state: &AppState, only: Option<Uuid>) -> anyhow::Result<()> {
    let ledgers = match only {
        Some(ledger) => vec![ledger],
        None => state
            .store
            .ledgers()
            .await?
            .into_iter()
            .map(|l| l.ledger_id)
            .collect(),
    };
    let days = state.config.retention.erase_removed_payees_after_days;
    if days == 0 {
        println!(
            "retention.erase_removed_payees_after_days is 0: removed payees are kept; set \
             it to erase their personal fields that many days after removal"
        );
    } else {
        println!("rule: erase the personal fields of payees removed more than {days} day(s) ago");
    }
    for ledger in ledgers {
        let now = state.clock.now_micros();
        let report = crate::retention::apply(state, ledger, now).await?;
        println!(
            "ledger {ledger}: {} payee(s) erased, recorded at position {}",
            report.erased.len(),
            report.position
        );
    }
    Ok(())
}

/// Runs rewrap batches until nothing is left on the version; at most 100,000 batches.
async fn rewrap_all(state: &AppState, from_version: &str, batch: u32) -> anyhow::Result<u64> {
    crate::key_rotation::check_old_version(state, from_version).await?;
    let mut moved = 0;
    for _ in 0..100_000 {
        let progress = crate::key_rotation::rewrap(state, from_version, batch).await?;
        moved += progress.rewrapped;
        if progress.remaining == 0 {
            return Ok(moved);
        }
        if progress.rewrapped == 0 {
            bail!(
                "{} key(s) on version {from_version} could not be moved",
                progress.remaining
            );
        }
    }
    bail!("rewrap stopped after 100000 batches; run it again to continue")
}

async fn retire(state: &AppState, version: &str) -> anyhow::Result<Retirement> {
    crate::key_rotation::retire_kek(state, version).await
}

/// Rotates the KEK from the command line; returns the current version before and after.
async fn rotate_kek(state: &AppState) -> anyhow::Result<(String, String)> {
    let before = crate::key_rotation::current_kek_version(state.kms.as_ref()).await?;
    let actor = Actor::system("folio-keys-cli");
    let after = crate::key_rotation::rotate_kek(state, &actor, Uuid::now_v7()).await?;
    Ok((before, after))
}
