//! The SCIM converge kit every provider profile is built from (docs/design.md, "The provider
//! seam"):
//! - this module: reading ids and list answers, resolving group members through the state of
//!   record, member-set diffs sent in chunks, one PATCH that brings a user up to date, and the
//!   canonical failures (missing members, missing attributes, another tenant's object);
//! - [`dialect`]: lookups, the subject's current object, creation with adoption after a 409,
//!   deactivation, deletion — written once, with a [`Dialect`] for what differs between
//!   servers;
//! - [`compare`]: what differs between a desired resource and what a server holds, and what
//!   the desired state cleared;
//! - [`resource`]: building blocks of the profiles' mappings.
//!
//! Which endpoint, which PATCH shape, which attributes is the profile's choice. Every request
//! goes through [`Exec::send`], so plan mode, limits and the breaker apply to all of them, and
//! every error is read by the profile's own classification ([`Exec::classify`]).

pub mod budget;
pub mod compare;
pub mod dialect;
pub mod resource;

pub use dialect::{Deactivation, Dialect, Lookup};

use std::collections::BTreeSet;

use serde_json::Value;

use crate::exec::Exec;
use crate::record::Linked;
use crate::{ConvergeError, ConvergeInput, FailureClass};
use scimrelay_proto::v1::{GroupState, ReferenceKind, UserState};
use scimrelay_scim::{ScimError, ScimRequest, ScimResponse};

/// Longest provider id taken from an answer.
pub const MAX_ID_LEN: usize = 1024;

/// Whether a provider id is one to keep: non-empty, at most [`MAX_ID_LEN`] bytes, no control
/// character (a NUL byte in an id is a broken or hostile server, and no database column keeps it).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

/// The `id` of a SCIM resource, when it is a [`valid_id`].
pub fn id_of(v: &Value) -> Option<String> {
    v.get("id")
        .and_then(Value::as_str)
        .filter(|id| valid_id(id))
        .map(str::to_owned)
}

/// The id of the object a create made: an answer without a usable `id` is a failure worth
/// retrying (the next attempt finds the object by externalId, or creates it), never an empty
/// remote id recorded as created.
pub fn created_id(resp: &ScimResponse) -> Result<String, ConvergeError> {
    let body = resp.body.as_ref();
    if let Some(id) = body.and_then(id_of) {
        return Ok(id);
    }
    let why = match body.and_then(|b| b.get("id")) {
        None => "no id".to_owned(),
        Some(Value::String(id)) if id.chars().any(char::is_control) => {
            "an id holding a control character".to_owned()
        }
        Some(Value::String(id)) if id.is_empty() => "an empty id".to_owned(),
        Some(Value::String(_)) => format!("an id longer than {MAX_ID_LEN} bytes"),
        Some(_) => "an id that is not a string".to_owned(),
    };
    Err(ConvergeError {
        http_status: resp.status,
        ..ConvergeError::new(
            FailureClass::Retry,
            format!(
                "the server answered the create with HTTP {} and {why}; nothing is recorded as created",
                resp.status
            ),
        )
    })
}

/// The `Resources` of a list answer (empty when absent).
pub fn resources(resp: &ScimResponse) -> Vec<Value> {
    resp.body
        .as_ref()
        .and_then(|b| b.get("Resources"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The member ids (`members[].value`) of a group resource.
pub fn member_ids(group: &Value) -> BTreeSet<String> {
    group
        .get("members")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|x| x.get("value").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `resource` linked to the converged subject: its `externalId` set to
/// [`ConvergeInput::external_id`] (the bare platform id on a target that serves one tenant,
/// `<tenant>:<id>` on a shared one), whatever the mapping put there.
pub fn linked(input: &ConvergeInput<'_>, mut resource: Value) -> Value {
    if let Value::Object(m) = &mut resource {
        m.insert("externalId".into(), Value::String(input.external_id()));
    }
    resource
}

/// The user of a user event, or a permanent failure.
pub fn user_of<'a>(input: &ConvergeInput<'a>) -> Result<&'a UserState, ConvergeError> {
    input
        .event
        .user
        .as_ref()
        .ok_or_else(|| ConvergeError::new(FailureClass::Permanent, "user event without user"))
}

/// The group of a group event, or a permanent failure.
pub fn group_of<'a>(input: &ConvergeInput<'a>) -> Result<&'a GroupState, ConvergeError> {
    input
        .event
        .group
        .as_ref()
        .ok_or_else(|| ConvergeError::new(FailureClass::Permanent, "group event without group"))
}

/// A permanent failure for a required attribute the desired state lacks, naming the field and
/// the provider that requires it — instead of a 400 the runtime would retry or an operator
/// would have to decode.
pub fn missing_attribute(provider: &str, field: &str, why: &str) -> ConvergeError {
    ConvergeError::new(
        FailureClass::Permanent,
        format!(
            "the user has no {field}, which {provider} requires{why}; set it at the identity platform"
        ),
    )
}

/// Sends a request and reads an error with the profile's classification ([`Exec::classify`]).
pub async fn send(exec: &Exec, req: ScimRequest) -> Result<ScimResponse, ConvergeError> {
    exec.send(req).await.map_err(|e| exec.classify(&e))
}

/// `GET /{endpoint}/{id}`: the resource and its ETag; `None` on 404.
pub async fn get_by_id(
    exec: &Exec,
    endpoint: &str,
    id: &str,
) -> Result<Option<(Value, Option<String>)>, ConvergeError> {
    match exec
        .send(ScimRequest::get(format!(
            "/{endpoint}/{}",
            scimrelay_scim::path_segment(id)
        )))
        .await
    {
        Ok(r) => {
            let etag = r.etag();
            Ok(r.body.map(|b| (b, etag)))
        }
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(exec.classify(&e)),
    }
}

/// A group as read, with its members: a list answer may leave `members` out, so a group without
/// them is read again by id (and kept as it is when that read finds nothing).
pub async fn with_members(exec: &Exec, group: Value) -> Result<Value, ConvergeError> {
    if group.get("members").is_some() {
        return Ok(group);
    }
    let Some(id) = id_of(&group) else {
        return Ok(group);
    };
    Ok(get_by_id(exec, "Groups", &id)
        .await?
        .map_or(group, |(full, _)| full))
}

/// Group members (platform user ids) split into the provider ids the state of record holds and
/// the members still to look up at the target (the caller looks them up its own way — by
/// [`ConvergeInput::external_id_of`] — then calls [`finish_members`]). Members the state of
/// record has converged to "not at the target" (deleted, or deactivated before they were ever
/// created) are left out: they cannot be members now; they are noted on `exec` as dropped
/// references, so that the group is completed if such a user is created again.
pub async fn members_from_record(
    input: &ConvergeInput<'_>,
) -> Result<(Vec<String>, Vec<String>), ConvergeError> {
    let group = group_of(input)?;
    let linked = input.directory.users(&group.member_ids).await?;
    let mut ids = Vec::with_capacity(group.member_ids.len());
    let mut unknown = Vec::new();
    let mut gone = Vec::new();
    for (member, link) in group.member_ids.iter().zip(linked) {
        match link {
            Linked::At(id) => ids.push(id),
            Linked::Gone => gone.push(member.clone()),
            Linked::Unknown => unknown.push(member.clone()),
        }
    }
    gone.sort();
    gone.dedup();
    input
        .exec
        .references_dropped(ReferenceKind::Member, &gone, GONE);
    Ok((ids, unknown))
}

/// Why a member is not in its group at the target: its user is not there and will not be.
pub const GONE: &str =
    "the user is not at the target: deleted at the platform, or never created there";

/// Completes member resolution: `looked_up` holds (member, provider id found) for each member
/// [`members_from_record`] could not resolve. A member not at the target yet is no failure:
/// the group converges with the members that are there, and the rest are noted on `exec` as
/// pending references, which the state of record completes when they arrive
/// (docs/design.md, "References"). Returns the provider ids, sorted and deduplicated.
pub fn finish_members(
    exec: &Exec,
    mut ids: Vec<String>,
    looked_up: Vec<(String, Option<String>)>,
) -> Vec<String> {
    let mut missing = Vec::new();
    for (member, found) in looked_up {
        match found {
            Some(id) => ids.push(id),
            None => missing.push(member),
        }
    }
    missing.sort();
    missing.dedup();
    exec.references_pending(ReferenceKind::Member, &missing);
    ids.sort();
    ids.dedup();
    ids
}

/// One membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add this provider user id.
    Add(String),
    /// Remove this provider user id.
    Remove(String),
}

/// The changes that turn `current` into `desired`, removals first (so a chunked sync never
/// briefly exceeds a group-size limit), each side sorted for stable requests.
pub fn member_diff(current: &BTreeSet<String>, desired: &BTreeSet<String>) -> Vec<MemberChange> {
    current
        .difference(desired)
        .map(|id| MemberChange::Remove(id.clone()))
        .chain(
            desired
                .difference(current)
                .map(|id| MemberChange::Add(id.clone())),
        )
        .collect()
}

/// The permanent failure when a 409's lookup found an object this subject may not adopt: on a
/// target shared by several tenants, one not linked to this subject's `<tenant>:<id>`.
pub fn not_ours(
    input: &ConvergeInput<'_>,
    endpoint: &str,
    attr: &str,
    found: &Value,
) -> ConvergeError {
    let linked = found.get("externalId").and_then(Value::as_str).map_or_else(
        || "no externalId".to_owned(),
        |x| format!("externalId {x:?}"),
    );
    ConvergeError::new(
        FailureClass::Permanent,
        format!(
            "409 on create: the object of {endpoint} with this {attr} is not linked to tenant {:?} \
             ({linked}); this target serves several tenants, so it is never adopted across \
             them — re-link it (README: shared targets) or change the {attr}",
            input.event.tenant
        ),
    )
}

/// Whether a SCIM error is a 409 conflict.
pub fn is_conflict(e: &ScimError) -> bool {
    e.status() == Some(409)
}

/// Sends a group's membership changes to `path` in PATCHes of at most `chunk` changes each.
/// `build` turns one chunk into a PATCH body (the profile's shape: GitHub's, AWS's and
/// Salesforce's differ); a body without operations is not sent. With no changes at all, `build`
/// is asked once with an empty chunk, so a profile that also sets attributes in its first PATCH
/// (AWS: a new displayName) still sends it. `applied` is called after each accepted PATCH (AWS
/// keeps its view of the group's applied state with it). Returns the number of PATCHes sent.
///
/// A 404 means the group disappeared during the update: a retry, which looks it up again (and
/// creates it, where the provider lets a client create groups).
pub async fn patch_members_chunked(
    exec: &Exec,
    path: &str,
    changes: &[MemberChange],
    chunk: usize,
    mut build: impl FnMut(&[MemberChange]) -> Value,
    mut applied: impl FnMut(&[MemberChange]),
) -> Result<usize, ConvergeError> {
    let parts: Vec<&[MemberChange]> = if changes.is_empty() {
        vec![&[]]
    } else {
        changes.chunks(chunk.max(1)).collect()
    };
    let mut sent = 0;
    for part in parts {
        let body = build(part);
        if body
            .get("Operations")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            continue;
        }
        match exec.send(ScimRequest::patch(path, body)).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {
                return Err(ConvergeError::new(
                    FailureClass::Retry,
                    "the group disappeared during the membership update; the retry looks it up again",
                ));
            }
            Err(e) => return Err(exec.classify(&e)),
        }
        applied(part);
        sent += 1;
    }
    Ok(sent)
}

/// The PATCH without its `remove` operations, and the paths those removed; `None` when it has
/// none. What is left to send when a server refuses (400) to clear an attribute the platform
/// cleared: the other changes still land, instead of the whole update failing on every event.
pub fn without_removes(
    patch: &scimrelay_scim::PatchBuilder,
) -> Option<(scimrelay_scim::PatchBuilder, Vec<String>)> {
    use scimrelay_scim::PatchOpKind;
    let mut kept = scimrelay_scim::PatchBuilder::new();
    let mut removed = Vec::new();
    for o in patch.operations() {
        if o.op == PatchOpKind::Remove {
            removed.push(o.path.clone().unwrap_or_default());
        } else {
            kept = kept.op(o.op, o.path.as_deref(), o.value.clone());
        }
    }
    (!removed.is_empty()).then_some((kept, removed))
}

/// The outcome detail when a server refused to clear `paths` and the rest was applied.
pub fn refused_clear(paths: &[String], e: &ScimError) -> String {
    format!(
        "the server refused to clear {} ({}); the other changes were applied",
        paths.join(", "),
        e.detail().unwrap_or("400")
    )
}

/// Brings a user to its desired state with one PATCH (built by the profile's `patch_for` from the
/// desired and the existing user; nothing is sent when it is empty) and recreates it when it disappeared
/// underneath (a 404: converging means it must exist). A 400 to a PATCH that clears attributes
/// is sent again without the removals ([`without_removes`]), the refusal named in the detail.
/// `op` is what a successful PATCH counts as
/// (`Updated`, or `Adopted` after a 409).
pub async fn patch_user(
    input: &ConvergeInput<'_>,
    existing: &Value,
    desired: &Value,
    patch_for: fn(&Value, &Value) -> scimrelay_scim::PatchBuilder,
    op: scimrelay_proto::v1::Operation,
) -> Result<crate::Converged, ConvergeError> {
    use crate::Converged;
    use scimrelay_proto::v1::Operation;
    let id = id_of(existing)
        .ok_or_else(|| ConvergeError::new(FailureClass::Permanent, "remote user has no id"))?;
    // What a write that changes nothing counts as: an adoption stays one.
    let unchanged = if op == Operation::Adopted {
        op
    } else {
        Operation::Noop
    };
    let patch = patch_for(desired, existing);
    if patch.is_empty() {
        return Ok(Converged::new(unchanged, id)
            .with_detail("remote user already matches the desired state"));
    }
    let path = format!("/Users/{}", scimrelay_scim::encoding::path_segment(&id));
    let e = match input
        .exec
        .send(ScimRequest::patch(&path, patch.build()))
        .await
    {
        Ok(_) => return Ok(Converged::new(op, id)),
        Err(e) => e,
    };
    match e.status() {
        Some(400) => {
            let Some((kept, removed)) = without_removes(&patch) else {
                return Err(input.exec.classify(&e));
            };
            let done = if kept.is_empty() {
                unchanged
            } else {
                send(input.exec, ScimRequest::patch(&path, kept.build())).await?;
                op
            };
            Ok(Converged::new(done, id).with_detail(refused_clear(&removed, &e)))
        }
        Some(404) => {
            let resp = send(input.exec, ScimRequest::post("/Users", desired.clone())).await?;
            Ok(Converged::new(Operation::Created, created_id(&resp)?)
                .with_detail("the remote user had been deleted; created again"))
        }
        _ => Err(input.exec.classify(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_diff_removes_first_and_sorts() {
        let cur: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let want: BTreeSet<String> = ["c", "d", "e"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            member_diff(&cur, &want),
            vec![
                MemberChange::Remove("a".into()),
                MemberChange::Remove("b".into()),
                MemberChange::Add("d".into()),
                MemberChange::Add("e".into()),
            ]
        );
        assert!(member_diff(&want, &want).is_empty());
    }

    #[test]
    fn without_removes_keeps_the_rest_in_order() {
        use scimrelay_scim::PatchBuilder;
        let p = PatchBuilder::new()
            .remove("title", None)
            .replace(None, serde_json::json!({"displayName": "D"}))
            .remove("name.givenName", None);
        let (kept, removed) = without_removes(&p).expect("has removes");
        assert_eq!(removed, vec!["title", "name.givenName"]);
        assert_eq!(
            kept.build()["Operations"],
            serde_json::json!([{"op": "replace", "value": {"displayName": "D"}}])
        );
        assert!(without_removes(&kept).is_none());
    }

    #[test]
    fn member_ids_reads_values() {
        let g = serde_json::json!({"members": [{"value": "1"}, {"value": "2", "display": "x"}]});
        assert_eq!(member_ids(&g).len(), 2);
        assert!(member_ids(&serde_json::json!({})).is_empty());
    }
}
