//! The ledger: per (target, subject), the provider's id and the version last applied.
//!
//! It decides two things: whether an event is stale (its version is not newer than the applied
//! one → `superseded`, nothing sent), and where the subject lives at the provider without a
//! lookup. This in-process cache is filled by this connector's own outcomes; a subject it has not
//! seen is looked up at the provider (by externalId), so a restart costs lookups, never
//! correctness. Sharing it through the status service is the delivery issue's job.

use std::collections::HashMap;
use std::sync::Mutex;

/// What is known of one subject at one target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerEntry {
    /// The provider's id; empty when the subject does not exist there.
    pub remote_id: String,
    /// The highest version applied (0 = none).
    pub applied_version: u64,
    /// Whether the subject is known to be active at the provider (users only).
    pub active: bool,
    /// A fingerprint of the last applied desired state, to skip no-op writes.
    pub fingerprint: u64,
}

/// The ledger of one target.
#[derive(Default)]
pub struct Ledger {
    entries: Mutex<HashMap<String, LedgerEntry>>,
}

impl Ledger {
    /// The entry of a subject.
    pub fn get(&self, subject: &str) -> Option<LedgerEntry> {
        self.entries.lock().ok()?.get(subject).cloned()
    }

    /// Records an applied version. Never moves the version backwards.
    pub fn record(&self, subject: &str, entry: LedgerEntry) {
        if let Ok(mut map) = self.entries.lock() {
            let slot = map.entry(subject.to_owned()).or_default();
            if entry.applied_version >= slot.applied_version {
                *slot = entry;
            }
        }
    }

    /// Resolves only the remote id (e.g. a group member's), leaving versions untouched.
    pub fn remote_id(&self, subject: &str) -> Option<String> {
        self.get(subject)
            .map(|e| e.remote_id)
            .filter(|id| !id.is_empty())
    }

    /// Remembers a remote id found by a lookup.
    pub fn learn_remote_id(&self, subject: &str, remote_id: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.entry(subject.to_owned()).or_default().remote_id = remote_id.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_never_go_backwards() {
        let l = Ledger::default();
        l.record(
            "u1",
            LedgerEntry {
                remote_id: "r1".into(),
                applied_version: 5,
                active: true,
                fingerprint: 1,
            },
        );
        l.record(
            "u1",
            LedgerEntry {
                remote_id: "r0".into(),
                applied_version: 3,
                active: false,
                fingerprint: 2,
            },
        );
        assert_eq!(l.get("u1").map(|e| e.applied_version), Some(5));
        assert_eq!(l.remote_id("u1").as_deref(), Some("r1"));
        l.learn_remote_id("u2", "r2");
        assert_eq!(l.get("u2").map(|e| e.applied_version), Some(0));
    }
}
