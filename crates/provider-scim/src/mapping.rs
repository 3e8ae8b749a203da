//! Canonical user/group state → RFC 7643 resources (the comparison that skips no-op writes is
//! shared by every profile: `scimrelay_connector::kit::compare`).

use serde_json::{Map, Value, json};

use scimrelay_connector::kit::compare::{
    ENTERPRISE_DEPARTMENT, ENTERPRISE_EMPLOYEE_NUMBER, GROUP_SCHEMA, USER_SCHEMA,
};
use scimrelay_connector::kit::resource::{put, put_enterprise, put_preferences};
use scimrelay_proto::v1::{GroupState, UserState};

/// The SCIM User for a desired state; `active` is passed separately because a deactivation
/// forces it false whatever the state says.
pub fn user_resource(u: &UserState, active: bool) -> Value {
    let mut m = Map::new();
    let mut schemas = vec![json!(USER_SCHEMA)];
    m.insert("externalId".into(), json!(u.id));
    m.insert("userName".into(), json!(u.user_name));
    m.insert("active".into(), json!(active));
    put(&mut m, "displayName", &u.display_name);
    if !u.given_name.is_empty() || !u.family_name.is_empty() {
        let mut name = Map::new();
        put(&mut name, "givenName", &u.given_name);
        put(&mut name, "familyName", &u.family_name);
        m.insert("name".into(), Value::Object(name));
    }
    if !u.emails.is_empty() {
        let emails: Vec<Value> = u
            .emails
            .iter()
            .map(|e| {
                let mut x = Map::new();
                x.insert("value".into(), json!(e.value));
                put(&mut x, "type", &e.r#type);
                x.insert("primary".into(), json!(e.primary));
                Value::Object(x)
            })
            .collect();
        m.insert("emails".into(), Value::Array(emails));
    }
    if !u.phone_numbers.is_empty() {
        let phones: Vec<Value> = u
            .phone_numbers
            .iter()
            .map(|p| {
                let mut x = Map::new();
                x.insert("value".into(), json!(p.value));
                put(&mut x, "type", &p.r#type);
                x.insert("primary".into(), json!(p.primary));
                Value::Object(x)
            })
            .collect();
        m.insert("phoneNumbers".into(), Value::Array(phones));
    }
    put_preferences(&mut m, u);
    put_enterprise(&mut m, &mut schemas, u);
    m.insert("schemas".into(), Value::Array(schemas));
    Value::Object(m)
}

/// The SCIM Group for a desired state, members given as provider ids.
pub fn group_resource(g: &GroupState, member_remote_ids: &[String]) -> Value {
    json!({
        "schemas": [GROUP_SCHEMA],
        "externalId": g.id,
        "displayName": g.display_name,
        "members": member_remote_ids.iter().map(|id| json!({"value": id})).collect::<Vec<_>>(),
    })
}

/// Every user attribute [`user_resource`] can set and a later state can leave out, as PATCH
/// paths: a top-level attribute, a sub-attribute (`name.givenName`) or an extension attribute
/// (`urn:…:User:department`). `userName`, `active` and `externalId` are always sent.
pub const MANAGED_USER_ATTRS: [&str; 11] = [
    "displayName",
    "name.givenName",
    "name.familyName",
    "emails",
    "phoneNumbers",
    "title",
    "locale",
    "timezone",
    "preferredLanguage",
    ENTERPRISE_EMPLOYEE_NUMBER,
    ENTERPRISE_DEPARTMENT,
];

#[cfg(test)]
mod tests {
    use super::*;
    use scimrelay_connector::kit::compare::{ENTERPRISE_SCHEMA, cleared, differs, out_of_date};
    use scimrelay_proto::v1::Email;

    fn alice() -> UserState {
        UserState {
            id: "u1".into(),
            user_name: "alice@example.com".into(),
            given_name: "Alice".into(),
            family_name: "Liddell".into(),
            emails: vec![Email {
                value: "alice@example.com".into(),
                r#type: "work".into(),
                primary: true,
            }],
            department: "R&D".into(),
            active: true,
            ..Default::default()
        }
    }

    #[test]
    fn user_resource_has_core_and_enterprise() {
        let r = user_resource(&alice(), true);
        assert_eq!(r["externalId"], "u1");
        assert_eq!(r["name"]["familyName"], "Liddell");
        assert_eq!(r[ENTERPRISE_SCHEMA]["department"], "R&D");
        assert_eq!(r["schemas"].as_array().map(Vec::len), Some(2));
        assert!(r.get("title").is_none(), "empty attributes are omitted");
    }

    #[test]
    fn differs_ignores_server_additions_and_case() {
        let desired = user_resource(&alice(), true);
        let mut current = desired.clone();
        current["id"] = json!("abc");
        current["meta"] = json!({"resourceType": "User"});
        current["userName"] = json!("Alice@Example.com");
        current["emails"][0]["display"] = json!("x");
        assert!(!differs(&desired, &current));
        current["name"]["givenName"] = json!("Alicia");
        assert!(differs(&desired, &current));
        let mut inactive = desired.clone();
        inactive["active"] = json!(false);
        assert!(differs(&desired, &inactive));
    }

    #[test]
    fn enterprise_paths_name_the_extension() {
        for path in [ENTERPRISE_EMPLOYEE_NUMBER, ENTERPRISE_DEPARTMENT] {
            let (schema, _) = path.rsplit_once(':').expect("path");
            assert_eq!(schema, ENTERPRISE_SCHEMA);
        }
    }

    #[test]
    fn cleared_lists_what_the_desired_state_dropped() {
        let mut full = alice();
        full.title = "Lead".into();
        full.employee_number = "42".into();
        let current = user_resource(&full, true);
        let mut less = full.clone();
        less.title.clear();
        less.given_name.clear();
        less.department.clear();
        less.emails.clear();
        let desired = user_resource(&less, true);
        assert_eq!(
            cleared(&desired, &current, &MANAGED_USER_ATTRS),
            vec!["name.givenName", "emails", "title", ENTERPRISE_DEPARTMENT]
        );
        assert!(
            !differs(&desired, &current),
            "differs sees set attributes only"
        );
        assert!(out_of_date(&desired, &current, &MANAGED_USER_ATTRS));
        // Only what the profile manages is cleared, and nothing the provider lacks anyway.
        assert_eq!(cleared(&desired, &current, &["title"]), vec!["title"]);
        assert!(cleared(&current, &desired, &MANAGED_USER_ATTRS).is_empty());
        assert!(!out_of_date(&current, &current, &MANAGED_USER_ATTRS));
        // An attribute the provider holds as empty, or spells in another case, is handled.
        let mut odd = current.clone();
        if let Value::Object(m) = &mut odd {
            let title = m.remove("title").expect("title");
            m.insert("Title".into(), title);
        }
        odd["phoneNumbers"] = json!([]);
        assert_eq!(
            cleared(&desired, &odd, &["title", "phoneNumbers"]),
            vec!["title"]
        );
    }

    #[test]
    fn member_lists_compare_as_sets() {
        let g = GroupState {
            id: "g".into(),
            display_name: "Eng".into(),
            member_ids: vec![],
        };
        let a = group_resource(&g, &["1".into(), "2".into()]);
        let b = group_resource(&g, &["2".into(), "1".into()]);
        let c = group_resource(&g, &["1".into()]);
        assert!(!differs(&a, &b));
        assert!(differs(&a, &c));
    }
}
