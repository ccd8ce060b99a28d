//! Auditor replay: reading a ledger offline (from an export file or a store), browsing its
//! history, rebuilding read models as they stood at a point, and comparing two points.
//!
//! Every result starts with a verified read ([`source::load`]). The chain is checked from
//! genesis up to the requested point, so no result is built on a broken chain. State is
//! rebuilt in memory from the events ([`state::Replayer`]); the SQL read models of a
//! running server are never read or written.

pub mod diff;
pub mod event_view;
pub mod history;
pub mod source;
pub mod state;

use anyhow::{anyhow, bail};
use domain::record::SealedEvent;
use uuid::Uuid;

use self::diff::StateDiff;
use self::source::{Cutoff, EventSource};
use self::state::{LedgerState, Replayer};

/// Rebuilds the state of a ledger as it stood at `as_of`, after verifying the chain up to
/// that point.
///
/// # Errors
/// As [`source::load`] and [`Replayer::apply`].
pub async fn state_at(
    source: &EventSource,
    ledger: Option<Uuid>,
    as_of: Cutoff,
) -> anyhow::Result<LedgerState> {
    let loaded = source::load(source, ledger, as_of).await?;
    state::replay(&loaded.events)
}

/// Compares the state of a ledger at `from` with its state at `to`, after verifying the
/// chain up to `to`. A `from` that covers every event up to `to` gives an empty diff.
///
/// # Errors
/// As [`state_at`] and [`diff_events`], or as [`check_order`].
pub async fn diff_between(
    source: &EventSource,
    ledger: Option<Uuid>,
    from: Cutoff,
    to: Cutoff,
) -> anyhow::Result<StateDiff> {
    check_order(from, to)?;
    let loaded = source::load(source, ledger, to).await?;
    diff_events(&loaded.events, from)
}

/// Rejects a `from` that lies after `to`, when both are positions or both are times (a
/// position and a time can only be compared once the events are read).
///
/// # Errors
/// Names both points.
pub fn check_order(from: Cutoff, to: Cutoff) -> anyhow::Result<()> {
    let reversed = match (from, to) {
        (Cutoff::Position(from), Cutoff::Position(to)) => from > to,
        (Cutoff::Time(from), Cutoff::Time(to)) => from > to,
        (Cutoff::Head, to) => to != Cutoff::Head,
        _ => false,
    };
    if reversed {
        bail!("--from {from} lies after --to {to}; swap them");
    }
    Ok(())
}

/// Compares the state after the events that `from` includes with the state after all of
/// `events`, which must run from genesis in order.
///
/// # Errors
/// As [`Replayer::apply`], or when `from` includes no event.
pub fn diff_events(events: &[SealedEvent], from: Cutoff) -> anyhow::Result<StateDiff> {
    diff_opened(events, from, std::collections::HashMap::new())
}

/// Compares like [`diff_events`], taking the events at the positions of `opened` in their
/// opened form (sealed personal fields opened by the KMS).
///
/// # Errors
/// As [`diff_events`].
pub fn diff_opened(
    events: &[SealedEvent],
    from: Cutoff,
    opened: std::collections::HashMap<u64, domain::events::DomainEvent>,
) -> anyhow::Result<StateDiff> {
    // Both states come from one verified read: the earlier one is a snapshot taken on
    // the way to the later one.
    let mut replayer = Replayer::with_opened(opened);
    let mut earlier = None;
    for event in events {
        if earlier.is_none() && !from.includes(event) {
            earlier = Some(
                replayer
                    .snapshot()
                    .ok_or_else(|| anyhow!("no event lies at or before --from {from}"))?,
            );
        }
        replayer.apply(event)?;
    }
    let later = replayer
        .snapshot()
        .ok_or_else(|| anyhow!("no events to replay"))?;
    let earlier = earlier.unwrap_or_else(|| later.clone());
    Ok(diff::diff(&earlier, &later))
}
