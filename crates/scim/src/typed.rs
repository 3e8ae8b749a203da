//! Typed operations on Users and Groups, listing with both paging styles, and discovery — all
//! built on [`ScimClient::execute`], so they share its error mapping and auth.
//!
//! Paging: RFC 7644 pages with `startIndex`/`count` (GitHub, generic servers); AWS pages with
//! `cursor`/`nextCursor`, rejects `startIndex`, and may return short pages before the end
//! (docs/providers/aws.md, "What AWS documents"). [`ScimClient::list_all`] does either, and
//! stops on a bound ([`MAX_PAGES`]) or a repeated cursor instead of looping forever on a broken
//! server.
//!
//! Discovery tries `/ServiceProviderConfig` (RFC) and then `/ServiceProviderConfigs`
//! (Salesforce's spelling: docs/providers/salesforce.md, "What Salesforce documents"), so
//! Salesforce is not mistaken for a server without PATCH or filter support.

use serde_json::Value;

use crate::client::ScimClient;
use crate::encoding::path_segment;
use crate::error::ScimError;
use crate::request::{ScimRequest, ScimResponse};
use crate::resources::{Group, ListResponse, Resource, ServiceProviderConfig, User};

/// Most pages [`ScimClient::list_all`] fetches before giving up: a server that never signals
/// the end must not hold a connector forever (10,000 pages of 100 is a million objects).
pub const MAX_PAGES: usize = 10_000;

/// The discovery paths, in the order tried.
pub const SERVICE_PROVIDER_CONFIG_PATHS: [&str; 2] =
    ["/ServiceProviderConfig", "/ServiceProviderConfigs"];

/// A resource with the version the server returned for it (the `ETag` header, else
/// `meta.version`), to send back as `If-Match` when the server supports ETags.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The resource as the server returned it.
    pub resource: T,
    /// Its version, when the server gave one.
    pub etag: Option<String>,
}

/// Query parameters of a list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// A filter expression (see [`crate::Filter`], [`crate::filter_eq`]).
    pub filter: Option<String>,
    /// 1-based index of the first result (index paging; AWS rejects it).
    pub start_index: Option<u64>,
    /// Page size.
    pub count: Option<u64>,
    /// The cursor (cursor paging); `Some("")` asks for the first page.
    pub cursor: Option<String>,
    /// `attributes`: a comma-separated list of attributes to return.
    pub attributes: Option<String>,
    /// `excludedAttributes` (GitHub lists groups faster without `members`).
    pub excluded_attributes: Option<String>,
}

impl ListQuery {
    /// A query with only a filter.
    pub fn filter(filter: impl Into<String>) -> Self {
        ListQuery {
            filter: Some(filter.into()),
            ..Default::default()
        }
    }

    /// The query parameters, in a stable order.
    pub fn to_params(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.push((k.to_owned(), v));
            }
        };
        push("filter", self.filter.clone());
        push("startIndex", self.start_index.map(|v| v.to_string()));
        push("count", self.count.map(|v| v.to_string()));
        push("cursor", self.cursor.clone());
        push("attributes", self.attributes.clone());
        push("excludedAttributes", self.excluded_attributes.clone());
        q
    }
}

/// How [`ScimClient::list_all`] pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// One request, no paging parameters (legacy AWS lists, small servers).
    Single,
    /// `startIndex`/`count` (RFC 7644 §3.4.2.4), `count` per page.
    Index {
        /// Page size.
        count: u64,
    },
    /// `cursor`/`nextCursor` (AWS), `count` per page.
    Cursor {
        /// Page size (AWS: 1–100).
        count: u64,
    },
}

fn to_json<T: serde::Serialize>(resource: &T) -> Result<Value, ScimError> {
    serde_json::to_value(resource)
        .map_err(|e| ScimError::Decode(format!("could not serialize the resource ({e})")))
}

fn versioned<T: Resource>(resp: &ScimResponse) -> Result<Versioned<T>, ScimError> {
    Ok(Versioned {
        resource: resp.json()?,
        etag: resp.etag(),
    })
}

fn item_path<T: Resource>(id: &str) -> String {
    format!("{}/{}", T::ENDPOINT, path_segment(id))
}

/// Whether a failed discovery at one path is worth trying at the other spelling: not found or
/// not allowed there, but not when the credential or the rate limit is the problem.
fn try_other_spelling(err: &ScimError) -> bool {
    matches!(err.status(), Some(s) if (400..500).contains(&s) && !matches!(s, 401 | 403 | 429) || s == 501)
}

impl ScimClient {
    /// `POST /<endpoint>`: creates a resource and returns it as the server stored it.
    pub async fn create<T: Resource>(&self, resource: &T) -> Result<Versioned<T>, ScimError> {
        let resp = self
            .execute(&ScimRequest::post(T::ENDPOINT, to_json(resource)?))
            .await?;
        versioned(&resp)
    }

    /// `GET /<endpoint>/<id>`.
    pub async fn get<T: Resource>(&self, id: &str) -> Result<Versioned<T>, ScimError> {
        versioned(&self.execute(&ScimRequest::get(item_path::<T>(id))).await?)
    }

    /// `PUT /<endpoint>/<id>`: replaces the resource (attributes left out are cleared).
    pub async fn replace<T: Resource>(
        &self,
        id: &str,
        resource: &T,
        if_match: Option<&str>,
    ) -> Result<Versioned<T>, ScimError> {
        let mut req = ScimRequest::put(item_path::<T>(id), to_json(resource)?);
        req.if_match = if_match.map(str::to_owned);
        versioned(&self.execute(&req).await?)
    }

    /// `PATCH /<endpoint>/<id>` with a body from [`crate::PatchBuilder`]. `None` when the server
    /// answered 204 or without a body (GitHub group PATCH, many servers).
    pub async fn patch<T: Resource>(
        &self,
        id: &str,
        patch: &Value,
        if_match: Option<&str>,
    ) -> Result<Option<Versioned<T>>, ScimError> {
        let mut req = ScimRequest::patch(item_path::<T>(id), patch.clone());
        req.if_match = if_match.map(str::to_owned);
        let resp = self.execute(&req).await?;
        match resp.body {
            Some(_) => versioned(&resp).map(Some),
            None => Ok(None),
        }
    }

    /// `DELETE /<endpoint>/<id>`.
    pub async fn delete<T: Resource>(
        &self,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ScimError> {
        let mut req = ScimRequest::delete(item_path::<T>(id));
        req.if_match = if_match.map(str::to_owned);
        self.execute(&req).await.map(|_| ())
    }

    /// `GET /<endpoint>?…`: one page.
    pub async fn list<T: Resource>(&self, query: &ListQuery) -> Result<ListResponse<T>, ScimError> {
        let mut req = ScimRequest::get(T::ENDPOINT);
        req.query = query.to_params();
        self.execute(&req).await?.json()
    }

    /// Every resource matching `filter`, following pages as `paging` says.
    pub async fn list_all<T: Resource>(
        &self,
        filter: Option<&str>,
        paging: Paging,
    ) -> Result<Vec<T>, ScimError> {
        let base = ListQuery {
            filter: filter.map(str::to_owned),
            ..Default::default()
        };
        let mut out: Vec<T> = Vec::new();
        match paging {
            Paging::Single => {
                out = self.list::<T>(&base).await?.resources;
            }
            Paging::Index { count } => {
                let mut start: u64 = 1;
                for _ in 0..MAX_PAGES {
                    let q = ListQuery {
                        start_index: Some(start),
                        count: Some(count),
                        ..base.clone()
                    };
                    let page = self.list::<T>(&q).await?;
                    let n = page.resources.len() as u64;
                    out.extend(page.resources);
                    let total_known = page.total_results > 0;
                    let done = n == 0
                        || (total_known && start + n > page.total_results)
                        || (!total_known && n < count);
                    if done {
                        return Ok(out);
                    }
                    start += n;
                }
                return Err(too_many_pages());
            }
            Paging::Cursor { count } => {
                let mut cursor = String::new();
                for _ in 0..MAX_PAGES {
                    let q = ListQuery {
                        cursor: Some(cursor.clone()),
                        count: Some(count),
                        ..base.clone()
                    };
                    let page = self.list::<T>(&q).await?;
                    out.extend(page.resources);
                    match page.next_cursor.filter(|c| !c.is_empty()) {
                        None => return Ok(out),
                        Some(next) if next == cursor => {
                            return Err(ScimError::Decode(
                                "the server returned the same nextCursor twice; stopping".into(),
                            ));
                        }
                        Some(next) => cursor = next,
                    }
                }
                return Err(too_many_pages());
            }
        }
        Ok(out)
    }

    /// Reads the server's capabilities from `/ServiceProviderConfig`, or from
    /// `/ServiceProviderConfigs` when the first is missing (Salesforce).
    pub async fn discover(&self) -> Result<ServiceProviderConfig, ScimError> {
        let [first, second] = SERVICE_PROVIDER_CONFIG_PATHS;
        let resp = match self.execute(&ScimRequest::get(first)).await {
            Ok(resp) => resp,
            Err(e) if try_other_spelling(&e) => {
                tracing::debug!(status = e.status(), "no {first}; trying {second}");
                self.execute(&ScimRequest::get(second)).await?
            }
            Err(e) => return Err(e),
        };
        let body = resp.body.ok_or_else(|| {
            ScimError::Decode("the ServiceProviderConfig response has no body".into())
        })?;
        // Some servers wrap it in a ListResponse.
        let body = match body
            .get("Resources")
            .and_then(Value::as_array)
            .and_then(|r| r.first())
        {
            Some(first) => first.clone(),
            None => body,
        };
        serde_json::from_value(body)
            .map_err(|e| ScimError::Decode(format!("unexpected ServiceProviderConfig ({e})")))
    }

    /// Creates a user.
    pub async fn create_user(&self, user: &User) -> Result<Versioned<User>, ScimError> {
        self.create(user).await
    }
    /// Reads a user.
    pub async fn get_user(&self, id: &str) -> Result<Versioned<User>, ScimError> {
        self.get(id).await
    }
    /// Replaces a user (PUT).
    pub async fn replace_user(
        &self,
        id: &str,
        user: &User,
        if_match: Option<&str>,
    ) -> Result<Versioned<User>, ScimError> {
        self.replace(id, user, if_match).await
    }
    /// Patches a user.
    pub async fn patch_user(
        &self,
        id: &str,
        patch: &Value,
        if_match: Option<&str>,
    ) -> Result<Option<Versioned<User>>, ScimError> {
        self.patch::<User>(id, patch, if_match).await
    }
    /// Deletes a user.
    pub async fn delete_user(&self, id: &str, if_match: Option<&str>) -> Result<(), ScimError> {
        self.delete::<User>(id, if_match).await
    }
    /// Lists one page of users.
    pub async fn list_users(&self, query: &ListQuery) -> Result<ListResponse<User>, ScimError> {
        self.list(query).await
    }
    /// Creates a group.
    pub async fn create_group(&self, group: &Group) -> Result<Versioned<Group>, ScimError> {
        self.create(group).await
    }
    /// Reads a group.
    pub async fn get_group(&self, id: &str) -> Result<Versioned<Group>, ScimError> {
        self.get(id).await
    }
    /// Replaces a group (PUT; clears members left out).
    pub async fn replace_group(
        &self,
        id: &str,
        group: &Group,
        if_match: Option<&str>,
    ) -> Result<Versioned<Group>, ScimError> {
        self.replace(id, group, if_match).await
    }
    /// Patches a group.
    pub async fn patch_group(
        &self,
        id: &str,
        patch: &Value,
        if_match: Option<&str>,
    ) -> Result<Option<Versioned<Group>>, ScimError> {
        self.patch::<Group>(id, patch, if_match).await
    }
    /// Deletes a group.
    pub async fn delete_group(&self, id: &str, if_match: Option<&str>) -> Result<(), ScimError> {
        self.delete::<Group>(id, if_match).await
    }
    /// Lists one page of groups.
    pub async fn list_groups(&self, query: &ListQuery) -> Result<ListResponse<Group>, ScimError> {
        self.list(query).await
    }
}

fn too_many_pages() -> ScimError {
    ScimError::Decode(format!(
        "the list did not end within {MAX_PAGES} pages; stopping"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_params_in_order() {
        let q = ListQuery {
            filter: Some("userName eq \"a\"".into()),
            start_index: Some(1),
            count: Some(50),
            cursor: None,
            attributes: None,
            excluded_attributes: Some("members".into()),
        };
        let params = q.to_params();
        let p: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            p,
            vec![
                ("filter", "userName eq \"a\""),
                ("startIndex", "1"),
                ("count", "50"),
                ("excludedAttributes", "members")
            ]
        );
        assert!(ListQuery::default().to_params().is_empty());
    }

    #[test]
    fn discovery_fallback_statuses() {
        let e = |s| ScimError::from_response(s, http::HeaderMap::new(), b"");
        assert!(try_other_spelling(&e(404)));
        assert!(try_other_spelling(&e(400)));
        assert!(try_other_spelling(&e(405)));
        assert!(try_other_spelling(&e(501)));
        assert!(!try_other_spelling(&e(401)));
        assert!(!try_other_spelling(&e(403)));
        assert!(!try_other_spelling(&e(429)));
        assert!(!try_other_spelling(&e(500)));
        assert!(!try_other_spelling(&ScimError::Timeout));
    }

    use crate::auth::Auth;
    use crate::client::ClientConfig;
    use crate::resources::{Name, USER_SCHEMA};
    use crate::test_support::{json, reply, serve, with_header};
    use serde_json::json;

    fn client(addr: &str) -> ScimClient {
        ScimClient::new(ClientConfig::new(format!("{addr}/scim"), Auth::None)).expect("config")
    }

    fn param(query: &Option<String>, key: &str) -> Option<String> {
        query
            .as_deref()?
            .split('&')
            .find_map(|p| match p.split_once('=') {
                Some((k, v)) if k == key => Some(crate::test_support::percent_decode(v)),
                None if p == key => Some(String::new()),
                _ => None,
            })
    }

    #[tokio::test]
    async fn create_get_patch_delete_users_keep_etags() {
        let server = serve(|r| async move {
            match (r.method.as_str(), r.path.as_str()) {
                ("POST", "/scim/Users") => {
                    let mut body = r.json();
                    body["id"] = json!("u 1");
                    body["meta"] = json!({"version": "W/\"1\""});
                    json(201, body)
                }
                ("GET", "/scim/Users/u%201") => with_header(
                    json(200, json!({"id": "u 1", "userName": "ann", "active": true})),
                    "etag",
                    "W/\"2\"",
                ),
                ("PATCH", "/scim/Users/u%201") => reply(204, None, ""),
                ("PATCH", "/scim/Groups/g1") => {
                    json(200, json!({"id": "g1", "displayName": "Eng"}))
                }
                ("DELETE", "/scim/Users/u%201") => reply(204, None, ""),
                _ => reply(404, None, ""),
            }
        })
        .await;
        let c = client(&server.addr);
        let mut u = User::new("ann");
        u.name = Some(Name {
            given_name: Some("Ann".into()),
            family_name: Some("Lee".into()),
            ..Default::default()
        });
        let created = c.create_user(&u).await.expect("created");
        assert_eq!(created.resource.id.as_deref(), Some("u 1"));
        assert_eq!(created.etag.as_deref(), Some("W/\"1\""));
        let sent = server.requests()[0].json();
        assert_eq!(sent["schemas"], json!([USER_SCHEMA]));
        assert_eq!(
            sent["name"],
            json!({"givenName": "Ann", "familyName": "Lee"})
        );
        let got = c.get_user("u 1").await.expect("got");
        assert_eq!(
            (got.resource.active, got.etag.as_deref()),
            (Some(true), Some("W/\"2\""))
        );
        let patch = crate::PatchBuilder::new()
            .replace(Some("active"), json!(false))
            .build();
        assert_eq!(
            c.patch_user("u 1", &patch, Some("W/\"2\""))
                .await
                .expect("patched"),
            None
        );
        let reqs = server.requests();
        assert_eq!(reqs[2].header("if-match"), "W/\"2\"");
        assert_eq!(reqs[2].json(), patch);
        let g = c
            .patch_group("g1", &patch, None)
            .await
            .expect("patched")
            .expect("body");
        assert_eq!(g.resource.display_name, "Eng");
        c.delete_user("u 1", None).await.expect("deleted");
        let e = c.get_group("missing").await.expect_err("404");
        assert_eq!(e.status(), Some(404));
    }

    #[tokio::test]
    async fn list_all_with_start_index_paging() {
        let server = serve(|r| async move {
            let start: usize = param(&r.query, "startIndex").and_then(|v| v.parse().ok()).unwrap_or(1);
            let count: usize = param(&r.query, "count").and_then(|v| v.parse().ok()).unwrap_or(100);
            // Five users; the server caps pages at 2 whatever `count` says.
            let per_page = count.min(2);
            let items: Vec<_> = (start..=5).take(per_page).map(|i| json!({"id": format!("u{i}"), "userName": format!("n{i}")})).collect();
            json(200, json!({"totalResults": 5, "startIndex": start, "itemsPerPage": items.len(), "Resources": items}))
        })
        .await;
        let c = client(&server.addr);
        let users: Vec<User> = c
            .list_all(Some("userName sw \"n\""), Paging::Index { count: 10 })
            .await
            .expect("listed");
        let ids: Vec<_> = users.iter().filter_map(|u| u.id.as_deref()).collect();
        assert_eq!(ids, ["u1", "u2", "u3", "u4", "u5"]);
        let reqs = server.requests();
        let starts: Vec<_> = reqs.iter().map(|r| param(&r.query, "startIndex")).collect();
        assert_eq!(
            starts,
            [Some("1".into()), Some("3".into()), Some("5".into())]
        );
        assert!(
            reqs.iter()
                .all(|r| param(&r.query, "filter").as_deref() == Some("userName sw \"n\""))
        );
        assert!(reqs.iter().all(|r| param(&r.query, "cursor").is_none()));
    }

    #[tokio::test]
    async fn list_all_with_cursor_paging_follows_short_pages() {
        let server = serve(|r| async move {
            // AWS: a first page may be short although more exist; startIndex is not supported.
            if param(&r.query, "startIndex").is_some() {
                return json(400, json!({"schema": ["urn:ietf:params:scim:api:messages:2.0:Error"], "detail": "startIndex not supported"}));
            }
            match param(&r.query, "cursor").as_deref() {
                Some("") => json(200, json!({"totalResults": 3, "Resources": [{"id": "g1", "displayName": "a"}], "nextCursor": "c2"})),
                Some("c2") => json(200, json!({"Resources": [{"id": "g2", "displayName": "b"}, {"id": "g3", "displayName": "c"}], "nextCursor": "c3"})),
                Some("c3") => json(200, json!({"Resources": []})),
                _ => json(400, json!({"detail": "bad cursor"})),
            }
        })
        .await;
        let c = client(&server.addr);
        let groups: Vec<Group> = c
            .list_all(None, Paging::Cursor { count: 100 })
            .await
            .expect("listed");
        let names: Vec<_> = groups.iter().map(|g| g.display_name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let reqs = server.requests();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].query.as_deref(), Some("count=100&cursor"));
    }

    #[tokio::test]
    async fn list_all_stops_on_a_repeated_cursor() {
        let server =
            serve(|_| async { json(200, json!({"Resources": [], "nextCursor": "same"})) }).await;
        let e = client(&server.addr)
            .list_all::<Group>(None, Paging::Cursor { count: 10 })
            .await
            .expect_err("loop");
        assert!(matches!(e, ScimError::Decode(_)), "{e:?}");
        assert_eq!(server.requests().len(), 2);
    }

    #[tokio::test]
    async fn discovery_falls_back_to_the_plural_spelling() {
        let server = serve(|r| async move {
            match r.path.as_str() {
                "/scim/ServiceProviderConfigs" => json(200, json!({
                    "patch": {"supported": true}, "filter": {"supported": true, "maxResults": 200},
                    "etag": {"supported": false}, "bulk": {"supported": false, "maxOperations": 0}})),
                _ => reply(404, Some("application/json"), r#"[{"errorCode":"NOT_FOUND","message":"Could not find a match for URL"}]"#),
            }
        })
        .await;
        let spc = client(&server.addr).discover().await.expect("discovered");
        assert!(spc.patch_supported() && spc.filter_supported());
        assert!(!spc.etag_supported() && !spc.bulk_supported());
        assert_eq!(spc.max_results(), Some(200));
        let paths: Vec<_> = server.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(
            paths,
            [
                "/scim/ServiceProviderConfig",
                "/scim/ServiceProviderConfigs"
            ]
        );
    }

    #[tokio::test]
    async fn discovery_uses_the_rfc_path_first_and_does_not_mask_auth_errors() {
        let ok = serve(|r| async move {
            match r.path.as_str() {
                "/scim/ServiceProviderConfig" => json(
                    200,
                    json!({"patch": {"supported": false}, "etag": {"supported": true}}),
                ),
                _ => reply(500, None, ""),
            }
        })
        .await;
        let spc = client(&ok.addr).discover().await.expect("discovered");
        assert!(!spc.patch_supported() && spc.etag_supported());
        assert_eq!(ok.requests().len(), 1);

        let denied = serve(|_| async { json(401, json!({"detail": "bad token"})) }).await;
        let e = client(&denied.addr).discover().await.expect_err("401");
        assert_eq!(e.status(), Some(401));
        assert_eq!(denied.requests().len(), 1, "no second spelling after a 401");
    }
}
