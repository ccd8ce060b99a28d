//! `folio replay` and `folio diff`: read models of a ledger at a point, and the changes
//! between two points, rebuilt offline from verified events.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::history::SourceArgs;
use crate::replay::diff::{approval_line, StateDiff};
use crate::replay::source::Cutoff;

/// Arguments of `folio replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Point to rebuild the state at: a position (such as 42) or an RFC 3339 time (the last
    /// event recorded at or before it). Default: the signed head.
    #[arg(long, value_parser = Cutoff::parse_point)]
    as_of: Option<Cutoff>,
    /// JSON file to write (created; an existing file is not overwritten). Default: standard
    /// output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Arguments of `folio diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Earlier point: a position or an RFC 3339 time.
    #[arg(long, value_parser = Cutoff::parse_point)]
    from: Cutoff,
    /// Later point: a position or an RFC 3339 time. Default: the signed head.
    #[arg(long, value_parser = Cutoff::parse_point)]
    to: Option<Cutoff>,
    /// Print the diff as one JSON object instead of lines of text.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run_replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let as_of = args.as_of.unwrap_or(Cutoff::Head);
    let state = crate::replay::state_at(&args.source.source(), args.source.ledger(), as_of).await?;
    let mut json = serde_json::to_string_pretty(&state)?;
    json.push('\n');
    match &args.out {
        None => print!("{json}"),
        Some(path) => {
            write_new(path, json.as_bytes())?;
            eprintln!(
                "wrote the state of ledger {} at position {} to {}",
                state.ledger_id,
                state.as_of.position,
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn run_diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let to = args.to.unwrap_or(Cutoff::Head);
    let diff =
        crate::replay::diff_between(&args.source.source(), args.source.ledger(), args.from, to)
            .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diff)?);
    } else {
        print!("{}", diff_text(&diff));
    }
    Ok(ExitCode::SUCCESS)
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Renders a diff as one line per change, each naming the positions that made it.
pub fn diff_text(diff: &StateDiff) -> String {
    let mut lines = vec![format!(
        "ledger {} from position {} ({}) to position {} ({})",
        diff.ledger_id,
        diff.from.position,
        diff.from.recorded_at,
        diff.to.position,
        diff.to.recorded_at
    )];
    for payee in &diff.payees.added {
        lines.push(format!(
            "+ payee {} {:?} added at position {}: {}",
            payee.payee_id,
            payee.name,
            payee.added_at,
            approval_line(payee.approval.as_ref())
        ));
    }
    for removed in &diff.payees.removed {
        lines.push(format!(
            "- payee {} {:?} removed at position {} ({:?}): {}",
            removed.payee.payee_id,
            removed.payee.name,
            removed.removed_at,
            removed.reason,
            approval_line(removed.approval.as_ref())
        ));
    }
    for change in &diff.payees.changed {
        lines.push(format!(
            "~ payee {} {:?} changed",
            change.after.payee_id, change.after.name
        ));
    }
    for operator in &diff.operators.added {
        lines.push(format!(
            "+ operator {} {:?} created at position {} with roles {}",
            operator.operator_id,
            operator.username,
            operator.created_at,
            operator.roles.join(",")
        ));
    }
    for change in &diff.operators.roles_changed {
        lines.push(format!(
            "~ operator {} {:?} granted [{}] revoked [{}]",
            change.operator_id,
            change.username,
            change.granted.join(","),
            change.revoked.join(",")
        ));
    }
    for payment in &diff.payments.added {
        lines.push(format!(
            "+ payment {} {} {} to payee {} submitted at position {}, {} at position {}",
            payment.payment_id,
            payment.amount_minor,
            payment.currency,
            payment.payee_id,
            payment.submitted_at,
            payment.status,
            payment.status_at
        ));
    }
    for change in &diff.payments.status_changed {
        lines.push(format!(
            "~ payment {} {} -> {} at position {}",
            change.payment_id, change.before, change.after, change.changed_at
        ));
    }
    for decision in &diff.dlq_decisions {
        let decided = match (decision.decided_by, decision.decided_at) {
            (Some(by), Some(at)) => format!(", {} by {by} at position {at}", decision.status),
            _ => format!(", {}", decision.status),
        };
        lines.push(format!(
            "~ DLQ {} {} of {} payment(s) proposed by {} at position {}{decided}, {} released",
            decision.action,
            decision.decision_id,
            decision.payment_ids.len(),
            decision.proposed_by,
            decision.proposed_at,
            decision.released.len()
        ));
    }
    for key in &diff.signing_keys_added {
        lines.push(format!(
            "+ signing key {} named at position {}",
            key.public_key, key.named_at
        ));
    }
    lines.push(format!(
        "payments by status: {:?} -> {:?}",
        diff.payments.by_status_from, diff.payments.by_status_to
    ));
    lines.iter().map(|line| format!("{line}\n")).collect()
}
