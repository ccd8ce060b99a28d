//! Events about evidence taken out of the ledger.

use serde::{Deserialize, Serialize};

use crate::events::EventPayload;
use crate::operator_events::AuthContext;

/// Stream that records evidence exports.
pub const EVIDENCE_STREAM: &str = "evidence";

/// An evidence bundle was exported: who asked (the event's actor), for which scope, up to
/// which checkpoint, and the BLAKE3 digest of the bundle's signed manifest, so the bundle
/// handed out can be matched later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleExported {
    /// Scope as written in the bundle's `bag-info.txt`.
    pub scope: String,
    /// Tree size of the checkpoint that ends the bundle.
    pub tree_size: u64,
    /// BLAKE3 of `folio-manifest.txt`.
    pub manifest_blake3: [u8; 32],
    /// The operator's session and the second factor behind the export (a step-up).
    pub auth: AuthContext,
}

impl EventPayload for BundleExported {
    const EVENT_TYPE: &'static str = "evidence.bundle_exported";
    const SCHEMA_VERSION: u16 = 1;
}
