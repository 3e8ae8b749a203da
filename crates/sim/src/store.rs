//! In-memory resources of one tenant, with the indexes that make the common lookups O(1): by
//! `id`, by the unique attribute (`userName` / group `displayName`, case-insensitive) and by
//! `externalId`. Resources list in creation order, so paging is stable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ScimError;
use crate::filter::{self, CompareOp, Filter};
use crate::schema::Kind;

/// The current time as an RFC 3339 string with millisecond precision.
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now);
    now.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// The weak ETag of a resource version (also its `meta.version`).
pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// One stored resource.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Server-assigned id (a UUID).
    pub id: String,
    /// Grows by one on every write; the ETag is derived from it.
    pub version: u64,
    /// The full representation: schemas, id, externalId, meta and attributes.
    pub body: Map<String, Value>,
}

impl Resource {
    /// The weak ETag of the current version.
    pub fn etag(&self) -> String {
        etag(self.version)
    }

    /// The JSON representation.
    pub fn to_json(&self) -> Value {
        Value::Object(self.body.clone())
    }

    fn external_id(&self) -> Option<&str> {
        self.body.get("externalId").and_then(Value::as_str)
    }
}

/// A uniqueness rule of a collection: a key derived from a body; two resources may not share one.
#[derive(Debug, Clone, Copy)]
pub struct UniqueKey {
    /// The attribute named in the 409 detail.
    pub name: &'static str,
    /// The key of a body (`None`: the rule does not apply to it).
    pub extract: fn(&Map<String, Value>) -> Option<String>,
    /// When `Some(attr)`, the index also answers `attr eq "v"` filters (the key is the
    /// lower-cased value of that top-level string attribute).
    pub filter_attr: Option<&'static str>,
}

fn lower_user_name(b: &Map<String, Value>) -> Option<String> {
    b.get("userName")
        .and_then(Value::as_str)
        .map(str::to_lowercase)
}

fn lower_display_name(b: &Map<String, Value>) -> Option<String> {
    b.get("displayName")
        .and_then(Value::as_str)
        .map(str::to_lowercase)
}

impl UniqueKey {
    /// `userName`, case-insensitive (RFC 7643 `uniqueness: server`, `caseExact: false`).
    pub const USER_NAME: UniqueKey = UniqueKey {
        name: "userName",
        extract: lower_user_name,
        filter_attr: Some("userName"),
    };
    /// Group `displayName`, case-insensitive.
    pub const DISPLAY_NAME: UniqueKey = UniqueKey {
        name: "displayName",
        extract: lower_display_name,
        filter_attr: Some("displayName"),
    };
    /// `externalId`, case-exact.
    pub const EXTERNAL_ID: UniqueKey = UniqueKey {
        name: "externalId",
        extract: |b| {
            b.get("externalId")
                .and_then(Value::as_str)
                .map(str::to_string)
        },
        filter_attr: None,
    };
}

/// A new random UUID (the default resource id).
pub fn uuid_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// All resources of one kind in a tenant.
#[derive(Debug)]
pub struct Collection {
    /// Users or groups.
    kind: Kind,
    /// Uniqueness rules, checked on every write.
    uniques: Vec<UniqueKey>,
    /// Makes the id of a new resource (UUIDs; `005…` for Salesforce users).
    id_gen: fn() -> String,
    /// The next creation sequence number (listing order).
    next_seq: u64,
    /// Resources by creation sequence.
    by_seq: BTreeMap<u64, Resource>,
    /// id → sequence.
    by_id: HashMap<String, u64>,
    /// Per uniqueness rule: key → sequence.
    by_unique: Vec<HashMap<String, u64>>,
    /// externalId (case-exact, not unique) → sequences.
    by_external: HashMap<String, BTreeSet<u64>>,
}

impl Collection {
    /// An empty collection with the RFC rules: `userName` / `displayName` unique, UUID ids.
    pub fn new(kind: Kind) -> Self {
        let key = match kind {
            Kind::User => UniqueKey::USER_NAME,
            Kind::Group => UniqueKey::DISPLAY_NAME,
        };
        Self::with_rules(kind, vec![key], uuid_id)
    }

    /// An empty collection with a provider's uniqueness rules and id format.
    pub fn with_rules(kind: Kind, uniques: Vec<UniqueKey>, id_gen: fn() -> String) -> Self {
        Self {
            kind,
            by_unique: uniques.iter().map(|_| HashMap::new()).collect(),
            uniques,
            id_gen,
            next_seq: 0,
            by_seq: BTreeMap::new(),
            by_id: HashMap::new(),
            by_external: HashMap::new(),
        }
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Whether there are no resources.
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// The resource with this id.
    pub fn get(&self, id: &str) -> Option<&Resource> {
        self.by_id.get(id).and_then(|seq| self.by_seq.get(seq))
    }

    /// Whether a resource with this id exists.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    fn check_unique(
        &self,
        body: &Map<String, Value>,
        except: Option<u64>,
    ) -> Result<(), ScimError> {
        for (rule, index) in self.uniques.iter().zip(&self.by_unique) {
            if let Some(k) = (rule.extract)(body)
                && let Some(&seq) = index.get(&k)
                && Some(seq) != except
            {
                return Err(ScimError::uniqueness(format!(
                    "{} {k:?} is already taken",
                    rule.name
                )));
            }
        }
        Ok(())
    }

    fn index(&mut self, seq: u64) {
        let Some(r) = self.by_seq.get(&seq) else {
            return;
        };
        self.by_id.insert(r.id.clone(), seq);
        for (rule, index) in self.uniques.iter().zip(self.by_unique.iter_mut()) {
            if let Some(k) = (rule.extract)(&r.body) {
                index.insert(k, seq);
            }
        }
        if let Some(e) = r.external_id() {
            self.by_external
                .entry(e.to_string())
                .or_default()
                .insert(seq);
        }
    }

    fn unindex(&mut self, seq: u64) {
        let Some(r) = self.by_seq.get(&seq) else {
            return;
        };
        self.by_id.remove(&r.id);
        for (rule, index) in self.uniques.iter().zip(self.by_unique.iter_mut()) {
            if let Some(k) = (rule.extract)(&r.body)
                && index.get(&k) == Some(&seq)
            {
                index.remove(&k);
            }
        }
        if let Some(e) = r.external_id()
            && let Some(set) = self.by_external.get_mut(e)
        {
            set.remove(&seq);
            if set.is_empty() {
                self.by_external.remove(e);
            }
        }
    }

    /// Stores a new validated body: assigns `id` and `meta`; 409 when the unique attribute is taken.
    pub fn insert(
        &mut self,
        body: Map<String, Value>,
        location_base: &str,
    ) -> Result<&Resource, ScimError> {
        let id = loop {
            let id = (self.id_gen)();
            if !self.by_id.contains_key(&id) {
                break id;
            }
        };
        self.insert_with_id(body, location_base, id)
    }

    /// Stores a new validated body under a chosen id (seeded resources with stable ids).
    pub fn insert_with_id(
        &mut self,
        mut body: Map<String, Value>,
        location_base: &str,
        id: String,
    ) -> Result<&Resource, ScimError> {
        self.check_unique(&body, None)?;
        if self.by_id.contains_key(&id) {
            return Err(ScimError::uniqueness(format!("id {id:?} is already taken")));
        }
        let now = now_rfc3339();
        body.insert("id".into(), Value::String(id.clone()));
        body.insert(
            "meta".into(),
            json!({
                "resourceType": self.kind.resource_type(),
                "created": now,
                "lastModified": now,
                "location": format!("{location_base}/{}/{id}", self.kind.endpoint()),
                "version": etag(1),
            }),
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_seq.insert(
            seq,
            Resource {
                id: id.clone(),
                version: 1,
                body,
            },
        );
        self.index(seq);
        self.by_seq
            .get(&seq)
            .ok_or_else(|| ScimError::not_found(id))
    }

    /// Replaces the attributes of an existing resource, keeping `id` and `meta.created`, bumping
    /// the version; 404 when absent, 409 when the unique attribute collides with another resource.
    pub fn replace(
        &mut self,
        id: &str,
        mut body: Map<String, Value>,
    ) -> Result<&Resource, ScimError> {
        let Some(&seq) = self.by_id.get(id) else {
            return Err(ScimError::not_found(format!(
                "{} {id} not found",
                self.kind.resource_type()
            )));
        };
        self.check_unique(&body, Some(seq))?;
        self.unindex(seq);
        let Some(r) = self.by_seq.get_mut(&seq) else {
            return Err(ScimError::not_found(format!(
                "{} {id} not found",
                self.kind.resource_type()
            )));
        };
        r.version += 1;
        let mut meta = r.body.get("meta").cloned().unwrap_or_else(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.insert("lastModified".into(), now_rfc3339().into());
            m.insert("version".into(), etag(r.version).into());
        }
        body.insert("id".into(), Value::String(r.id.clone()));
        body.insert("meta".into(), meta);
        r.body = body;
        self.index(seq);
        self.by_seq
            .get(&seq)
            .ok_or_else(|| ScimError::not_found(id.to_string()))
    }

    /// Removes a resource.
    pub fn remove(&mut self, id: &str) -> Option<Resource> {
        let seq = *self.by_id.get(id)?;
        self.unindex(seq);
        self.by_seq.remove(&seq)
    }

    /// Indexed candidates for a filter, or `None` when a full scan is needed.
    fn candidates(&self, f: &Filter) -> Option<Vec<u64>> {
        match f {
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value: Value::String(s),
            } if path.schema.is_none() && path.sub.is_none() => {
                let attr = path.attr.as_str();
                if attr.eq_ignore_ascii_case("id") {
                    Some(self.by_id.get(s).copied().into_iter().collect())
                } else if let Some(i) = self
                    .uniques
                    .iter()
                    .position(|u| u.filter_attr.is_some_and(|a| a.eq_ignore_ascii_case(attr)))
                {
                    Some(
                        self.by_unique[i]
                            .get(&s.to_lowercase())
                            .copied()
                            .into_iter()
                            .collect(),
                    )
                } else if attr.eq_ignore_ascii_case("externalId") {
                    Some(
                        self.by_external
                            .get(s)
                            .map(|set| set.iter().copied().collect())
                            .unwrap_or_default(),
                    )
                } else {
                    None
                }
            }
            Filter::And(a, b) => self.candidates(a).or_else(|| self.candidates(b)),
            _ => None,
        }
    }

    /// Resources matching `filter`, paged: returns the total number of matches and the page
    /// starting at 1-based `start_index` with at most `count` resources.
    pub fn query(
        &self,
        filter: Option<&Filter>,
        start_index: usize,
        count: usize,
    ) -> (usize, Vec<Value>) {
        let skip = start_index.saturating_sub(1);
        let mut total = 0;
        let mut page = Vec::new();
        let mut visit = |r: &Resource| {
            if filter.is_none_or(|f| filter::matches(self.kind, &r.body, f)) {
                if total >= skip && page.len() < count {
                    page.push(r.to_json());
                }
                total += 1;
            }
        };
        match filter.and_then(|f| self.candidates(f)) {
            Some(mut seqs) => {
                seqs.sort_unstable();
                seqs.iter()
                    .filter_map(|s| self.by_seq.get(s))
                    .for_each(&mut visit);
            }
            None => self.by_seq.values().for_each(&mut visit),
        }
        (total, page)
    }

    /// Resources matching `pred` after creation sequence `after` (cursor paging): at most
    /// `limit` resources, the sequence of the last one returned, and whether more matches follow.
    pub fn page_after(
        &self,
        pred: impl Fn(&Resource) -> bool,
        after: Option<u64>,
        limit: usize,
    ) -> (Vec<Value>, Option<u64>, bool) {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut page = Vec::new();
        let mut last = None;
        let mut more = false;
        let hits = self.by_seq.range(start..).filter(|(_, r)| pred(r));
        for (&seq, r) in hits {
            if page.len() >= limit {
                more = true;
                break;
            }
            page.push(r.to_json());
            last = Some(seq);
        }
        (page, last, more)
    }

    /// Whether `filter` matches this resource (by the collection's schema).
    pub fn matches(&self, r: &Resource, filter: &Filter) -> bool {
        filter::matches(self.kind, &r.body, filter)
    }

    /// Resources in creation order.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.by_seq.values()
    }

    /// Every resource, in creation order.
    pub fn all(&self) -> Vec<Value> {
        self.by_seq.values().map(Resource::to_json).collect()
    }

    /// Mutable access for membership clean-up.
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Resource> {
        self.by_seq.values_mut()
    }
}

/// Everything one tenant stores.
#[derive(Debug)]
pub struct Store {
    /// `/Users`.
    pub users: Collection,
    /// `/Groups`.
    pub groups: Collection,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty tenant with the RFC rules.
    pub fn new() -> Self {
        Self {
            users: Collection::new(Kind::User),
            groups: Collection::new(Kind::Group),
        }
    }

    /// An empty tenant with a provider's collections.
    pub fn with(users: Collection, groups: Collection) -> Self {
        Self { users, groups }
    }

    /// The collection of a kind.
    pub fn collection(&self, kind: Kind) -> &Collection {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    /// The mutable collection of a kind.
    pub fn collection_mut(&mut self, kind: Kind) -> &mut Collection {
        match kind {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
        }
    }

    /// 400 unless every `members[].value` names an existing user or group.
    pub fn check_members(&self, body: &Map<String, Value>) -> Result<(), ScimError> {
        let Some(Value::Array(members)) = body.get("members") else {
            return Ok(());
        };
        for (i, m) in members.iter().enumerate() {
            let Some(v) = m.get("value").and_then(Value::as_str) else {
                return Err(ScimError::invalid_value(format!(
                    "attribute 'members[{i}].value' is required"
                )));
            };
            if !self.users.contains(v) && !self.groups.contains(v) {
                return Err(ScimError::invalid_value(format!(
                    "attribute 'members[{i}].value': no user or group with id {v:?}"
                )));
            }
        }
        Ok(())
    }

    /// Removes a deleted user or group from every group's members (bumping those groups' versions).
    pub fn forget_member(&mut self, id: &str) {
        let now = now_rfc3339();
        for g in self.groups.iter_mut() {
            let Some(Value::Array(members)) = g.body.get_mut("members") else {
                continue;
            };
            let before = members.len();
            members.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
            if members.len() != before {
                g.version += 1;
                let version = etag(g.version);
                if let Some(Value::Object(meta)) = g.body.get_mut("meta") {
                    meta.insert("lastModified".into(), now.clone().into());
                    meta.insert("version".into(), version.into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => Map::new(),
        }
    }

    #[test]
    fn unique_case_insensitive_and_indexed() {
        let mut c = Collection::new(Kind::User);
        let id = c
            .insert(
                body(json!({"userName": "Alice", "externalId": "e1"})),
                "http://x",
            )
            .map(|r| r.id.clone());
        let Ok(id) = id else { panic!("insert") };
        let dup = c.insert(body(json!({"userName": "ALICE"})), "http://x");
        assert_eq!(dup.err().map(|e| e.status.as_u16()), Some(409));
        let f = filter::parse_filter(r#"userName eq "alice""#).ok();
        let (total, page) = c.query(f.as_ref(), 1, 10);
        assert_eq!((total, page.len()), (1, 1));
        assert!(
            c.candidates(f.as_ref().unwrap_or(&Filter::Present(filter::AttrPath {
                schema: None,
                attr: "x".into(),
                sub: None
            })))
            .is_some()
        );
        // Renaming frees the old name and takes the new one.
        let r = c.replace(&id, body(json!({"userName": "Bob"})));
        assert_eq!(r.map(|r| r.version).ok(), Some(2));
        assert!(
            c.insert(body(json!({"userName": "alice"})), "http://x")
                .is_ok()
        );
        assert!(
            c.insert(body(json!({"userName": "bob"})), "http://x")
                .is_err()
        );
        let f = filter::parse_filter(r#"externalId eq "e1""#).ok();
        assert_eq!(
            c.query(f.as_ref(), 1, 10).0,
            0,
            "externalId index follows replace"
        );
    }

    #[test]
    fn paging() {
        let mut c = Collection::new(Kind::Group);
        for i in 0..5 {
            assert!(
                c.insert(body(json!({"displayName": format!("g{i}")})), "http://x")
                    .is_ok()
            );
        }
        let (total, page) = c.query(None, 2, 2);
        assert_eq!(total, 5);
        assert_eq!(
            page.iter()
                .map(|g| g["displayName"].clone())
                .collect::<Vec<_>>(),
            vec![json!("g1"), json!("g2")]
        );
        let (total, page) = c.query(None, 5, 10);
        assert_eq!((total, page.len()), (5, 1));
    }
}
