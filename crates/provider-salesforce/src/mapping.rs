//! Canonical state → Salesforce SCIM users, and Salesforce's quota header.
//!
//! A Salesforce user needs exactly one profile in `entitlements` (without it Salesforce answers
//! 409 REQUIRED_FIELD_MISSING, easily misread as a conflict), a last name and an e-mail, and a
//! userName unique across *every* Salesforce org — hence `options.username_suffix`
//! (docs/providers/salesforce.md, "What Salesforce documents"). Missing ones are permanent
//! failures worded so an operator knows which setting to change.

use serde_json::{Map, Value, json};

use scimrelay_connector::kit::compare::USER_SCHEMA;
use scimrelay_connector::kit::missing_attribute;
use scimrelay_connector::kit::resource::{
    one_value, put, put_enterprise, put_preferences, require, sole,
};
use scimrelay_connector::{ConvergeError, FailureClass};
use scimrelay_proto::v1::UserState;

/// The event attribute naming a user's profile id (wins over `options.profile_id`).
pub const PROFILE_ATTRIBUTE: &str = "salesforce_profile_id";

const PROVIDER: &str = "Salesforce";

/// The profile id for a user: the event's `attributes.salesforce_profile_id`, else the
/// target's `options.profile_id`; none is a permanent failure saying what to set.
pub fn profile_id(
    u: &UserState,
    target_id: &str,
    option: Option<&str>,
) -> Result<String, ConvergeError> {
    u.attributes
        .get(PROFILE_ATTRIBUTE)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| option.map(str::to_owned))
        .ok_or_else(|| {
            ConvergeError::new(
                FailureClass::Permanent,
                format!(
                    "no Salesforce profile: set options.profile_id on target {target_id} (a profile id, 00e…), options.profile_name, or the user's attributes.{PROFILE_ATTRIBUTE}; Salesforce requires exactly one profile per user"
                ),
            )
        })
}

/// The userName sent to Salesforce: the platform's userName with the target's suffix (e.g.
/// `ann@corp.com` + `.prod`), because Salesforce usernames are unique across all orgs.
pub fn user_name(u: &UserState, suffix: Option<&str>) -> String {
    match suffix {
        Some(s) if !u.user_name.ends_with(s) => format!("{}{s}", u.user_name),
        _ => u.user_name.clone(),
    }
}

/// The Salesforce user for a desired state.
pub fn user_resource(
    u: &UserState,
    active: bool,
    profile_id: &str,
    suffix: Option<&str>,
) -> Result<Value, ConvergeError> {
    require(PROVIDER, "userName", &u.user_name, "")?;
    require(
        PROVIDER,
        "familyName (name.familyName, Salesforce LastName)",
        &u.family_name,
        "",
    )?;
    let email = match sole(&u.emails, |e| &e.value, |e| e.primary) {
        Some(e) => e.value.clone(),
        None if u.user_name.contains('@') => u.user_name.clone(),
        None => return Err(missing_attribute(PROVIDER, "e-mail address (emails)", "")),
    };
    let mut m = Map::new();
    let mut schemas = vec![json!(USER_SCHEMA)];
    m.insert("externalId".into(), json!(u.id));
    m.insert("userName".into(), json!(user_name(u, suffix)));
    m.insert("active".into(), json!(active));
    let mut name = Map::new();
    put(&mut name, "givenName", &u.given_name);
    name.insert("familyName".into(), json!(u.family_name));
    m.insert("name".into(), Value::Object(name));
    put(&mut m, "displayName", &u.display_name);
    m.insert("emails".into(), one_value(&email, "work"));
    // Salesforce allows one phone number per user.
    if let Some(p) = sole(&u.phone_numbers, |p| &p.value, |p| p.primary) {
        m.insert("phoneNumbers".into(), one_value(&p.value, &p.r#type));
    }
    put_preferences(&mut m, u);
    m.insert("entitlements".into(), json!([{"value": profile_id}]));
    put_enterprise(&mut m, &mut schemas, u);
    m.insert("schemas".into(), Value::Array(schemas));
    Ok(Value::Object(m))
}

/// `Sforce-Limit-Info: api-usage=USED/LIMIT[; api-bursts=…]` → (used, limit).
pub fn api_usage(header: &str) -> Option<(u64, u64)> {
    let part = header
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("api-usage="))?;
    let (used, limit) = part.split_once('/')?;
    Some((used.trim().parse().ok()?, limit.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scimrelay_proto::v1::Email;

    fn user() -> UserState {
        UserState {
            id: "u1".into(),
            user_name: "ann@corp.example".into(),
            given_name: "Ann".into(),
            family_name: "Lee".into(),
            emails: vec![Email {
                value: "ann@corp.example".into(),
                r#type: "work".into(),
                primary: true,
            }],
            active: true,
            ..Default::default()
        }
    }

    #[test]
    fn one_profile_entitlement_and_the_username_suffix() {
        let r = user_resource(&user(), true, "00eXX", Some(".prod")).expect("maps");
        assert_eq!(r["entitlements"], json!([{"value": "00eXX"}]));
        assert_eq!(r["userName"], "ann@corp.example.prod");
        assert_eq!(
            r["emails"][0]["value"], "ann@corp.example",
            "the e-mail keeps no suffix"
        );
        assert_eq!(
            user_name(
                &UserState {
                    user_name: "a@b.c.prod".into(),
                    ..Default::default()
                },
                Some(".prod")
            ),
            "a@b.c.prod",
            "never twice"
        );
    }

    #[test]
    fn profile_from_the_event_wins_over_the_target_option() {
        let mut u = user();
        assert_eq!(
            profile_id(&u, "sf", Some("00eOPT")).ok().as_deref(),
            Some("00eOPT")
        );
        u.attributes
            .insert(PROFILE_ATTRIBUTE.into(), "00eEVT".into());
        assert_eq!(
            profile_id(&u, "sf", Some("00eOPT")).ok().as_deref(),
            Some("00eEVT")
        );
    }

    #[test]
    fn no_profile_is_a_permanent_clearly_worded_failure() {
        let e = profile_id(&user(), "sf-prod", None).expect_err("no profile");
        assert_eq!(e.class, FailureClass::Permanent);
        assert!(
            e.detail
                .starts_with("no Salesforce profile: set options.profile_id"),
            "{e}"
        );
        assert!(e.detail.contains("sf-prod"), "{e}");
    }

    #[test]
    fn parses_sforce_limit_info() {
        assert_eq!(api_usage("api-usage=25/15000"), Some((25, 15000)));
        assert_eq!(
            api_usage("api-usage=7/100; api-bursts=1/10"),
            Some((7, 100))
        );
        assert_eq!(api_usage("nonsense"), None);
    }
}
