//! Building blocks of the profiles' mappings from a desired user state to a SCIM resource:
//! the attributes every profile writes the same way (an attribute set only when it has a
//! value, the locale and title attributes, the enterprise extension), picking the one value a
//! provider that keeps one e-mail or phone number takes, and the failure for a required
//! attribute the state lacks. Which attributes a provider requires or refuses stays in its
//! own `mapping.rs`.

use serde_json::{Map, Value, json};

use scimrelay_proto::v1::UserState;

use super::compare::ENTERPRISE_SCHEMA;
use crate::ConvergeError;

/// Sets `key` to `value` unless the value is blank (an attribute without a value is left out:
/// leaving it out is how a desired state says "cleared").
pub fn put(m: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.trim().is_empty() {
        m.insert(key.into(), json!(value));
    }
}

/// A permanent failure naming `field` when `value` is blank (`why` adds the provider's
/// reason), instead of a request the provider would refuse.
pub fn require(provider: &str, field: &str, value: &str, why: &str) -> Result<(), ConvergeError> {
    if value.trim().is_empty() {
        return Err(super::missing_attribute(provider, field, why));
    }
    Ok(())
}

/// The one value a provider keeping a single e-mail or phone number takes: the first non-blank
/// one marked primary, else the first non-blank one.
pub fn sole<T>(
    items: &[T],
    value: impl Fn(&T) -> &str,
    primary: impl Fn(&T) -> bool,
) -> Option<&T> {
    let filled = |x: &&T| !value(x).trim().is_empty();
    items
        .iter()
        .filter(filled)
        .find(|x| primary(x))
        .or_else(|| items.iter().find(filled))
}

/// A multi-valued attribute holding one value, marked primary, typed `kind` (default `work`).
pub fn one_value(value: &str, kind: &str) -> Value {
    let kind = if kind.trim().is_empty() { "work" } else { kind };
    json!([{"value": value, "type": kind, "primary": true}])
}

/// The user's displayName, or "givenName familyName" when it has none (for a provider that
/// requires one).
pub fn display_name(u: &UserState) -> String {
    if u.display_name.trim().is_empty() {
        format!("{} {}", u.given_name, u.family_name)
    } else {
        u.display_name.clone()
    }
}

/// `title`, `locale`, `timezone` and `preferredLanguage`, each when it has a value.
pub fn put_preferences(m: &mut Map<String, Value>, u: &UserState) {
    put(m, "title", &u.title);
    put(m, "locale", &u.locale);
    put(m, "timezone", &u.timezone);
    put(m, "preferredLanguage", &u.preferred_language);
}

/// The enterprise extension (`employeeNumber`, `department`) when either has a value, its
/// schema added to `schemas`.
pub fn put_enterprise(m: &mut Map<String, Value>, schemas: &mut Vec<Value>, u: &UserState) {
    let mut ext = Map::new();
    put(&mut ext, "employeeNumber", &u.employee_number);
    put(&mut ext, "department", &u.department);
    if !ext.is_empty() {
        m.insert(ENTERPRISE_SCHEMA.into(), Value::Object(ext));
        schemas.push(json!(ENTERPRISE_SCHEMA));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scimrelay_proto::v1::Email;

    fn email(value: &str, primary: bool) -> Email {
        Email {
            value: value.into(),
            r#type: String::new(),
            primary,
        }
    }

    #[test]
    fn sole_takes_the_primary_else_the_first_filled() {
        fn v(e: &Email) -> &str {
            &e.value
        }
        fn p(e: &Email) -> bool {
            e.primary
        }
        let list = [email(" ", true), email("a@x", false), email("b@x", true)];
        assert_eq!(sole(&list, v, p).map(|e| e.value.as_str()), Some("b@x"));
        let list = [email("", true), email("a@x", false)];
        assert_eq!(sole(&list, v, p).map(|e| e.value.as_str()), Some("a@x"));
        assert!(sole(&[email(" ", true)], v, p).is_none());
        assert_eq!(
            one_value("a@x", ""),
            json!([{"value": "a@x", "type": "work", "primary": true}])
        );
    }

    #[test]
    fn blank_attributes_are_left_out_and_required_ones_named() {
        let mut m = Map::new();
        let mut schemas = vec![];
        let u = UserState {
            title: " ".into(),
            locale: "de-DE".into(),
            department: "R&D".into(),
            ..Default::default()
        };
        put_preferences(&mut m, &u);
        put_enterprise(&mut m, &mut schemas, &u);
        assert_eq!(
            Value::Object(m),
            json!({"locale": "de-DE", ENTERPRISE_SCHEMA: {"department": "R&D"}})
        );
        assert_eq!(schemas, vec![json!(ENTERPRISE_SCHEMA)]);
        let e = require("AWS", "userName", " ", "").expect_err("blank");
        assert!(
            e.detail.contains("userName") && e.detail.contains("AWS"),
            "{e:?}"
        );
        assert!(require("AWS", "userName", "a", "").is_ok());
    }
}
