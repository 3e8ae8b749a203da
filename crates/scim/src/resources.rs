//! Typed SCIM resources: User (with the enterprise extension), Group, ListResponse and
//! ServiceProviderConfig.
//!
//! Every struct keeps the members it does not model in `extra` (`#[serde(flatten)]`), so a
//! resource read from a provider and written back (a PUT after a GET) loses nothing the provider
//! added (Salesforce's `emailEncodingKey`, custom extensions). Optional members are omitted when
//! empty rather than sent as `null`, because several providers reject explicit nulls. Parsing
//! is lenient where providers are sloppy: booleans and numbers may arrive as strings.

use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// Schema URN of the core User resource.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Schema URN of the core Group resource.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Schema URN (and JSON key) of the enterprise User extension.
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Schema URN of a list response.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// A resource type with its own endpoint, for the typed helpers of [`crate::ScimClient`].
pub trait Resource: Serialize + DeserializeOwned + Send + Sync {
    /// The endpoint below the base URL, e.g. `/Users`.
    const ENDPOINT: &'static str;
}

/// The `meta` attribute every resource carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// `User`, `Group`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Creation time (RFC 3339 text as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Last modification time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// The resource's URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The version (ETag), when the server supports versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Members not modelled above.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `name` complex attribute of a User.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Name {
    /// First name (required by AWS and GitHub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Last name (required by AWS and GitHub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// The full name for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    /// Members not modelled above (middleName, honorificPrefix, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One value of a multi-valued attribute (emails, phoneNumbers, roles, entitlements).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiValued {
    /// The value (an address, a number, a role or profile id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `work`, `home`, `Profile`, …
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Whether this is the primary value (AWS requires `true` on its single email).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_bool"
    )]
    pub primary: Option<bool>,
    /// A display label (AWS rejects it on emails and phones: leave it `None` there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// Members not modelled above (`$ref`, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The manager of an enterprise user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manager {
    /// The manager's SCIM id at the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The manager's resource URI.
    #[serde(rename = "$ref", default, skip_serializing_if = "Option::is_none")]
    pub ref_: Option<String>,
    /// The manager's display name (read-only; AWS rejects it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Members not modelled above.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The enterprise User extension (RFC 7643 §4.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnterpriseUser {
    /// Employee number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<String>,
    /// Cost center.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    /// Organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Division.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
    /// Department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<Manager>,
    /// Members not modelled above.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A SCIM User.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Schema URNs (core User, plus the enterprise extension when used).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient_schemas"
    )]
    pub schemas: Vec<String>,
    /// The id the target assigned (absent on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Our id for the user, set by the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The unique login name (required by SCIM; empty only in partial reads).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    /// The name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// The display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// E-mail addresses.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub emails: Vec<MultiValued>,
    /// Phone numbers.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub phone_numbers: Vec<MultiValued>,
    /// Whether the account is enabled (false = deactivated).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_bool"
    )]
    pub active: Option<bool>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Locale, e.g. `en-US`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Time zone, e.g. `Europe/Paris`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Preferred language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_language: Option<String>,
    /// Roles (GitHub enterprise roles, …).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub roles: Vec<MultiValued>,
    /// Entitlements (Salesforce profiles and permission sets).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub entitlements: Vec<MultiValued>,
    /// The enterprise extension.
    #[serde(
        rename = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enterprise: Option<EnterpriseUser>,
    /// Resource metadata (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Members not modelled above, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl User {
    /// A user with the core schema (and the enterprise one when `enterprise` is set later,
    /// see [`User::with_schemas`]).
    pub fn new(user_name: impl Into<String>) -> Self {
        User {
            user_name: user_name.into(),
            ..Default::default()
        }
        .with_schemas()
    }

    /// Sets `schemas` to the core schema plus the enterprise extension when it is present.
    pub fn with_schemas(mut self) -> Self {
        self.schemas = vec![USER_SCHEMA.to_owned()];
        if self.enterprise.is_some() {
            self.schemas.push(ENTERPRISE_USER_SCHEMA.to_owned());
        }
        self
    }

    /// The primary e-mail (or the first one).
    pub fn primary_email(&self) -> Option<&str> {
        self.emails
            .iter()
            .find(|e| e.primary == Some(true))
            .or_else(|| self.emails.first())
            .and_then(|e| e.value.as_deref())
    }
}

impl Resource for User {
    const ENDPOINT: &'static str = "/Users";
}

/// A member of a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The member's SCIM id at the target (not our external id).
    #[serde(default)]
    pub value: String,
    /// The member's display name (read-only on most targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// The member's resource URI.
    #[serde(rename = "$ref", default, skip_serializing_if = "Option::is_none")]
    pub ref_: Option<String>,
    /// `User` or `Group`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Members not modelled above (GitHub's `displayName`, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Member {
    /// A member referenced by its SCIM id.
    pub fn new(value: impl Into<String>) -> Self {
        Member {
            value: value.into(),
            ..Default::default()
        }
    }
}

/// A SCIM Group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Schema URNs.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient_schemas"
    )]
    pub schemas: Vec<String>,
    /// The id the target assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Our id for the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The group's name (unique at AWS; how Salesforce groups are found).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Members (AWS always returns an empty list here: never diff against it).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub members: Vec<Member>,
    /// Resource metadata (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Members not modelled above.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Group {
    /// A group with the core schema.
    pub fn new(display_name: impl Into<String>) -> Self {
        Group {
            schemas: vec![GROUP_SCHEMA.to_owned()],
            display_name: display_name.into(),
            ..Default::default()
        }
    }
}

impl Resource for Group {
    const ENDPOINT: &'static str = "/Groups";
}

/// A page of a list or query (RFC 7644 §3.4.2), with AWS's cursor extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    /// Total matches (0 when the server omits it).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total_results: u64,
    /// Items in this page.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_u64"
    )]
    pub items_per_page: Option<u64>,
    /// 1-based index of the first item of this page.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_u64"
    )]
    pub start_index: Option<u64>,
    /// The resources of this page.
    #[serde(rename = "Resources", alias = "resources", default = "Vec::new")]
    #[serde(
        deserialize_with = "null_as_empty",
        bound(deserialize = "T: Deserialize<'de>")
    )]
    pub resources: Vec<T>,
    /// The cursor of the next page (AWS cursor pagination); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A capability flag of a ServiceProviderConfig.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supported {
    /// Whether the server supports the feature.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub supported: bool,
}

/// Bulk support of a ServiceProviderConfig.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkSupport {
    /// Whether `/Bulk` works.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub supported: bool,
    /// Operations per bulk request.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub max_operations: u64,
    /// Bytes per bulk request.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub max_payload_size: u64,
}

/// Filter support of a ServiceProviderConfig.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterSupport {
    /// Whether `?filter=` works.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub supported: bool,
    /// Most resources one filtered query returns (Salesforce: 200).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub max_results: u64,
}

/// What a server says it supports (RFC 7643 §5). Every flag defaults to false, the safe
/// assumption when the server leaves it out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProviderConfig {
    /// PATCH support (else updates use PUT).
    #[serde(default)]
    pub patch: Supported,
    /// Bulk support.
    #[serde(default)]
    pub bulk: BulkSupport,
    /// Filter support.
    #[serde(default)]
    pub filter: FilterSupport,
    /// Password change support.
    #[serde(default)]
    pub change_password: Supported,
    /// Sorting support.
    #[serde(default)]
    pub sort: Supported,
    /// ETag (If-Match) support.
    #[serde(default)]
    pub etag: Supported,
    /// Authentication schemes, as sent.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub authentication_schemes: Vec<Value>,
    /// Members not modelled above.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ServiceProviderConfig {
    /// Whether PATCH is supported.
    pub fn patch_supported(&self) -> bool {
        self.patch.supported
    }
    /// Whether filtering is supported.
    pub fn filter_supported(&self) -> bool {
        self.filter.supported
    }
    /// Whether ETags are supported.
    pub fn etag_supported(&self) -> bool {
        self.etag.supported
    }
    /// Whether bulk is supported.
    pub fn bulk_supported(&self) -> bool {
        self.bulk.supported
    }
    /// The most results a filtered query returns, when the server says (0 = not said).
    pub fn max_results(&self) -> Option<u64> {
        (self.filter.max_results > 0).then_some(self.filter.max_results)
    }
}

fn value_as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn value_as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(value_as_bool(&Value::deserialize(d)?).unwrap_or(false))
}

fn lenient_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(value_as_bool(&Value::deserialize(d)?))
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(value_as_u64(&Value::deserialize(d)?).unwrap_or(0))
}

fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(value_as_u64(&Value::deserialize(d)?))
}

/// `null` → empty list (some servers send `"members": null`).
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// `schemas` as a list, a single string, or Salesforce's string holding a JSON array.
fn lenient_schemas<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) => match serde_json::from_str::<Vec<String>>(&s) {
            Ok(list) => list,
            Err(_) => vec![s],
        },
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_round_trip_keeps_unknown_members() {
        let input = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "005xx", "externalId": "e1", "userName": "ann@example.com",
            "name": {"givenName": "Ann", "familyName": "Lee", "middleName": "Q"},
            "displayName": "Ann Lee",
            "emails": [{"value": "ann@example.com", "type": "work", "primary": true}],
            "phoneNumbers": [{"value": "+1 555", "type": "work"}],
            "active": true, "title": "Eng", "locale": "en-US", "timezone": "Europe/Paris",
            "preferredLanguage": "en",
            "roles": [{"value": "user"}],
            "entitlements": [{"value": "00e1", "type": "Profile", "$ref": "/Entitlements/00e1"}],
            ENTERPRISE_USER_SCHEMA: {"employeeNumber": "42", "department": "R&D",
                "manager": {"value": "005m", "$ref": "../Users/005m", "displayName": "Boss"}},
            "meta": {"resourceType": "User", "version": "W/\"3\"", "location": "https://x/Users/005xx"},
            "emailEncodingKey": "UTF-8",
            "nickName": "ann"
        });
        let user: User = serde_json::from_value(input.clone()).expect("user parses");
        assert_eq!(user.user_name, "ann@example.com");
        assert_eq!(
            user.name.as_ref().and_then(|n| n.given_name.as_deref()),
            Some("Ann")
        );
        assert_eq!(user.primary_email(), Some("ann@example.com"));
        assert_eq!(user.entitlements[0].type_.as_deref(), Some("Profile"));
        let ent = user.enterprise.as_ref().expect("enterprise extension");
        assert_eq!(ent.department.as_deref(), Some("R&D"));
        assert_eq!(
            ent.manager.as_ref().and_then(|m| m.value.as_deref()),
            Some("005m")
        );
        assert_eq!(
            user.meta.as_ref().and_then(|m| m.version.as_deref()),
            Some("W/\"3\"")
        );
        assert_eq!(user.extra.get("emailEncodingKey"), Some(&json!("UTF-8")));
        assert_eq!(serde_json::to_value(&user).expect("serializes"), input);
    }

    #[test]
    fn new_user_serializes_minimal_camel_case() {
        let mut u = User::new("bob");
        u.external_id = Some("x1".into());
        u.active = Some(false);
        u.name = Some(Name {
            given_name: Some("Bob".into()),
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_value(&u).expect("serializes"),
            json!({"schemas": [USER_SCHEMA], "externalId": "x1", "userName": "bob",
                   "name": {"givenName": "Bob"}, "active": false})
        );
        u.enterprise = Some(EnterpriseUser {
            employee_number: Some("7".into()),
            ..Default::default()
        });
        let u = u.with_schemas();
        assert_eq!(
            u.schemas,
            vec![USER_SCHEMA.to_string(), ENTERPRISE_USER_SCHEMA.to_string()]
        );
    }

    #[test]
    fn lenient_parsing_of_sloppy_servers() {
        let u: User = serde_json::from_value(json!({
            "schemas": "[\"urn:ietf:params:scim:schemas:core:2.0:User\"]",
            "userName": "x", "active": "False", "emails": null
        }))
        .expect("parses");
        assert_eq!(u.schemas, vec![USER_SCHEMA.to_string()]);
        assert_eq!(u.active, Some(false));
        assert!(u.emails.is_empty());
    }

    #[test]
    fn group_with_members() {
        let g: Group = serde_json::from_value(json!({
            "schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "Eng",
            "members": [{"value": "u1", "display": "Ann", "$ref": "https://x/Users/u1", "type": "User"}]
        }))
        .expect("parses");
        assert_eq!(
            g.members[0],
            Member {
                value: "u1".into(),
                display: Some("Ann".into()),
                ref_: Some("https://x/Users/u1".into()),
                type_: Some("User".into()),
                extra: Map::new(),
            }
        );
        let mut n = Group::new("Ops");
        n.members.push(Member::new("u2"));
        assert_eq!(
            serde_json::to_value(&n).expect("serializes"),
            json!({"schemas": [GROUP_SCHEMA], "displayName": "Ops", "members": [{"value": "u2"}]})
        );
    }

    #[test]
    fn list_response_both_paging_styles() {
        let l: ListResponse<User> = serde_json::from_value(json!({
            "schemas": [LIST_RESPONSE_SCHEMA], "totalResults": 3, "itemsPerPage": 1, "startIndex": 2,
            "Resources": [{"userName": "a"}]
        }))
        .expect("parses");
        assert_eq!(
            (l.total_results, l.items_per_page, l.start_index),
            (3, Some(1), Some(2))
        );
        assert_eq!(l.resources[0].user_name, "a");
        let l: ListResponse<Group> = serde_json::from_value(json!({
            "totalResults": "10", "Resources": [], "nextCursor": "abc"
        }))
        .expect("parses");
        assert_eq!(l.total_results, 10);
        assert_eq!(l.next_cursor.as_deref(), Some("abc"));
        let l: ListResponse<Group> =
            serde_json::from_value(json!({"totalResults": 0})).expect("parses");
        assert!(l.resources.is_empty());
    }

    #[test]
    fn service_provider_config_salesforce_example() {
        let spc: ServiceProviderConfig = serde_json::from_value(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": 200},
            "changePassword": {"supported": true},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{"type": "oauth2", "name": "OAuth v2.0"}]
        }))
        .expect("parses");
        assert!(spc.patch_supported());
        assert!(spc.filter_supported());
        assert!(!spc.etag_supported());
        assert!(!spc.bulk_supported());
        assert_eq!(spc.max_results(), Some(200));
        assert!(spc.change_password.supported);
        let empty: ServiceProviderConfig = serde_json::from_value(json!({})).expect("parses");
        assert!(!empty.patch_supported() && empty.max_results().is_none());
        let sloppy: ServiceProviderConfig =
            serde_json::from_value(json!({"patch": {"supported": "true"}, "filter": {"supported": true, "maxResults": "50"}}))
                .expect("parses");
        assert!(sloppy.patch_supported());
        assert_eq!(sloppy.max_results(), Some(50));
    }
}
