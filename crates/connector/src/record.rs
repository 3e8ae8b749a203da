//! What a converge knows of subjects: the state of record of the subject being converged
//! ([`Record`]), read from the status service when the message was taken, and a [`Directory`]
//! of the other subjects of its tenant at the target (a group's members).
//!
//! Nothing here outlives one message: versions, remote ids, fingerprints and member sets are
//! read from the state of record for every message, never from a process's memory. A replica
//! that regains a shard, a restart, or a status outage therefore never applies what an old
//! memory believed (see the runtime's module doc and `docs/design.md`, "State of record").

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use futures::future::BoxFuture;

use scimrelay_proto::v1::{IdentityEvent, Presence, SubjectRecord};

use crate::exec::PLANNED_ID;
use crate::provider::ConvergeError;

/// The state of record of the subject being converged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// The provider's id; empty when the subject is not at the target (or not known there).
    pub remote_id: String,
    /// The highest version applied (0 = none).
    pub applied_version: u64,
    /// Where the subject is at the target, as scimrelay last converged it.
    pub presence: Presence,
    /// The provider member ids last applied to a group; `None` when unknown (never applied, or
    /// a later attempt failed: a chunked change may have stopped half-way).
    pub members: Option<BTreeSet<String>>,
    /// The desired state that was applied last.
    pub applied: Option<IdentityEvent>,
}

impl Record {
    /// The record as the status service answered it.
    pub fn from_proto(r: &SubjectRecord) -> Self {
        Record {
            remote_id: r.remote_id.clone(),
            applied_version: r.applied_version,
            presence: r.presence(),
            members: r.members_known.then(|| r.members.iter().cloned().collect()),
            applied: r.applied.clone(),
        }
    }

    /// The remote id, when the subject is at the target (a plan's placeholder is not an id).
    pub fn known_remote_id(&self) -> Option<&str> {
        Some(self.remote_id.as_str()).filter(|id| !id.is_empty() && *id != PLANNED_ID)
    }
}

/// Where another subject of the same tenant is at the target, as the state of record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linked {
    /// At the target with this provider id.
    At(String),
    /// Converged to "not at the target" (deleted, or deactivated before it was ever created):
    /// it cannot be a member, and waiting for it would never end.
    Gone,
    /// Never converged at the target: it may still be on its way, or exist unlinked.
    Unknown,
}

impl Linked {
    /// What a record says of its subject.
    pub fn of(r: &SubjectRecord) -> Self {
        if !r.found || r.applied_version == 0 {
            Linked::Unknown
        } else if r.remote_id.is_empty() || r.remote_id == PLANNED_ID {
            Linked::Gone
        } else {
            Linked::At(r.remote_id.clone())
        }
    }
}

/// The other users of the converged subject's tenant at its target, looked up in the state of
/// record (the runtime batches the lookups of concurrent converges into one call).
pub trait Directory: Send + Sync {
    /// Where each of `ids` (platform user ids) is at the target, in order.
    fn users<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<Vec<Linked>, ConvergeError>>;
}

/// A [`Directory`] held in memory, for provider tests that converge without the status
/// service: what a test's converges applied.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    users: Mutex<HashMap<String, Linked>>,
}

impl MemoryDirectory {
    /// Records where a user is (as a successful converge would).
    pub fn set(&self, id: &str, linked: Linked) {
        if let Ok(mut m) = self.users.lock() {
            m.insert(id.to_owned(), linked);
        }
    }

    /// Where a user is, as recorded.
    pub fn get(&self, id: &str) -> Linked {
        self.users
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
            .unwrap_or(Linked::Unknown)
    }
}

impl Directory for MemoryDirectory {
    fn users<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<Vec<Linked>, ConvergeError>> {
        Box::pin(async move { Ok(ids.iter().map(|id| self.get(id)).collect()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_links_what_was_applied() {
        let mut r = SubjectRecord {
            found: true,
            ..Default::default()
        };
        assert_eq!(Linked::of(&r), Linked::Unknown, "nothing applied yet");
        r.applied_version = 3;
        assert_eq!(Linked::of(&r), Linked::Gone, "applied, not at the target");
        r.remote_id = "r-1".into();
        assert_eq!(Linked::of(&r), Linked::At("r-1".into()));
        r.members_known = true;
        r.members = vec!["m2".into(), "m1".into()];
        let record = Record::from_proto(&r);
        assert_eq!(
            record.members.as_ref().map(|m| m.len()),
            Some(2),
            "{record:?}"
        );
        r.members_known = false;
        assert_eq!(
            Record::from_proto(&r).members,
            None,
            "unknown after a failure"
        );
    }
}
