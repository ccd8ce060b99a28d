//! Retention rules (`[retention]`) and `folio retention apply`.
//!
//! The ledger is append-only, so no event is ever deleted: audit events stay for as long
//! as the ledger exists, which is more than the twelve months `audit_min_days` demands.
//! Personal fields sealed under a payee's keys are erased by destroying the keys once
//! the payee has been off the allow-list for `erase_removed_payees_after_days`.

use std::collections::BTreeMap;

use anyhow::bail;
use domain::events::{DomainEvent, EventPayload};
use domain::personal::{payee_subject, RetentionApplied, SubjectErased};
use domain::record::Actor;
use eventstore_adapter::{AppendRequest, ExpectedVersion, StreamWrite};
use serde::Deserialize;
use uuid::Uuid;

use crate::state::{AppState, ALLOW_LIST_STREAM};

/// Events of the allow-list stream read per call.
const PAGE: u32 = 1_000;

/// `[retention]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days audit events must be kept; at least 365 (the ATO's twelve months). Folio
    /// never deletes events, so this only guards the other rules.
    pub audit_min_days: u64,
    /// Days after its removal that a payee's sealed name and account are erased; 0 never.
    pub erase_removed_payees_after_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            audit_min_days: 365,
            erase_removed_payees_after_days: 0,
        }
    }
}

impl RetentionConfig {
    /// Checks the rules.
    ///
    /// # Errors
    /// Names the rule and the allowed range.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.audit_min_days < 365 {
            bail!(
                "retention.audit_min_days is {}; audit records are kept at least 365 days",
                self.audit_min_days
            );
        }
        Ok(())
    }
}

/// The outcome of one retention run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Payees erased.
    pub erased: Vec<Uuid>,
    /// Position of the `retention.applied` event.
    pub position: u64,
}

/// Applies the retention rules to one ledger at `now_micros` and records the run: a
/// `subject.erased` per payee due, then `retention.applied`, in one append. The keys
/// are destroyed once the append is committed.
///
/// # Errors
/// Store, KMS or key-store failures, or a concurrent allow-list change (run again).
pub async fn apply(
    state: &AppState,
    ledger_id: Uuid,
    now_micros: i64,
) -> anyhow::Result<RetentionReport> {
    let days = state.config.retention.erase_removed_payees_after_days;
    let rule = format!("erase_removed_payees_after_days = {days}");
    let day_micros: i64 = 86_400 * 1_000_000;
    let cutoff = now_micros.saturating_sub(i64::try_from(days)?.saturating_mul(day_micros));

    let (allow_list, _, version) = state
        .allow_list_and_proposals(ledger_id)
        .await
        .map_err(|error| anyhow::anyhow!("cannot read the allow-list: {}", error.detail))?;
    let mut due = Vec::new();
    if days > 0 {
        for (payee_id, removed_at) in removals(state, ledger_id).await? {
            let subject = payee_subject(payee_id);
            let live = state.personal.keys().live_keys(ledger_id, &subject).await?;
            if removed_at <= cutoff && allow_list.get(payee_id).is_none() && !live.is_empty() {
                due.push((payee_id, subject, live));
            }
        }
    }

    let actor = Actor::system("retention");
    let mut events = Vec::new();
    for (_, subject, data_key_ids) in &due {
        let erased = SubjectErased {
            subject: subject.clone(),
            data_key_ids: data_key_ids.clone(),
            policy: format!("retention: {rule}"),
            auth: None,
        };
        events.push(crate::commands::draft(&erased, &actor, Uuid::now_v7()));
    }
    let applied = RetentionApplied {
        rule,
        cutoff_micros: cutoff,
        erased_subjects: due.iter().map(|(_, subject, _)| subject.clone()).collect(),
    };
    events.push(crate::commands::draft(&applied, &actor, Uuid::now_v7()));
    let request = AppendRequest {
        writes: vec![StreamWrite {
            stream_id: ALLOW_LIST_STREAM.to_owned(),
            expected: version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
            events,
        }],
        idempotency: None,
    };
    let outcome = state.store.append(ledger_id, request).await?;
    let position = match outcome {
        eventstore_adapter::AppendOutcome::Committed(result) => result.last_position,
        eventstore_adapter::AppendOutcome::Duplicate(_) => {
            bail!("retention run was not appended: it carries no idempotency key")
        }
    };

    // Applying the new events destroys the erased subjects' keys.
    state
        .allow_list_and_proposals(ledger_id)
        .await
        .map_err(|error| anyhow::anyhow!("cannot destroy the erased keys: {}", error.detail))?;
    Ok(RetentionReport {
        erased: due.into_iter().map(|(payee_id, _, _)| payee_id).collect(),
        position,
    })
}

/// Returns every payee removal on the allow-list stream, with its time.
async fn removals(state: &AppState, ledger_id: Uuid) -> anyhow::Result<BTreeMap<Uuid, i64>> {
    let mut removed = BTreeMap::new();
    let mut from = 0;
    loop {
        let page = state
            .store
            .read_stream(ledger_id, ALLOW_LIST_STREAM, from, PAGE)
            .await?;
        for event in &page {
            if event.event_type == domain::events::PayeeRemoved::EVENT_TYPE {
                let decoded =
                    DomainEvent::decode(&event.event_type, event.schema_version, &event.payload)?;
                if let DomainEvent::PayeeRemoved(payee) = decoded {
                    removed.insert(payee.payee_id, event.recorded_at_micros);
                }
            }
            from = event.stream_version + 1;
        }
        if page.len() < PAGE as usize {
            return Ok(removed);
        }
    }
}
