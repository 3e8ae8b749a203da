//! The operations every profile performs the same way up to a few provider facts — look an
//! object up, read the subject's current object, deactivate a user, delete an object — written
//! once, with a [`Dialect`] naming what really differs between servers: how a lookup pages,
//! how `active` is set to false, whether writes carry `If-Match`.
//!
//! Errors are read by the profile's own classification ([`crate::Provider::classify`], through
//! [`Exec::classify`]), so a shared operation fails the way the profile says its server means
//! it. A 404 is read the same way everywhere: the object is not there, which is what a
//! deactivation or a deletion wants — a no-op with a detail, never a failed outcome (a server
//! that never deletes users, like Salesforce, answers 404 only for an id that is not a user of
//! the org, and then there is nothing to deactivate either).

use serde_json::{Value, json};

use scimrelay_core::config::DeletePolicy;
use scimrelay_proto::v1::Operation;
use scimrelay_scim::{PatchBuilder, ScimRequest, filter_eq, path_segment};

use super::{get_by_id, id_of, resources, send};
use crate::exec::Exec;
use crate::{ConvergeError, ConvergeInput, Converged, FailureClass};

/// Values joined by `or` in one lookup request ([`Dialect::find_many`]): short enough for any
/// server's URL (50 externalIds of 64 characters with their filter text stay under 8 KiB).
pub const FIND_MANY_CHUNK: usize = 50;

/// How a server is asked for the objects with one attribute value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// `GET /{endpoint}?filter=attr eq "value"`; the first match (RFC 7644 §3.4.2.2).
    Filter,
    /// [`Lookup::Filter`] on a server whose filters take `or`: several objects are looked up
    /// in one request ([`Dialect::find_many`], up to [`FIND_MANY_CHUNK`] at a time).
    FilterOr,
    /// A server that cannot filter: index pages (`startIndex`, `count`) compared on our side.
    /// The scan follows `totalResults`, not the page length (a server may answer fewer than
    /// asked per page, and taking a short page for the last one would answer "not found" for
    /// an object further on, and create it twice); one that reaches `max_pages` without the
    /// end fails (permanent) rather than answer "not found".
    Scan {
        /// `count` asked per page.
        page_size: u64,
        /// Pages one lookup may read.
        max_pages: u64,
    },
    /// A filter answered in cursor pages (`cursor`, `nextCursor`): a short page is not the
    /// end; a listing that has not ended after `max_pages` is retried later.
    Cursor {
        /// `count` asked per page.
        page_size: u64,
        /// Pages one listing may read.
        max_pages: usize,
    },
}

/// How a user is made inactive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deactivation {
    /// PATCH `{"op": "replace", "path": "active", "value": false}`.
    PatchPath,
    /// PATCH `{"op": "replace", "value": {"active": false}}`, without a path (GitHub,
    /// Salesforce).
    PatchValue,
    /// PUT of the object as read, with `active: false` (a server without PATCH).
    Put,
}

/// What differs between servers for the shared operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// The provider as outcome details name it ("not present at GitHub").
    pub name: &'static str,
    /// How objects are looked up.
    pub lookup: Lookup,
    /// How a user is deactivated.
    pub deactivation: Deactivation,
    /// Whether writes carry `If-Match` with the ETag read (a server that supports ETags).
    pub if_match: bool,
}

impl Dialect {
    /// The first object of `endpoint` whose `attr` is `value` (`userName` compares
    /// case-insensitively in a scan, as SCIM says it does).
    pub async fn find(
        &self,
        exec: &Exec,
        endpoint: &str,
        attr: &str,
        value: &str,
    ) -> Result<Option<Value>, ConvergeError> {
        match self.lookup {
            Lookup::Filter | Lookup::FilterOr => {
                let req = ScimRequest::get(format!("/{endpoint}"))
                    .with_query("filter", filter_eq(attr, value));
                Ok(resources(&send(exec, req).await?).into_iter().next())
            }
            Lookup::Scan {
                page_size,
                max_pages,
            } => scan(exec, endpoint, attr, value, page_size, max_pages).await,
            Lookup::Cursor {
                page_size,
                max_pages,
            } => Ok(cursor_list(
                exec,
                endpoint,
                &filter_eq(attr, value),
                (page_size, max_pages),
                |found| !found.is_empty(),
            )
            .await?
            .into_iter()
            .next()),
        }
    }

    /// The object of `endpoint` whose `attr` is each of `values` (`None`: none), in the order
    /// of `values`: one request per [`FIND_MANY_CHUNK`] values joined by `or` on a server that
    /// takes it ([`Lookup::FilterOr`]), else one lookup each ([`Dialect::find`]).
    pub async fn find_many(
        &self,
        exec: &Exec,
        endpoint: &str,
        attr: &str,
        values: &[String],
    ) -> Result<Vec<Option<Value>>, ConvergeError> {
        let mut found = Vec::with_capacity(values.len());
        if self.lookup != Lookup::FilterOr {
            for v in values {
                found.push(self.find(exec, endpoint, attr, v).await?);
            }
            return Ok(found);
        }
        for chunk in values.chunks(FIND_MANY_CHUNK) {
            let filter = chunk
                .iter()
                .map(|v| filter_eq(attr, v))
                .collect::<Vec<_>>()
                .join(" or ");
            let req = ScimRequest::get(format!("/{endpoint}"))
                .with_query("filter", filter)
                .with_query("count", chunk.len().to_string());
            // A server that refuses the `or` (400) is asked one value at a time.
            let answer = match exec.send(req).await {
                Ok(r) => r,
                Err(e) if e.status() == Some(400) => {
                    for v in chunk {
                        found.push(self.find(exec, endpoint, attr, v).await?);
                    }
                    continue;
                }
                Err(e) => return Err(exec.classify(&e)),
            };
            let page = resources(&answer);
            let total = answer
                .body
                .as_ref()
                .and_then(|b| b.get("totalResults"))
                .and_then(Value::as_u64)
                .unwrap_or(page.len() as u64);
            // A page that may not hold every match (shorter than the total, or objects that do
            // not show the attribute) leaves the values it does not show to single lookups.
            let complete = total <= page.len() as u64
                && page
                    .iter()
                    .all(|r| r.get(attr).and_then(Value::as_str).is_some());
            for v in chunk {
                let hit = page
                    .iter()
                    .find(|r| r.get(attr).and_then(Value::as_str) == Some(v.as_str()))
                    .cloned();
                found.push(match hit {
                    Some(r) => Some(r),
                    None if complete => None,
                    None => self.find(exec, endpoint, attr, v).await?,
                });
            }
        }
        Ok(found)
    }

    /// After a 409 to a create: the object the subject may adopt, looked up by each
    /// `(attribute, value)` of `lookups` in turn (empty values skipped), with the attribute it
    /// was found by; `None` when none finds one. An object found that this subject may not
    /// adopt (another tenant's, on a shared target: [`ConvergeInput::may_adopt`]) is a
    /// permanent failure ([`super::not_ours`]).
    pub async fn adoptable<'l>(
        &self,
        input: &ConvergeInput<'_>,
        endpoint: &str,
        lookups: &[(&'l str, &str)],
    ) -> Result<Option<(Value, &'l str)>, ConvergeError> {
        for &(attr, value) in lookups {
            if value.is_empty() {
                continue;
            }
            if let Some(found) = self.find(input.exec, endpoint, attr, value).await? {
                if !input.may_adopt(&found) {
                    return Err(super::not_ours(input, endpoint, attr, &found));
                }
                return Ok(Some((found, attr)));
            }
        }
        Ok(None)
    }

    /// Creates the subject's user (`POST /Users` with `desired`). After a 409 it adopts the
    /// user [`Dialect::adoptable`] finds by externalId, then `user_name`, bringing it to the
    /// desired state with `patch_for` ([`super::patch_user`]). The inner error is the create's
    /// refusal nothing resolved (a 409 without a user to adopt, or any other answer), for the
    /// profile to word in its provider's terms.
    pub async fn create_user(
        &self,
        input: &ConvergeInput<'_>,
        desired: &Value,
        user_name: &str,
        patch_for: fn(&Value, &Value) -> scimrelay_scim::PatchBuilder,
    ) -> Result<Result<Converged, scimrelay_scim::ScimError>, ConvergeError> {
        let e = match input
            .exec
            .send(ScimRequest::post("/Users", desired.clone()))
            .await
        {
            Ok(resp) => {
                return Ok(Ok(Converged::new(
                    Operation::Created,
                    super::created_id(&resp)?,
                )));
            }
            Err(e) if super::is_conflict(&e) => e,
            Err(e) => return Ok(Err(e)),
        };
        let lookups = [
            ("externalId", input.external_id()),
            ("userName", user_name.to_owned()),
        ];
        let lookups: Vec<(&str, &str)> = lookups.iter().map(|(a, v)| (*a, v.as_str())).collect();
        let Some((existing, attr)) = self.adoptable(input, "Users", &lookups).await? else {
            return Ok(Err(e));
        };
        let done =
            super::patch_user(input, &existing, desired, patch_for, Operation::Adopted).await?;
        Ok(Ok(Converged::new(Operation::Adopted, done.remote_id)
            .with_detail(format!(
                "409 on create: adopted the existing user found by {attr}"
            ))))
    }

    /// The subject's object at the target and its ETag: by the id the state of record holds,
    /// else by externalId. With `if_match`, an object found by a list (which carries no ETag
    /// header) is read again by id for its version.
    pub async fn current(
        &self,
        input: &ConvergeInput<'_>,
        endpoint: &str,
    ) -> Result<Option<(Value, Option<String>)>, ConvergeError> {
        if let Some(id) = input.record.known_remote_id()
            && let Some(found) = get_by_id(input.exec, endpoint, id).await?
        {
            return Ok(Some(found));
        }
        let Some(found) = self
            .find(input.exec, endpoint, "externalId", &input.external_id())
            .await?
        else {
            return Ok(None);
        };
        if !self.if_match {
            return Ok(Some((found, None)));
        }
        let id = id_of(&found).unwrap_or_default();
        Ok(get_by_id(input.exec, endpoint, &id)
            .await?
            .or(Some((found, None))))
    }

    /// Sets the subject's user inactive: a no-op when it is absent or already inactive, or
    /// disappears before the write (404).
    pub async fn deactivate_user(
        &self,
        input: &ConvergeInput<'_>,
    ) -> Result<Converged, ConvergeError> {
        let Some((existing, etag)) = self.current(input, "Users").await? else {
            return Ok(Converged::new(Operation::Noop, "").with_detail(format!(
                "user not present at {}; nothing to deactivate",
                self.name
            )));
        };
        let id = id_of(&existing).unwrap_or_default();
        if existing.get("active") == Some(&json!(false)) {
            return Ok(Converged::new(Operation::Noop, id).with_detail("already inactive"));
        }
        let path = format!("/Users/{}", path_segment(&id));
        let req = match self.deactivation {
            Deactivation::PatchPath => ScimRequest::patch(
                &path,
                PatchBuilder::new()
                    .replace(Some("active"), json!(false))
                    .build(),
            ),
            Deactivation::PatchValue => ScimRequest::patch(
                &path,
                PatchBuilder::new()
                    .replace(None, json!({"active": false}))
                    .build(),
            ),
            Deactivation::Put => {
                let mut body = existing;
                if let Value::Object(m) = &mut body {
                    m.insert("active".into(), json!(false));
                    m.remove("meta");
                }
                ScimRequest::put(&path, body)
            }
        };
        match input.exec.send(self.with_version(req, etag)).await {
            Ok(_) => Ok(Converged::new(Operation::Deactivated, id)),
            Err(e) if e.status() == Some(404) => Ok(Converged::new(Operation::Noop, "")
                .with_detail("user disappeared before deactivation")),
            Err(e) => Err(input.exec.classify(&e)),
        }
    }

    /// A `user.deleted` event as the target's `delete_policy` says: deactivate the user (the
    /// default; the detail says so) or delete it.
    pub async fn delete_user(&self, input: &ConvergeInput<'_>) -> Result<Converged, ConvergeError> {
        match input.target.delete_policy {
            DeletePolicy::Deactivate => self.deactivate_user(input).await.map(|c| {
                c.with_detail("delete_policy is deactivate: the user was deactivated, not deleted")
            }),
            DeletePolicy::Delete => self.delete(input, "Users").await,
        }
    }

    /// Deletes the subject's object of `endpoint`: a no-op when it is absent or already gone.
    /// Without `if_match`, an id the state of record holds is deleted directly (one request,
    /// no read first); a 404 to it looks the subject up by externalId, so an object linked to
    /// it under another id is not left behind. A plan reads first, so what it reports is what
    /// a real run would do.
    pub async fn delete(
        &self,
        input: &ConvergeInput<'_>,
        endpoint: &str,
    ) -> Result<Converged, ConvergeError> {
        let direct = !self.if_match && !input.exec.is_plan();
        let found = match input.record.known_remote_id() {
            Some(id) if direct => {
                if let Some(done) = delete_id(input.exec, endpoint, id, None).await? {
                    return Ok(done);
                }
                self.find(input.exec, endpoint, "externalId", &input.external_id())
                    .await?
                    .map(|v| (v, None))
            }
            _ => self.current(input, endpoint).await?,
        };
        let Some((existing, etag)) = found else {
            return Ok(Converged::new(Operation::Noop, "")
                .with_detail(format!("not present at {}; nothing to delete", self.name)));
        };
        let id = id_of(&existing).unwrap_or_default();
        let etag = etag.filter(|_| self.if_match);
        Ok(delete_id(input.exec, endpoint, &id, etag)
            .await?
            .unwrap_or_else(|| Converged::new(Operation::Noop, "").with_detail("already deleted")))
    }

    /// The provider user ids of the event's group members, sorted and deduplicated: those the
    /// state of record links ([`super::members_from_record`]), the others looked up by
    /// externalId; a member not at the target yet is left pending ([`super::finish_members`]).
    pub async fn group_members(
        &self,
        input: &ConvergeInput<'_>,
    ) -> Result<Vec<String>, ConvergeError> {
        let (ids, mut unknown) = super::members_from_record(input).await?;
        unknown.sort();
        unknown.dedup();
        if input.exec.is_retrigger() {
            let looked_up = unknown.into_iter().map(|m| (m, None)).collect();
            return Ok(super::finish_members(input.exec, ids, looked_up));
        }
        let external: Vec<String> = unknown.iter().map(|m| input.external_id_of(m)).collect();
        let found = self
            .find_many(input.exec, "Users", "externalId", &external)
            .await?;
        let looked_up = unknown
            .into_iter()
            .zip(found)
            .map(|(member, user)| (member, user.as_ref().and_then(id_of)))
            .collect();
        Ok(super::finish_members(input.exec, ids, looked_up))
    }

    /// `req` with `If-Match: etag` when the server supports ETags and one was read.
    pub fn with_version(&self, req: ScimRequest, etag: Option<String>) -> ScimRequest {
        match etag {
            Some(tag) if self.if_match => req.with_if_match(tag),
            _ => req,
        }
    }
}

/// `DELETE /{endpoint}/{id}`: the outcome, or `None` on a 404.
async fn delete_id(
    exec: &Exec,
    endpoint: &str,
    id: &str,
    etag: Option<String>,
) -> Result<Option<Converged>, ConvergeError> {
    let mut req = ScimRequest::delete(format!("/{endpoint}/{}", path_segment(id)));
    if let Some(tag) = etag {
        req = req.with_if_match(tag);
    }
    match exec.send(req).await {
        Ok(_) => Ok(Some(Converged::new(Operation::Deleted, ""))),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(exec.classify(&e)),
    }
}

/// Looks `attr = value` up by reading index pages (see [`Lookup::Scan`]).
async fn scan(
    exec: &Exec,
    endpoint: &str,
    attr: &str,
    value: &str,
    page_size: u64,
    max_pages: u64,
) -> Result<Option<Value>, ConvergeError> {
    let matches = |v: &&Value| {
        v.get(attr).and_then(Value::as_str).is_some_and(|s| {
            if attr == "userName" {
                s.eq_ignore_ascii_case(value)
            } else {
                s == value
            }
        })
    };
    let mut start = 1;
    for _ in 0..max_pages {
        let resp = send(
            exec,
            ScimRequest::get(format!("/{endpoint}"))
                .with_query("startIndex", start.to_string())
                .with_query("count", page_size.to_string()),
        )
        .await?;
        let page = resources(&resp);
        if let Some(hit) = page.iter().find(matches) {
            return Ok(Some(hit.clone()));
        }
        start += page.len() as u64;
        let total = resp
            .body
            .as_ref()
            .and_then(|b| b.get("totalResults"))
            .and_then(Value::as_u64);
        // Without totalResults (a non-conforming list), only an empty page ends the scan.
        if page.is_empty() || total.is_some_and(|t| start > t) {
            return Ok(None);
        }
    }
    Err(ConvergeError::new(
        FailureClass::Permanent,
        format!(
            "cannot look up {endpoint} by {attr}: the server does not support filtering and a \
             scan of {max_pages} pages did not reach the end of the list"
        ),
    ))
}

/// Every object of a cursor-paged list matching `filter` (`pages` = page size and the most
/// pages to read), stopping early once `stop` holds for what was read.
pub async fn cursor_list(
    exec: &Exec,
    endpoint: &str,
    filter: &str,
    (page_size, max_pages): (u64, usize),
    stop: impl Fn(&[Value]) -> bool,
) -> Result<Vec<Value>, ConvergeError> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    for _ in 0..max_pages {
        let req = ScimRequest::get(format!("/{endpoint}"))
            .with_query("filter", filter)
            .with_query("count", page_size.to_string())
            .with_query("cursor", cursor.clone());
        let resp = send(exec, req).await?;
        out.extend(resources(&resp));
        if stop(&out) {
            return Ok(out);
        }
        let next = resp
            .body
            .as_ref()
            .and_then(|b| b.get("nextCursor"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty() && *c != cursor)
            .map(str::to_owned);
        match next {
            Some(c) => cursor = c,
            None => return Ok(out),
        }
    }
    Err(ConvergeError::new(
        FailureClass::Retry,
        format!("listing {endpoint} did not end after {max_pages} pages"),
    ))
}
