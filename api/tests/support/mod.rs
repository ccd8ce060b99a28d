//! Helpers shared by the test binaries of this package.
//!
//! Each test binary compiles this module and uses part of it, so items another binary uses
//! are dead code in this one.
#![allow(dead_code)]

pub mod nodes;
