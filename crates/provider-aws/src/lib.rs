//! The AWS IAM Identity Center profile (docs/providers/aws.md).
//!
//! Base URL: `https://scim.{region}.amazonaws.com/{tenant_id}/scim/v2` (console: Settings →
//! Identity source → Manage provisioning). Auth: the console's SCIM access token (bearer).
//!
//! What this profile does differently from the generic one, and why:
//! - **Payload** ([`mapping`]): exactly one primary email, no `display` sub-attribute, names
//!   required (a user without familyName is a permanent failure naming the field).
//! - **User updates**: PATCH with an explicit single-attribute path per operation, never a
//!   path-less replace of several attributes, userName/active at most once, never removed.
//! - **Group membership** is never read back: GET /Groups returns no members
//!   (docs/providers/aws.md, "What AWS documents"), so the profile diffs the desired members
//!   against the member set **last applied** to the group, which the state of record keeps with
//!   the group's remote id. Converging a group never GETs it (only a plan of its deletion
//!   reads it first, as every plan of a deletion does).
//!   Changes go in PATCH add/remove chunks of at most [`MAX_MEMBER_CHANGES`]; never
//!   `replace members` or a remove-all; no PUT on groups. A group is created with at most 100
//!   members and the rest PATCHed. When the applied set is unknown (never applied by
//!   scimrelay, an adopted group, or after a failed attempt, which may have stopped between
//!   chunks) it is learned once with the documented `GET /Users?filter=groups.value eq
//!   "<group>"`.
//! - **Lookups** page with `cursor`/`nextCursor` (never `startIndex`; a short page is not the
//!   end).
//! - **409 on create** (body with the singular `schema` key, no scimType: keyed on the status)
//!   → look up by externalId, then userName (groups: externalId, then displayName) and adopt
//!   (on a target shared by several tenants only an object linked to this subject).
//!   An adopted group whose externalId is not the platform's id gets it set in its first PATCH,
//!   so the next lookup (after a restart, or for a group.deleted) finds it by externalId.
//! - **429 without Retry-After** → the target pauses and backs off (the runtime's limits).
//! - **Limits**: no published SCIM rate; a ceiling of [`DEFAULT_RATE_PER_SEC`] by default.

pub mod mapping;

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use scimrelay_connector::kit::dialect::cursor_list;
use scimrelay_connector::kit::{self, Deactivation, Dialect, Lookup, MemberChange, id_of};
use scimrelay_connector::{
    ConvergeError, ConvergeInput, Converged, FailureClass, Provider, ProviderDefaults,
};
use scimrelay_core::config::ProviderKind;
use scimrelay_proto::v1::{EventKind, Operation};
use scimrelay_scim::{PatchBuilder, ScimRequest, filter_eq, member_values, path_segment};

/// Most membership changes AWS accepts in one PATCH (and members in one POST /Groups).
pub const MAX_MEMBER_CHANGES: usize = 100;
/// Page size of cursor lists (AWS: 1–100).
pub const PAGE_SIZE: u64 = 100;
/// Most pages one lookup follows before giving up (a million objects).
pub const MAX_PAGES: usize = 10_000;
/// Client-side ceiling: AWS publishes no SCIM rate; 5–10 requests/s is the usual advice.
pub const DEFAULT_RATE_PER_SEC: f64 = 10.0;

/// AWS's SCIM dialect for the shared operations: filters answered in cursor pages (a short
/// page is not the end), `replace` of `active` with a path, no ETags.
pub const DIALECT: Dialect = Dialect {
    name: "AWS",
    lookup: Lookup::Cursor {
        page_size: PAGE_SIZE,
        max_pages: MAX_PAGES,
    },
    deactivation: Deactivation::PatchPath,
    if_match: false,
};

/// What was last applied to a group at AWS (AWS cannot tell: GET returns no members).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedGroup {
    /// AWS's group id.
    pub id: String,
    /// The displayName last applied.
    pub display_name: String,
    /// The externalId the group has at AWS (empty for a group made by hand): when it is not
    /// the platform's group id, the next PATCH sets it.
    pub external_id: String,
    /// AWS user ids of the members last applied.
    pub members: BTreeSet<String>,
}

/// The AWS IAM Identity Center profile. It keeps no state of its own: what was applied to a
/// group is in the state of record.
#[derive(Debug, Default)]
pub struct Aws;

impl Aws {
    /// The profile.
    pub fn new() -> Self {
        Aws
    }
}

/// The group as the state of record holds it after a successful converge: its id, the name
/// applied and the members applied. `None` when the member set is not known there.
fn applied_group(input: &ConvergeInput<'_>) -> Option<AppliedGroup> {
    let record = input.record;
    let members = record.members.clone()?;
    let id = record.known_remote_id()?.to_owned();
    let display_name = record
        .applied
        .as_ref()
        .and_then(|e| e.group.as_ref())
        .map(|g| g.display_name.clone())?;
    Some(AppliedGroup {
        id,
        display_name,
        external_id: input.external_id(),
        members,
    })
}

/// The connector's `--help` paragraph ([`Provider::about`]).
pub const ABOUT: &str = "Delivers identity events to AWS IAM Identity Center identity stores (SCIM).\n\n\
Consumes the shard queues of every `provider: aws` target in the targets file, converges \
each event at the identity store's SCIM endpoint (one primary email, single-attribute \
PATCH paths, group membership diffed against the last applied member set in chunks of at \
most 100, cursor paging, 409 adoption) and publishes its outcome \
(docs/providers/aws.md).";

impl Provider for Aws {
    fn kind(&self) -> ProviderKind {
        ProviderKind::AWS
    }

    fn about(&self) -> &'static str {
        ABOUT
    }

    fn defaults(&self) -> ProviderDefaults {
        ProviderDefaults {
            rate_limit_per_sec: Some(DEFAULT_RATE_PER_SEC),
        }
    }

    fn converge<'a>(
        &'a self,
        input: ConvergeInput<'a>,
    ) -> BoxFuture<'a, Result<Converged, ConvergeError>> {
        Box::pin(async move {
            match input.event.kind() {
                EventKind::UserUpserted => upsert_user(&input).await,
                EventKind::UserDeactivated => DIALECT.deactivate_user(&input).await,
                EventKind::UserDeleted => DIALECT.delete_user(&input).await,
                EventKind::GroupUpserted => self.upsert_group(&input).await,
                EventKind::GroupDeleted => DIALECT.delete(&input, "Groups").await,
                EventKind::Unspecified => Err(ConvergeError::new(
                    FailureClass::Permanent,
                    "event has no kind",
                )),
            }
        })
    }
}

async fn upsert_user(input: &ConvergeInput<'_>) -> Result<Converged, ConvergeError> {
    let user = kit::user_of(input)?;
    let desired = kit::linked(input, mapping::user_resource(user, user.active)?);
    if let Some((existing, _)) = DIALECT.current(input, "Users").await? {
        return kit::patch_user(
            input,
            &existing,
            &desired,
            mapping::user_patch,
            Operation::Updated,
        )
        .await;
    }
    match DIALECT
        .create_user(input, &desired, &user.user_name, mapping::user_patch)
        .await?
    {
        Ok(done) => Ok(done),
        Err(e) if kit::is_conflict(&e) => Err(ConvergeError {
            detail: "409 on create but no user found by externalId or userName (the e-mail may belong to another user: AWS keeps e-mails unique)".into(),
            ..input.exec.classify(&e)
        }),
        Err(e) => Err(input.exec.classify(&e)),
    }
}

/// One AWS group PATCH: `replace` of each `(attribute, value)` in `attrs` (displayName,
/// externalId), then explicit member values, `remove` then `add`, never a `replace` of members.
pub fn member_patch(changes: &[MemberChange], attrs: &[(&str, &str)]) -> Value {
    let remove: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            MemberChange::Remove(id) => Some(id.as_str()),
            MemberChange::Add(_) => None,
        })
        .collect();
    let add: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            MemberChange::Add(id) => Some(id.as_str()),
            MemberChange::Remove(_) => None,
        })
        .collect();
    let mut p = PatchBuilder::new();
    for (attr, value) in attrs {
        p = p.replace(Some(attr), json!(value));
    }
    if !remove.is_empty() {
        p = p.remove("members", Some(member_values(remove)));
    }
    if !add.is_empty() {
        p = p.add(Some("members"), member_values(add));
    }
    p.build()
}

impl Aws {
    /// The subject's group and its applied state: from the state of record when it knows the
    /// members, else found by externalId with its members learned ([`Aws::learned`]).
    async fn known_group(
        &self,
        input: &ConvergeInput<'_>,
    ) -> Result<Option<AppliedGroup>, ConvergeError> {
        if let Some(state) = applied_group(input) {
            return Ok(Some(state));
        }
        match DIALECT
            .find(input.exec, "Groups", "externalId", &input.external_id())
            .await?
        {
            Some(found) => Ok(Some(self.learned(input, &found).await?)),
            None => Ok(None),
        }
    }

    /// A group found at AWS with its members learned through the `groups.value` user filter
    /// (never a GET of the group, which answers no members).
    async fn learned(
        &self,
        input: &ConvergeInput<'_>,
        found: &Value,
    ) -> Result<AppliedGroup, ConvergeError> {
        let id = id_of(found).unwrap_or_default();
        let members = cursor_list(
            input.exec,
            "Users",
            &filter_eq("groups.value", &id),
            (PAGE_SIZE, MAX_PAGES),
            |_| false,
        )
        .await?
        .iter()
        .filter_map(id_of)
        .collect();
        let text = |attr: &str| {
            found
                .get(attr)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(AppliedGroup {
            id,
            display_name: text("displayName"),
            external_id: text("externalId"),
            members,
        })
    }

    async fn upsert_group(&self, input: &ConvergeInput<'_>) -> Result<Converged, ConvergeError> {
        let group = kit::group_of(input)?;
        let desired: BTreeSet<String> = DIALECT.group_members(input).await?.into_iter().collect();
        let external_id = input.external_id();
        let (mut state, mut op) = match self.known_group(input).await? {
            Some(s) => (s, Operation::Updated),
            None => {
                let first: Vec<&String> = desired.iter().take(MAX_MEMBER_CHANGES).collect();
                let body = json!({
                    "schemas": [scimrelay_connector::kit::compare::GROUP_SCHEMA],
                    "externalId": external_id,
                    "displayName": group.display_name,
                    "members": first.iter().map(|id| json!({"value": id})).collect::<Vec<_>>(),
                });
                match input.exec.send(ScimRequest::post("/Groups", body)).await {
                    Ok(resp) => (
                        AppliedGroup {
                            id: kit::created_id(&resp)?,
                            display_name: group.display_name.clone(),
                            external_id: external_id.clone(),
                            members: first.into_iter().cloned().collect(),
                        },
                        Operation::Created,
                    ),
                    Err(e) if kit::is_conflict(&e) => {
                        let lookups = [
                            ("externalId", external_id.as_str()),
                            ("displayName", group.display_name.as_str()),
                        ];
                        let Some((found, _)) = DIALECT.adoptable(input, "Groups", &lookups).await?
                        else {
                            return Err(ConvergeError {
                                detail: "409 on group create but no group found by externalId or displayName".into(),
                                ..input.exec.classify(&e)
                            });
                        };
                        let s = self.learned(input, &found).await?;
                        (s, Operation::Adopted)
                    }
                    Err(e) => return Err(input.exec.classify(&e)),
                }
            }
        };
        let path = format!("/Groups/{}", path_segment(&state.id));
        let changes = kit::member_diff(&state.members, &desired);
        // The attributes to set with the first PATCH: a new name, and the platform's id on a
        // group adopted by displayName.
        let mut attrs: Vec<(&str, &str)> = Vec::new();
        if state.display_name != group.display_name {
            attrs.push(("displayName", &group.display_name));
        }
        if state.external_id != external_id {
            attrs.push(("externalId", &external_id));
        }
        let (name, linked) = (&group.display_name, &external_id);
        let sent = kit::patch_members_chunked(
            input.exec,
            &path,
            &changes,
            MAX_MEMBER_CHANGES,
            |part| member_patch(part, &std::mem::take(&mut attrs)),
            |part| {
                state.display_name.clone_from(name);
                state.external_id.clone_from(linked);
                for c in part {
                    match c {
                        MemberChange::Add(id) => state.members.insert(id.clone()),
                        MemberChange::Remove(id) => state.members.remove(id),
                    };
                }
            },
        )
        .await?;
        if sent == 0 && op == Operation::Updated {
            op = Operation::Noop;
        }
        Ok(Converged::new(op, state.id)
            .with_detail(format!(
                "{} member change(s) in {sent} PATCH request(s)",
                changes.len()
            ))
            .with_members(state.members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_patch_never_replaces() {
        let changes = vec![
            MemberChange::Remove("a".into()),
            MemberChange::Add("b".into()),
        ];
        let body = member_patch(&changes, &[("displayName", "New"), ("externalId", "g1")]);
        assert_eq!(
            body["Operations"],
            json!([
                {"op": "replace", "path": "displayName", "value": "New"},
                {"op": "replace", "path": "externalId", "value": "g1"},
                {"op": "remove", "path": "members", "value": [{"value": "a"}]},
                {"op": "add", "path": "members", "value": [{"value": "b"}]}
            ])
        );
    }

    #[test]
    fn diffs_chunk_to_at_most_100() {
        let cur: BTreeSet<String> = (0..60).map(|i| format!("u{i:03}")).collect();
        let want: BTreeSet<String> = (30..150).map(|i| format!("u{i:03}")).collect();
        let changes = kit::member_diff(&cur, &want);
        assert_eq!(changes.len(), 30 + 90);
        let chunks: Vec<_> = changes.chunks(MAX_MEMBER_CHANGES).collect();
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(|c| c.len() <= MAX_MEMBER_CHANGES));
    }
}
