//! The generic RFC 7644 SCIM 2.0 provider profile, for any SCIM application.
//!
//! # Adapting to the server
//! On the first event of a target the profile reads the server's ServiceProviderConfig (either
//! spelling; [`discover`]) and caches what it says per target ([`Caps`]):
//! - **PATCH supported** → updates are PATCH `replace` operations of the attributes that differ
//!   (whole attribute values, explicit paths), `remove` operations of the attributes the
//!   desired state cleared, and group membership is an add/remove diff; otherwise the whole
//!   resource is replaced with PUT (which clears what it leaves out).
//! - **filter supported** → lookups use `externalId eq` / `userName eq`; otherwise the profile
//!   pages through the list up to `totalResults` and compares on its side (bounded by
//!   [`MAX_SCAN_PAGES`]; a longer list fails the lookup instead of answering "not found").
//! - **ETag supported** → every update carries `If-Match` with the version just read; a 412
//!   (someone else changed it in between) re-reads and tries again, [`MAX_PRECONDITION_RETRIES`]
//!   times.
//!
//! A server with no discovery document gets the conservative RFC reading ([`Caps::FALLBACK`]).
//!
//! # Convergence, per event kind
//! - **user.upserted**: find the user (state of record → `externalId eq`); absent → POST; a 409
//!   on create means it exists → look it up by externalId, then userName, and adopt it (on a
//!   target shared by several tenants only an object whose externalId is this subject's);
//!   present → update
//!   only when something differs or was cleared; a 404 on update (deleted underneath) →
//!   create again; a 400 to a PATCH that clears attributes → sent again without the removals,
//!   the refusal named in the outcome (one attribute a server will not clear must not block
//!   every later change of the user).
//! - **user.deactivated**: PATCH (or PUT) `active=false` (no-op when already inactive or absent).
//! - **user.deleted**: the target's `delete_policy` (default: deactivate; `delete` → DELETE).
//! - **group.upserted**: members resolved to the provider's user ids (the state of record, else
//!   `externalId eq`; a member not provisioned yet is left pending, completed when it arrives:
//!   docs/design.md, "References"); create, or
//!   update the diff. The member ids applied are recorded in the state of record.
//! - **group.deleted**: DELETE (404 = already gone).
//!
//! Subjects are linked by `externalId` = the platform's id (`<tenant>:<id>` on a target shared by
//! several tenants), so a lookup after a crash or on a new replica finds what an earlier attempt
//! created instead of creating it twice, and never another tenant's object.

pub mod mapping;

use std::collections::{BTreeSet, HashMap};

use futures::future::BoxFuture;
use serde_json::{Value, json};

use scimrelay_connector::{ConvergeError, ConvergeInput, Converged, FailureClass, Provider};
use scimrelay_core::config::ProviderKind;
use scimrelay_proto::v1::{EventKind, Operation};
use scimrelay_scim::{PatchBuilder, ScimError, ScimRequest, ServiceProviderConfig, path_segment};

use scimrelay_connector::kit::compare;
use scimrelay_connector::kit::{self, Deactivation, Dialect, Lookup, id_of};

/// Pages a lookup scans on a server without filter support (asking [`SCAN_PAGE_SIZE`] each;
/// the server may answer fewer), so one lookup costs at most this many requests.
pub const MAX_SCAN_PAGES: u64 = 100;
/// Page size of such a scan.
pub const SCAN_PAGE_SIZE: u64 = 100;
/// Re-reads after a 412 (ETag mismatch) before the event is retried later.
pub const MAX_PRECONDITION_RETRIES: u32 = 3;

/// What a server said it can do, cached per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// PATCH is supported (else PUT).
    pub patch: bool,
    /// Filtering is supported (else lookups scan pages).
    pub filter: bool,
    /// ETags are supported (send If-Match).
    pub etag: bool,
}

impl Caps {
    /// A server without a discovery document: PUT (every server has it), filters (nearly every
    /// server has `eq`), no ETags.
    pub const FALLBACK: Caps = Caps {
        patch: false,
        filter: true,
        etag: false,
    };

    /// The shared operations' reading of these capabilities.
    pub fn dialect(self) -> Dialect {
        Dialect {
            name: "the target",
            // RFC 7644 §3.4.2.2: a server that filters takes `or`.
            lookup: if self.filter {
                Lookup::FilterOr
            } else {
                Lookup::Scan {
                    page_size: SCAN_PAGE_SIZE,
                    max_pages: MAX_SCAN_PAGES,
                }
            },
            deactivation: if self.patch {
                Deactivation::PatchPath
            } else {
                Deactivation::Put
            },
            if_match: self.etag,
        }
    }

    /// The capabilities a ServiceProviderConfig announces.
    pub fn from_config(c: &ServiceProviderConfig) -> Caps {
        Caps {
            patch: c.patch_supported(),
            filter: c.filter_supported(),
            etag: c.etag_supported(),
        }
    }
}

/// The generic SCIM profile.
#[derive(Debug, Default)]
pub struct GenericScim {
    /// Discovered capabilities per target id (discovered once, on the target's first event; the
    /// async lock makes concurrent first events wait for one discovery instead of each running it).
    caps: tokio::sync::Mutex<HashMap<String, Caps>>,
}

impl GenericScim {
    /// A profile with nothing discovered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The target's capabilities, discovering them on first use.
    async fn caps(&self, input: &ConvergeInput<'_>) -> Result<Caps, ConvergeError> {
        let mut known = self.caps.lock().await;
        if let Some(c) = known.get(&input.target.id) {
            return Ok(*c);
        }
        let caps = discover(input).await?;
        tracing::info!(target = %input.target.id, patch = caps.patch, filter = caps.filter, etag = caps.etag, "discovered server capabilities");
        known.insert(input.target.id.clone(), caps);
        Ok(caps)
    }
}

/// Reads `/ServiceProviderConfig`, then `/ServiceProviderConfigs`; a server that has neither
/// gets [`Caps::FALLBACK`]. Throttling, auth and server errors are returned (and retried).
pub async fn discover(input: &ConvergeInput<'_>) -> Result<Caps, ConvergeError> {
    for path in scimrelay_scim::typed::SERVICE_PROVIDER_CONFIG_PATHS {
        match input.exec.send(ScimRequest::get(path)).await {
            Ok(resp) => {
                let Some(body) = resp.body else { continue };
                let body = match body
                    .get("Resources")
                    .and_then(Value::as_array)
                    .and_then(|r| r.first())
                {
                    Some(first) => first.clone(),
                    None => body,
                };
                return Ok(serde_json::from_value::<ServiceProviderConfig>(body)
                    .map(|c| Caps::from_config(&c))
                    .unwrap_or(Caps::FALLBACK));
            }
            Err(e) if matches!(e.status(), Some(s) if (400..500).contains(&s) && !matches!(s, 401 | 403 | 429) || s == 501) =>
            {
                continue;
            }
            Err(e) => return Err(input.exec.classify(&e)),
        }
    }
    Ok(Caps::FALLBACK)
}

/// The connector's `--help` paragraph ([`Provider::about`]).
pub const ABOUT: &str = "Delivers identity events to generic RFC 7644 SCIM 2.0 applications.\n\n\
Consumes the shard queues of every `provider: scim` target in the targets file, \
converges each event at the target and publishes its outcome.";

impl Provider for GenericScim {
    fn kind(&self) -> ProviderKind {
        ProviderKind::SCIM
    }

    fn about(&self) -> &'static str {
        ABOUT
    }

    fn converge<'a>(
        &'a self,
        input: ConvergeInput<'a>,
    ) -> BoxFuture<'a, Result<Converged, ConvergeError>> {
        Box::pin(async move {
            let caps = self.caps(&input).await?;
            match input.event.kind() {
                EventKind::UserUpserted => upsert_user(&input, caps).await,
                EventKind::UserDeactivated => caps.dialect().deactivate_user(&input).await,
                EventKind::UserDeleted => caps.dialect().delete_user(&input).await,
                EventKind::GroupUpserted => upsert_group(&input, caps).await,
                EventKind::GroupDeleted => caps.dialect().delete(&input, "Groups").await,
                EventKind::Unspecified => Err(ConvergeError::new(
                    FailureClass::Permanent,
                    "event has no kind",
                )),
            }
        })
    }
}

async fn upsert_user(input: &ConvergeInput<'_>, caps: Caps) -> Result<Converged, ConvergeError> {
    let user = kit::user_of(input)?;
    let desired = kit::linked(input, mapping::user_resource(user, user.active));
    match caps.dialect().current(input, "Users").await? {
        Some((existing, etag)) => {
            update(
                input,
                caps,
                "Users",
                existing,
                etag,
                desired,
                Operation::Updated,
            )
            .await
        }
        None => {
            create_or_adopt(
                input,
                caps,
                "Users",
                desired,
                &[
                    ("externalId", &input.external_id()),
                    ("userName", &user.user_name),
                ],
            )
            .await
        }
    }
}

async fn create_or_adopt(
    input: &ConvergeInput<'_>,
    caps: Caps,
    endpoint: &str,
    desired: Value,
    lookups: &[(&str, &str)],
) -> Result<Converged, ConvergeError> {
    match input
        .exec
        .send(ScimRequest::post(format!("/{endpoint}"), desired.clone()))
        .await
    {
        Ok(resp) => Ok(Converged::new(Operation::Created, kit::created_id(&resp)?)),
        Err(e) if kit::is_conflict(&e) => {
            if let Some((existing, attr)) =
                caps.dialect().adoptable(input, endpoint, lookups).await?
            {
                let id = id_of(&existing).unwrap_or_default();
                let (existing, etag) = if caps.etag {
                    kit::get_by_id(input.exec, endpoint, &id)
                        .await?
                        .unwrap_or((existing, None))
                } else {
                    (existing, None)
                };
                let done = update(
                    input,
                    caps,
                    endpoint,
                    existing,
                    etag,
                    desired,
                    Operation::Adopted,
                )
                .await?;
                return Ok(
                    Converged::new(Operation::Adopted, done.remote_id).with_detail(format!(
                        "409 on create: adopted the existing object found by {attr}"
                    )),
                );
            }
            Err(ConvergeError {
                detail: format!(
                    "409 on create but no object found by {}",
                    lookups
                        .iter()
                        .map(|(a, _)| *a)
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
                ..input.exec.classify(&e)
            })
        }
        Err(e) => Err(input.exec.classify(&e)),
    }
}

/// The attributes an update of `endpoint` clears when the desired state leaves them out.
fn managed(endpoint: &str) -> &'static [&'static str] {
    if endpoint == "Users" {
        &mapping::MANAGED_USER_ATTRS
    } else {
        // A group's displayName is required; its members are diffed on their own.
        &[]
    }
}

/// The PATCH that turns `existing` into `desired`: one `remove` per managed attribute the
/// desired state cleared (`title`, `name.givenName`, `urn:…:User:department`;
/// [`compare::cleared`]), then one `replace` per differing top-level attribute, whole values;
/// group members as an add/remove diff.
pub fn patch_for(endpoint: &str, desired: &Value, existing: &Value) -> PatchBuilder {
    let mut patch = PatchBuilder::new();
    let (Value::Object(_), Value::Object(_)) = (desired, existing) else {
        return patch;
    };
    // Removes first: a server that applies `replace name {…}` as a whole value has already
    // dropped the sub-attribute a later `remove name.givenName` names, and a strict one
    // answers 400 noTarget. In this order both readings of RFC 7644 give the same result.
    for path in compare::cleared(desired, existing, managed(endpoint)) {
        patch = patch.remove(path, None);
    }
    for op in compare::replace_patch(desired, existing).operations() {
        patch = patch.op(op.op, op.path.as_deref(), op.value.clone());
    }
    if endpoint == "Groups" {
        let want: BTreeSet<String> = kit::member_ids(desired);
        let have: BTreeSet<String> = kit::member_ids(existing);
        let add: Vec<&str> = want.difference(&have).map(String::as_str).collect();
        if !add.is_empty() {
            patch = patch.add(Some("members"), scimrelay_scim::member_values(add));
        }
        for gone in have.difference(&want) {
            patch = patch.remove(
                &format!(
                    "members[value eq \"{}\"]",
                    scimrelay_scim::escape_value(gone)
                ),
                None,
            );
        }
    }
    patch
}

/// Updates the remote object when it differs from the desired state: PATCH or PUT as the server
/// supports, with If-Match when it supports ETags.
async fn update(
    input: &ConvergeInput<'_>,
    caps: Caps,
    endpoint: &str,
    mut existing: Value,
    mut etag: Option<String>,
    desired: Value,
    op: Operation,
) -> Result<Converged, ConvergeError> {
    let id = id_of(&existing)
        .ok_or_else(|| ConvergeError::new(FailureClass::Permanent, "remote object has no id"))?;
    let path = format!("/{endpoint}/{}", path_segment(&id));
    let mut attempt = 0;
    loop {
        if !compare::out_of_date(&desired, &existing, managed(endpoint)) {
            return Ok(Converged::new(
                if op == Operation::Adopted {
                    op
                } else {
                    Operation::Noop
                },
                id,
            )
            .with_detail("remote object already matches the desired state"));
        }
        let patch = caps.patch.then(|| patch_for(endpoint, &desired, &existing));
        let mut req = if let Some(patch) = &patch {
            ScimRequest::patch(&path, patch.build())
        } else {
            let mut body = desired.clone();
            if let Value::Object(m) = &mut body {
                m.insert("id".into(), json!(id));
            }
            ScimRequest::put(&path, body)
        };
        if let (true, Some(tag)) = (caps.etag, etag.as_ref()) {
            req = req.with_if_match(tag.clone());
        }
        let refused = |e: &ScimError| {
            e.status() == Some(400)
                && endpoint == "Users"
                && patch.as_ref().and_then(kit::without_removes).is_some()
        };
        match input.exec.send(req).await {
            Ok(_) => return Ok(Converged::new(op, id)),
            Err(e) if refused(&e) => {
                // The server will not clear something the platform cleared: apply the rest.
                let (kept, removed) = patch
                    .as_ref()
                    .and_then(kit::without_removes)
                    .unwrap_or_default();
                let mut done = if op == Operation::Adopted {
                    op
                } else {
                    Operation::Noop
                };
                if !kept.is_empty() {
                    let mut retry = ScimRequest::patch(&path, kept.build());
                    if let (true, Some(tag)) = (caps.etag, etag.as_ref()) {
                        retry = retry.with_if_match(tag.clone());
                    }
                    kit::send(input.exec, retry).await?;
                    done = op;
                }
                return Ok(Converged::new(done, id).with_detail(kit::refused_clear(&removed, &e)));
            }
            Err(e) if e.status() == Some(404) => return recreate(input, endpoint, desired).await,
            Err(e) if e.status() == Some(412) && attempt < MAX_PRECONDITION_RETRIES => {
                // Changed underneath us since we read it: read again and recompute.
                attempt += 1;
                match kit::get_by_id(input.exec, endpoint, &id).await? {
                    Some((fresh, tag)) => {
                        existing = fresh;
                        etag = tag;
                    }
                    None => return recreate(input, endpoint, desired).await,
                }
            }
            Err(e) => return Err(input.exec.classify(&e)),
        }
    }
}

/// The object was deleted underneath us: converging means it must exist again.
async fn recreate(
    input: &ConvergeInput<'_>,
    endpoint: &str,
    desired: Value,
) -> Result<Converged, ConvergeError> {
    let resp = kit::send(
        input.exec,
        ScimRequest::post(format!("/{endpoint}"), desired),
    )
    .await?;
    Ok(Converged::new(Operation::Created, kit::created_id(&resp)?)
        .with_detail("the remote object had been deleted; created again"))
}

async fn upsert_group(input: &ConvergeInput<'_>, caps: Caps) -> Result<Converged, ConvergeError> {
    let group = kit::group_of(input)?;
    let members = caps.dialect().group_members(input).await?;
    let desired = kit::linked(input, mapping::group_resource(group, &members));
    let done = match caps.dialect().current(input, "Groups").await? {
        Some((existing, etag)) => {
            update(
                input,
                caps,
                "Groups",
                existing,
                etag,
                desired,
                Operation::Updated,
            )
            .await?
        }
        None => {
            create_or_adopt(
                input,
                caps,
                "Groups",
                desired,
                &[
                    ("externalId", &input.external_id()),
                    ("displayName", &group.display_name),
                ],
            )
            .await?
        }
    };
    Ok(done.with_members(members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_replaces_whole_changed_attributes_only() {
        let desired =
            json!({"userName": "a", "name": {"givenName": "A", "familyName": "B"}, "title": "X"});
        let existing = json!({"id": "1", "userName": "A", "name": {"givenName": "A", "familyName": "C"}, "title": "X"});
        let body = patch_for("Users", &desired, &existing).build();
        assert_eq!(
            body["Operations"],
            json!([{"op": "replace", "path": "name", "value": {"givenName": "A", "familyName": "B"}}])
        );
    }

    #[test]
    fn patch_removes_what_the_desired_state_cleared() {
        let desired = json!({"userName": "a", "name": {"familyName": "B"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7"}});
        let existing = json!({"id": "1", "userName": "a", "title": "X", "locale": "",
            "name": {"givenName": "A", "familyName": "B", "formatted": "A B"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7", "department": "D"},
            "nickName": "not managed"});
        let body = patch_for("Users", &desired, &existing).build();
        assert_eq!(
            body["Operations"],
            json!([
                {"op": "remove", "path": "name.givenName"},
                {"op": "remove", "path": "title"},
                {"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}
            ])
        );
        // A group's attributes are not cleared, whatever the server holds.
        let g = patch_for(
            "Groups",
            &json!({"displayName": "G"}),
            &json!({"displayName": "G", "title": "x"}),
        );
        assert!(g.is_empty());
    }

    #[test]
    fn group_patch_is_a_member_diff() {
        let desired = json!({"displayName": "G", "members": [{"value": "1"}, {"value": "3"}]});
        let existing =
            json!({"id": "g", "displayName": "G", "members": [{"value": "1"}, {"value": "2"}]});
        let body = patch_for("Groups", &desired, &existing).build();
        assert_eq!(
            body["Operations"],
            json!([
                {"op": "add", "path": "members", "value": [{"value": "3"}]},
                {"op": "remove", "path": "members[value eq \"2\"]"}
            ])
        );
    }

    #[test]
    fn caps_follow_the_config() {
        let c: ServiceProviderConfig = serde_json::from_value(json!({
            "patch": {"supported": false}, "filter": {"supported": true, "maxResults": 10},
            "etag": {"supported": "true"}
        }))
        .expect("config");
        assert_eq!(
            Caps::from_config(&c),
            Caps {
                patch: false,
                filter: true,
                etag: true
            }
        );
    }
}
