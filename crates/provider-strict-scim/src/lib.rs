//! A strict SCIM 2.0 profile, used only in tests: the worked example of CONTRIBUTING.md and the
//! proof that the provider seam is whole. It is written against `scimrelay-connector` alone
//! (the [`Provider`] trait, [`scimrelay_connector::kit`] and typed options); no other crate
//! knows it, except that the simulator's scim mode can refuse PUT (`put: false`) as its server
//! does, and the tests that run it.
//!
//! # The server it drives
//! A SCIM 2.0 server that takes every change as PATCH and refuses PUT (405), filters with `eq`
//! and is not asked for its ServiceProviderConfig: the profile knows what it supports.
//! - **user.upserted**: found by the id the state of record holds, else `externalId eq`;
//!   absent → POST (a 409 adopts the user found by externalId or userName); present → one
//!   PATCH of `replace` operations for the attributes that differ, nothing when none does.
//!   Users carry the core attributes only: userName, name, displayName, one primary e-mail,
//!   active.
//! - **user.deactivated**: PATCH `active` false; **user.deleted**: the target's
//!   `delete_policy`.
//! - **group.upserted**: members resolved through the state of record (else by externalId);
//!   created empty, then the membership as PATCH diffs of at most `options.member_chunk`
//!   changes each (RFC 7644 §3.5.2: `add` of `members`, `remove` of `members[value eq "…"]`).
//! - **group.deleted**: DELETE.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use scimrelay_connector::kit::compare::{GROUP_SCHEMA, USER_SCHEMA, replace_patch};
use scimrelay_connector::kit::resource::{one_value, put, require, sole};
use scimrelay_connector::kit::{self, Deactivation, Dialect, Lookup, MemberChange, id_of};
use scimrelay_connector::options::{self, TargetOptions};
use scimrelay_connector::{ConvergeError, ConvergeInput, Converged, FailureClass, Provider};
use scimrelay_core::config::{ProviderKind, TargetConfig};
use scimrelay_proto::v1::{EventKind, Operation, UserState};
use scimrelay_scim::{PatchBuilder, ScimRequest, escape_value, member_values, path_segment};

/// The provider name its targets give (`provider: strict-scim`).
pub const KIND: ProviderKind = ProviderKind::named("strict-scim");

/// Membership changes per PATCH unless `options.member_chunk` says otherwise.
pub const DEFAULT_MEMBER_CHUNK: u64 = 100;

/// The strict server's dialect: filtered lookups, `replace` of `active` with a path, no ETags.
pub const DIALECT: Dialect = Dialect {
    name: "the strict SCIM server",
    lookup: Lookup::Filter,
    deactivation: Deactivation::PatchPath,
    if_match: false,
};

/// The connector's `--help` paragraph ([`Provider::about`]).
pub const ABOUT: &str = "Delivers identity events to strict SCIM 2.0 servers that refuse PUT \
(a profile used only in tests).\n\n\
Consumes the shard queues of every `provider: strict-scim` target in the targets file, \
converges each event with POST, PATCH and DELETE only (never PUT) and publishes its outcome. \
Options: `member_chunk` (membership changes per PATCH, default 100).";

/// The options a strict-scim target may set (`targets[i].options`), parsed at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrictOptions {
    /// Membership changes per PATCH (at least 1; default [`DEFAULT_MEMBER_CHUNK`]).
    #[serde(default, deserialize_with = "options::at_least_one")]
    pub member_chunk: Option<u64>,
    /// A note for operators, never sent (shows a text option in the example).
    #[serde(default, deserialize_with = "options::text")]
    pub note: Option<String>,
}

/// The strict SCIM profile.
#[derive(Debug, Default)]
pub struct StrictScim {
    options: TargetOptions<StrictOptions>,
}

impl Provider for StrictScim {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    fn about(&self) -> &'static str {
        ABOUT
    }

    fn check_options(&self, t: &TargetConfig) -> Option<(String, String)> {
        self.options.check(t).err()
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
                EventKind::GroupUpserted => {
                    let chunk = self.options.get(input.target)?.member_chunk;
                    let chunk = chunk.unwrap_or(DEFAULT_MEMBER_CHUNK);
                    upsert_group(&input, usize::try_from(chunk).unwrap_or(usize::MAX)).await
                }
                EventKind::GroupDeleted => DIALECT.delete(&input, "Groups").await,
                EventKind::Unspecified => Err(ConvergeError::new(
                    FailureClass::Permanent,
                    "event has no kind",
                )),
            }
        })
    }
}

/// The SCIM user for a desired state: the core attributes the strict server keeps.
pub fn user_resource(u: &UserState, active: bool) -> Result<Value, ConvergeError> {
    require("the strict SCIM server", "userName", &u.user_name, "")?;
    let mut m = Map::new();
    m.insert("schemas".into(), json!([USER_SCHEMA]));
    m.insert("externalId".into(), json!(u.id));
    m.insert("userName".into(), json!(u.user_name));
    m.insert("active".into(), json!(active));
    put(&mut m, "displayName", &u.display_name);
    let mut name = Map::new();
    put(&mut name, "givenName", &u.given_name);
    put(&mut name, "familyName", &u.family_name);
    if !name.is_empty() {
        m.insert("name".into(), Value::Object(name));
    }
    if let Some(e) = sole(&u.emails, |e| &e.value, |e| e.primary) {
        m.insert("emails".into(), one_value(&e.value, &e.r#type));
    }
    Ok(Value::Object(m))
}

async fn upsert_user(input: &ConvergeInput<'_>) -> Result<Converged, ConvergeError> {
    let user = kit::user_of(input)?;
    let desired = kit::linked(input, user_resource(user, user.active)?);
    if let Some((existing, _)) = DIALECT.current(input, "Users").await? {
        return kit::patch_user(
            input,
            &existing,
            &desired,
            replace_patch,
            Operation::Updated,
        )
        .await;
    }
    match DIALECT
        .create_user(input, &desired, &user.user_name, replace_patch)
        .await?
    {
        Ok(done) => Ok(done),
        Err(e) if kit::is_conflict(&e) => Err(ConvergeError {
            detail: "409 on create but no user found by externalId or userName".into(),
            ..input.exec.classify(&e)
        }),
        Err(e) => Err(input.exec.classify(&e)),
    }
}

/// One membership PATCH in RFC 7644 §3.5.2 form: `add` of `members` with the new values, one
/// `remove` of `members[value eq "…"]` per member leaving.
pub fn member_patch(changes: &[MemberChange]) -> Value {
    let mut patch = PatchBuilder::new();
    let add: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            MemberChange::Add(id) => Some(id.as_str()),
            MemberChange::Remove(_) => None,
        })
        .collect();
    for c in changes {
        if let MemberChange::Remove(id) = c {
            patch = patch.remove(&format!("members[value eq \"{}\"]", escape_value(id)), None);
        }
    }
    if !add.is_empty() {
        patch = patch.add(Some("members"), member_values(add));
    }
    patch.build()
}

async fn upsert_group(input: &ConvergeInput<'_>, chunk: usize) -> Result<Converged, ConvergeError> {
    let group = kit::group_of(input)?;
    let members = DIALECT.group_members(input).await?;
    let (existing, mut op) = match DIALECT.current(input, "Groups").await? {
        Some((g, _)) => (g, Operation::Updated),
        None => create_group(input, &group.display_name).await?,
    };
    // A list answer (the lookup, an adoption) may leave the members out: read them.
    let existing = kit::with_members(input.exec, existing).await?;
    let id = id_of(&existing)
        .ok_or_else(|| ConvergeError::new(FailureClass::Permanent, "remote group has no id"))?;
    let path = format!("/Groups/{}", path_segment(&id));
    let mut sent = 0;
    if existing.get("displayName").and_then(Value::as_str) != Some(group.display_name.as_str()) {
        let rename = PatchBuilder::new().replace(Some("displayName"), json!(group.display_name));
        kit::send(input.exec, ScimRequest::patch(&path, rename.build())).await?;
        sent += 1;
    }
    let desired: BTreeSet<String> = members.iter().cloned().collect();
    let changes = kit::member_diff(&kit::member_ids(&existing), &desired);
    sent += kit::patch_members_chunked(input.exec, &path, &changes, chunk, member_patch, |_| {})
        .await?;
    if sent == 0 && op == Operation::Updated {
        op = Operation::Noop;
    }
    Ok(Converged::new(op, id).with_members(members))
}

/// Creates the subject's group without members (they follow as PATCHes); a 409 adopts the
/// group found by externalId or displayName.
async fn create_group(
    input: &ConvergeInput<'_>,
    name: &str,
) -> Result<(Value, Operation), ConvergeError> {
    let body = kit::linked(
        input,
        json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": []}),
    );
    match input.exec.send(ScimRequest::post("/Groups", body)).await {
        Ok(resp) => {
            let id = kit::created_id(&resp)?;
            Ok((
                json!({"id": id, "displayName": name, "members": []}),
                Operation::Created,
            ))
        }
        Err(e) if kit::is_conflict(&e) => {
            let external_id = input.external_id();
            let lookups = [("externalId", external_id.as_str()), ("displayName", name)];
            match DIALECT.adoptable(input, "Groups", &lookups).await? {
                Some((found, _)) => Ok((found, Operation::Adopted)),
                None => Err(ConvergeError {
                    detail: "409 on group create but no group found by externalId or displayName"
                        .into(),
                    ..input.exec.classify(&e)
                }),
            }
        }
        Err(e) => Err(input.exec.classify(&e)),
    }
}
