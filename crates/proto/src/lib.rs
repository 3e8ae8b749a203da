//! The protobuf contract shared by every scimrelay service, compiled once here.
//!
//! Besides the generated types this crate owns the names that appear on the wire outside
//! protobuf: the event kind strings of the HTTP API (`user.upserted`, …), the result names
//! used in AMQP routing keys, and the AMQP header names.

/// Generated types and gRPC stubs of `scimrelay.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("scimrelay.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("scimrelay_descriptor");
}

/// The client side of the gRPC APIs: API key interceptor and TLS endpoints.
pub mod client;

/// W3C trace context on AMQP headers and gRPC metadata.
pub mod trace;

use v1::{EventKind, Operation, OutcomeResult, SubjectKind};

/// AMQP header carrying the protobuf message type of the body.
pub const HEADER_MESSAGE_TYPE: &str = "x-scimrelay-type";
/// AMQP header carrying the schema version of the body.
pub const HEADER_SCHEMA_VERSION: &str = "x-scimrelay-schema";
/// The schema version written by this build.
pub const SCHEMA_VERSION: i64 = 1;
/// Message type of a [`v1::Delivery`].
pub const TYPE_DELIVERY: &str = "scimrelay.v1.Delivery";
/// Message type of a [`v1::TargetReport`].
pub const TYPE_TARGET_REPORT: &str = "scimrelay.v1.TargetReport";
/// Message type of a [`v1::Outcome`].
pub const TYPE_OUTCOME: &str = "scimrelay.v1.Outcome";
/// Message type of a [`v1::HeldEvent`] (published to `scimrelay.outcomes`).
pub const TYPE_HELD_EVENT: &str = "scimrelay.v1.HeldEvent";
/// Header set on a released held event: the mass-deprovisioning guard lets it through.
pub const HEADER_RELEASED: &str = "x-scimrelay-released";
/// Header a connector sets on a parked copy (dead-lettered or held): the message's original
/// routing key on `scimrelay.events`, which a replay or a release sends it back to.
pub const HEADER_ROUTING_KEY: &str = "x-scimrelay-routing-key";
/// Header set on a copy replayed from the dead-letter queue: it starts a fresh attempt budget,
/// and its outcome says it was replayed.
pub const HEADER_REPLAYED: &str = "x-scimrelay-replayed";

impl EventKind {
    /// The kind as the HTTP API spells it (`user.upserted`).
    pub fn api_name(self) -> &'static str {
        match self {
            EventKind::Unspecified => "unspecified",
            EventKind::UserUpserted => "user.upserted",
            EventKind::UserDeactivated => "user.deactivated",
            EventKind::UserDeleted => "user.deleted",
            EventKind::GroupUpserted => "group.upserted",
            EventKind::GroupDeleted => "group.deleted",
        }
    }

    /// Parses the HTTP API spelling; `None` for anything else.
    pub fn from_api_name(name: &str) -> Option<Self> {
        Some(match name {
            "user.upserted" => EventKind::UserUpserted,
            "user.deactivated" => EventKind::UserDeactivated,
            "user.deleted" => EventKind::UserDeleted,
            "group.upserted" => EventKind::GroupUpserted,
            "group.deleted" => EventKind::GroupDeleted,
            _ => return None,
        })
    }

    /// Every kind the API accepts, for error messages.
    pub const API_NAMES: &'static str =
        "user.upserted, user.deactivated, user.deleted, group.upserted, group.deleted";

    /// Whether the subject of this kind is a user (else a group).
    pub fn is_user(self) -> bool {
        matches!(
            self,
            EventKind::UserUpserted | EventKind::UserDeactivated | EventKind::UserDeleted
        )
    }
}

impl OutcomeResult {
    /// Lower-case name used in routing keys, tables and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            OutcomeResult::Unspecified => "unspecified",
            OutcomeResult::Succeeded => "succeeded",
            OutcomeResult::Superseded => "superseded",
            OutcomeResult::Unsupported => "unsupported",
            OutcomeResult::Failed => "failed",
            OutcomeResult::DeadLettered => "dead-lettered",
            OutcomeResult::Planned => "planned",
        }
    }
}

impl Operation {
    /// Lower-case name used in tables and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Unspecified => "-",
            Operation::Created => "created",
            Operation::Updated => "updated",
            Operation::Deactivated => "deactivated",
            Operation::Deleted => "deleted",
            Operation::Noop => "noop",
            Operation::Adopted => "adopted",
        }
    }
}

impl SubjectKind {
    /// Lower-case name used in tables and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            SubjectKind::Unspecified => "-",
            SubjectKind::User => "user",
            SubjectKind::Group => "group",
        }
    }
}

impl v1::Presence {
    /// The presence as a word, for tables, JSON output and `SubjectState.state`.
    pub fn name(self) -> &'static str {
        match self {
            v1::Presence::Unknown => "unknown",
            v1::Presence::PresentActive => "present-active",
            v1::Presence::PresentInactive => "present-inactive",
            v1::Presence::Absent => "absent",
        }
    }
}

/// One subject within a target as a single string: its tenant, kind and id, length-prefixed so
/// that no two subjects share it (acme's user `u-7`, globex's user `u-7` and acme's group `u-7`
/// are three subjects). It orders per-subject work inside a connector and places the subject in
/// a shard queue (so all of one subject's messages meet one consumer).
pub fn subject_ref(tenant: &str, kind: SubjectKind, id: &str) -> String {
    format!("{}:{tenant}:{}:{id}", tenant.len(), kind.name())
}

impl v1::SubjectKey {
    /// The key of a subject at a target.
    pub fn new(target: &str, tenant: &str, kind: SubjectKind, id: &str) -> Self {
        v1::SubjectKey {
            target: target.to_owned(),
            tenant: tenant.to_owned(),
            kind: kind as i32,
            subject_id: id.to_owned(),
        }
    }

    /// [`subject_ref`] of the key (the target left out).
    pub fn subject_ref(&self) -> String {
        subject_ref(&self.tenant, self.kind(), &self.subject_id)
    }
}

impl v1::IdentityEvent {
    /// The event's subject as [`subject_ref`] spells it.
    pub fn subject_ref(&self) -> String {
        subject_ref(&self.tenant, self.subject_kind(), self.subject_id())
    }

    /// The state-of-record key of the event's subject at `target`.
    pub fn subject_key(&self, target: &str) -> v1::SubjectKey {
        v1::SubjectKey::new(target, &self.tenant, self.subject_kind(), self.subject_id())
    }

    /// The platform id of the event's subject (user or group).
    pub fn subject_id(&self) -> &str {
        if self.kind().is_user() {
            self.user
                .as_ref()
                .map(|u| u.id.as_str())
                .unwrap_or_default()
        } else {
            self.group
                .as_ref()
                .map(|g| g.id.as_str())
                .unwrap_or_default()
        }
    }

    /// Whether the subject is a user or a group.
    pub fn subject_kind(&self) -> SubjectKind {
        if self.kind().is_user() {
            SubjectKind::User
        } else {
            SubjectKind::Group
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_round_trip() {
        for kind in [
            EventKind::UserUpserted,
            EventKind::UserDeactivated,
            EventKind::UserDeleted,
            EventKind::GroupUpserted,
            EventKind::GroupDeleted,
        ] {
            assert_eq!(EventKind::from_api_name(kind.api_name()), Some(kind));
            assert!(EventKind::API_NAMES.contains(kind.api_name()));
        }
        assert_eq!(EventKind::from_api_name("user.created"), None);
    }

    #[test]
    fn subject_refs_keep_tenants_and_kinds_apart() {
        let refs = [
            subject_ref("acme", SubjectKind::User, "u-7"),
            subject_ref("globex", SubjectKind::User, "u-7"),
            subject_ref("acme", SubjectKind::Group, "u-7"),
            // A tenant or id holding the separator cannot forge another subject's ref.
            subject_ref("acme:5", SubjectKind::User, "u-7"),
            subject_ref("acme", SubjectKind::User, "5:u-7"),
        ];
        let distinct: std::collections::HashSet<_> = refs.iter().collect();
        assert_eq!(distinct.len(), refs.len(), "{refs:?}");
    }
}
