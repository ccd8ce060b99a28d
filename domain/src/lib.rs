//! Folio's domain: the sealed event record and its canonical byte layout, the
//! signing keys, the chain verifier, the ledger export format, the payments
//! rules (allow-list, amounts, BSB, IBAN, ABA files) and the event payloads.
//!
//! Nothing in this crate performs I/O or reads the system clock directly: time
//! comes from a [`clock::Clock`], keys and bytes come from the caller.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod aba;
pub mod analytics;
pub mod anomalies;
pub mod anomaly_events;
pub mod checkpoint;
pub mod clock;
pub mod controls;
pub mod crypto;
pub mod dlq;
pub mod envelope;
pub mod events;
pub mod evidence;
pub mod export;
pub mod key_events;
pub mod merkle;
pub mod mfa;
pub mod operator_events;
pub mod operators;
pub mod payments;
pub mod personal;
pub mod record;
pub mod seal;
pub mod verify;
