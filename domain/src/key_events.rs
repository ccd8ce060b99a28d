//! Events that record the key-encryption key's lifecycle on each ledger it protects.

use serde::{Deserialize, Serialize};

use crate::events::EventPayload;

/// A new KEK version became current at the KMS; new data keys are wrapped by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekRotated {
    /// Provider (`local`, `vault`, `aws`, `gcp`).
    pub provider: String,
    /// KEK name at the provider.
    pub kek_id: String,
    /// The new current version.
    pub new_version: String,
}

impl EventPayload for KekRotated {
    const EVENT_TYPE: &'static str = "kms.kek_rotated";
    const SCHEMA_VERSION: u16 = 1;
}

/// A rewrap batch moved this ledger's data keys from one KEK version to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataKeysRewrapped {
    /// The version the keys moved off.
    pub from_version: String,
    /// The version they moved to.
    pub to_version: String,
    /// Keys of this ledger moved in the batch.
    pub rewrapped: u64,
    /// Keys of every ledger still on `from_version` after the batch.
    pub remaining: u64,
}

impl EventPayload for DataKeysRewrapped {
    const EVENT_TYPE: &'static str = "kms.data_keys_rewrapped";
    const SCHEMA_VERSION: u16 = 1;
}

/// A KEK version was retired after nothing was wrapped by it any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekRetired {
    /// Provider (`local`, `vault`, `aws`, `gcp`).
    pub provider: String,
    /// KEK name at the provider.
    pub kek_id: String,
    /// The retired version.
    pub version: String,
}

impl EventPayload for KekRetired {
    const EVENT_TYPE: &'static str = "kms.kek_retired";
    const SCHEMA_VERSION: u16 = 1;
}
