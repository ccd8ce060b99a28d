//! Folio's HTTP API (actix-web), bank dispatch, and the `folio` command-line tool.
//!
//! `main.rs` only parses arguments; everything it runs lives here so tests can
//! start the same server and commands in-process.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod aba_import;
pub mod anomalies;
pub mod auth;
pub mod bank;
pub mod bundle;
pub mod cli;
pub mod commands;
pub mod config;
pub mod controls;
pub mod credentials;
pub mod db_password;
pub mod dispatcher;
pub mod dlq;
pub mod files;
pub mod idempotency;
pub mod key_rotation;
pub mod keys;
pub mod kms;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod operators;
pub mod personal;
pub mod problem;
pub mod proofs;
pub mod read_store;
pub mod replay;
pub mod request_id;
pub mod retention;
pub mod routes;
pub mod sealed_replies;
pub mod secret;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod verification;
pub mod witness;
pub mod workers;
