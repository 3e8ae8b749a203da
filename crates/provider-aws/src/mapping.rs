//! Canonical state → AWS IAM Identity Center SCIM payloads and single-attribute PATCH paths.
//!
//! AWS accepts one value per multi-valued attribute (the email marked primary, no `display`
//! sub-attribute) and requires userName, name.givenName, name.familyName and displayName on
//! create and PUT (docs/providers/aws.md, "What AWS documents"). A user lacking a name is a
//! permanent failure naming the field, not a 400 retried forever.
//!
//! Updates are PATCH operations with an explicit path each, one attribute (or sub-attribute)
//! per operation: AWS refuses a path-less replace of several attributes and several operations
//! on userName or active (same section).

use serde_json::{Map, Value, json};

use scimrelay_connector::ConvergeError;
use scimrelay_connector::kit::compare::{
    ENTERPRISE_DEPARTMENT, ENTERPRISE_EMPLOYEE_NUMBER, ENTERPRISE_SCHEMA, USER_SCHEMA, cleared,
    differs,
};
use scimrelay_connector::kit::resource::{
    display_name, one_value, put_enterprise, put_preferences, require, sole,
};
use scimrelay_proto::v1::UserState;
use scimrelay_scim::PatchBuilder;

const PROVIDER: &str = "AWS IAM Identity Center";
const NAMES: &str = " (givenName, familyName and displayName are all required)";

/// Optional attributes this profile manages, as PATCH paths: removed at AWS when the desired
/// state drops them (never userName or active, which AWS refuses to remove, nor the names and
/// displayName it requires).
pub const CLEARABLE: [&str; 7] = [
    "title",
    "locale",
    "timezone",
    "preferredLanguage",
    "phoneNumbers",
    ENTERPRISE_EMPLOYEE_NUMBER,
    ENTERPRISE_DEPARTMENT,
];
/// Enterprise-extension attributes this profile sets, each by its own path.
const ENTERPRISE_ATTRS: [&str; 2] = ["employeeNumber", "department"];

/// The AWS user for a desired state.
pub fn user_resource(u: &UserState, active: bool) -> Result<Value, ConvergeError> {
    require(PROVIDER, "userName", &u.user_name, "")?;
    require(PROVIDER, "givenName (name.givenName)", &u.given_name, NAMES)?;
    require(
        PROVIDER,
        "familyName (name.familyName)",
        &u.family_name,
        NAMES,
    )?;
    let mut m = Map::new();
    let mut schemas = vec![json!(USER_SCHEMA)];
    m.insert("externalId".into(), json!(u.id));
    m.insert("userName".into(), json!(u.user_name));
    m.insert("active".into(), json!(active));
    m.insert("displayName".into(), json!(display_name(u)));
    m.insert(
        "name".into(),
        json!({"givenName": u.given_name, "familyName": u.family_name}),
    );
    // Exactly one e-mail and one phone number: the primary one, else the first; always marked
    // primary, no display.
    if let Some(e) = sole(&u.emails, |e| &e.value, |e| e.primary) {
        m.insert("emails".into(), one_value(&e.value, &e.r#type));
    }
    if let Some(p) = sole(&u.phone_numbers, |p| &p.value, |p| p.primary) {
        m.insert("phoneNumbers".into(), one_value(&p.value, &p.r#type));
    }
    put_preferences(&mut m, u);
    put_enterprise(&mut m, &mut schemas, u);
    m.insert("schemas".into(), Value::Array(schemas));
    Ok(Value::Object(m))
}

/// The PATCH turning `existing` into `desired`: one operation per changed attribute, each with
/// an explicit path (`name.givenName`, `emails`, `urn:…:User:department`), `remove` for managed
/// attributes the desired state dropped (never for userName or active).
pub fn user_patch(desired: &Value, existing: &Value) -> PatchBuilder {
    let mut p = PatchBuilder::new();
    let (Value::Object(d), Value::Object(c)) = (desired, existing) else {
        return p;
    };
    for (k, dv) in d {
        match k.as_str() {
            "schemas" => {}
            "name" => {
                for sub in ["givenName", "familyName"] {
                    let want = dv.get(sub);
                    let have = c.get("name").and_then(|n| n.get(sub));
                    if let Some(w) = want
                        && have != Some(w)
                    {
                        p = p.replace(Some(&format!("name.{sub}")), w.clone());
                    }
                }
            }
            k if k == ENTERPRISE_SCHEMA => {}
            _ => {
                if differs(&json!({ k.clone(): dv.clone() }), existing) {
                    p = p.replace(Some(k), dv.clone());
                }
            }
        }
    }
    let want_ext = d.get(ENTERPRISE_SCHEMA);
    let have_ext = c.get(ENTERPRISE_SCHEMA);
    for attr in ENTERPRISE_ATTRS {
        let want = want_ext.and_then(|e| e.get(attr));
        let have = have_ext.and_then(|e| e.get(attr));
        if let Some(w) = want
            && have != Some(w)
        {
            p = p.replace(Some(&format!("{ENTERPRISE_SCHEMA}:{attr}")), w.clone());
        }
    }
    for path in cleared(desired, existing, &CLEARABLE) {
        p = p.remove(path, None);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use scimrelay_proto::v1::{Email, PhoneNumber};

    fn user() -> UserState {
        UserState {
            id: "u1".into(),
            user_name: "ann@example.com".into(),
            given_name: "Ann".into(),
            family_name: "Lee".into(),
            emails: vec![
                Email {
                    value: "home@example.com".into(),
                    r#type: "home".into(),
                    primary: false,
                },
                Email {
                    value: "ann@example.com".into(),
                    r#type: String::new(),
                    primary: true,
                },
            ],
            phone_numbers: vec![
                PhoneNumber {
                    value: "+1 555 0100".into(),
                    r#type: "work".into(),
                    primary: false,
                },
                PhoneNumber {
                    value: "+1 555 0101".into(),
                    r#type: "mobile".into(),
                    primary: false,
                },
            ],
            department: "Ops".into(),
            active: true,
            ..Default::default()
        }
    }

    #[test]
    fn exactly_one_primary_email_without_display() {
        let r = user_resource(&user(), true).expect("maps");
        assert_eq!(
            r["emails"],
            json!([{"value": "ann@example.com", "type": "work", "primary": true}])
        );
        assert_eq!(r["phoneNumbers"].as_array().map(Vec::len), Some(1));
        assert_eq!(r["displayName"], "Ann Lee");
        assert!(!r.to_string().contains("\"display\""));
        assert_eq!(r[ENTERPRISE_SCHEMA]["department"], "Ops");
    }

    #[test]
    fn missing_family_name_is_permanent_and_named() {
        let mut u = user();
        u.family_name.clear();
        let e = user_resource(&u, true).expect_err("no family name");
        assert_eq!(e.class, scimrelay_connector::FailureClass::Permanent);
        assert!(
            e.detail.contains("familyName") && e.detail.contains("AWS"),
            "{e}"
        );
    }

    #[test]
    fn patch_uses_single_attribute_paths_and_never_repeats_user_name_or_active() {
        let existing = user_resource(&user(), true).expect("maps");
        let mut u = user();
        u.given_name = "Anne".into();
        u.family_name = "Li".into();
        u.user_name = "anne@example.com".into();
        u.emails[1].value = "anne@example.com".into();
        u.department.clear();
        u.title = "Lead".into();
        let desired = user_resource(&u, false).expect("maps");
        let p = user_patch(&desired, &existing);
        let ops = p.build()["Operations"].clone();
        let paths: Vec<&str> = ops
            .as_array()
            .expect("ops")
            .iter()
            .map(|o| o["path"].as_str().expect("every op has a path"))
            .collect();
        assert!(
            paths.contains(&"name.givenName") && paths.contains(&"name.familyName"),
            "{paths:?}"
        );
        assert_eq!(paths.iter().filter(|p| **p == "userName").count(), 1);
        assert_eq!(paths.iter().filter(|p| **p == "active").count(), 1);
        assert!(paths.contains(&"emails") && paths.contains(&"title"));
        assert!(paths.contains(&format!("{ENTERPRISE_SCHEMA}:department").as_str()));
        assert!(
            ops.as_array()
                .expect("ops")
                .iter()
                .all(|o| o["op"] != "remove" || (o["path"] != "userName" && o["path"] != "active"))
        );
        assert!(
            user_patch(&existing, &existing).is_empty(),
            "no change, no operation"
        );
    }
}
