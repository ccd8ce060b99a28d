//! Folio's read models: the projection engine and the tables it keeps up to date.
//!
//! The [`ProjectionRunner`] follows every ledger of an event store and applies each
//! sealed event to all read models. It writes the new checkpoint (position and head hash)
//! in the same transaction as the rows, so a crash never leaves a model ahead of or
//! behind its checkpoint. It checks that positions are gapless and hashes link, and stops a
//! ledger with a visible error instead of skipping an event.
//!
//! [`ReadModels`] serves the queries: the audit trail, payments with their history, the
//! payee allow-list, the dead-letter queue and ABA batches. Results are plain serde
//! structs that report the checkpoint they reflect. The models live in SQLite or
//! PostgreSQL; one code path serves both through sqlx's `Any` driver.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod aba_batches;
mod anomalies;
mod apply;
mod audit;
mod dead_letters;
mod error;
mod opener;
mod page;
mod payees;
mod payments;
mod read_models;
mod rebuild;
mod row;
mod runner;
mod schema;
mod summary;
mod timestamp;

pub use aba_batches::AbaBatch;
pub use anomalies::{finding_json, Anomaly, AnomalyFilter, ReviewStatus};
pub use audit::{AuditEntry, AuditQuery};
pub use dead_letters::{
    DeadLetter, DeadLetterDetail, DeadLetterQuery, DeadLetterStats, DeadLetterStep, ALL_STATUSES,
    OPEN_STATUSES,
};
pub use error::ProjectionError;
pub use opener::EventOpener;
pub use page::{AsOf, Page, PageRequest, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
pub use payees::Payee;
pub use payments::{PaymentDetail, PaymentStatus, PaymentView, StatusChange};
pub use read_models::{Checkpoint, Dump, ReadModels};
pub use rebuild::{model_names, rebuild, RebuildReport};
pub use runner::{ProjectionRunner, ProjectionState, ProjectionStatus, RunnerHandle};
pub use summary::{mask_account, mask_account_number, summarize};
pub use timestamp::{format_micros, parse_time_bound};
