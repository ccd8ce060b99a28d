//! End-to-end tests for Folio and the shared fixtures they use.

pub mod clock;
pub mod golden;
pub mod harness;
pub mod webdriver;
