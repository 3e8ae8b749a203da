//! Canonical state → GitHub EMU SCIM payloads, and GitHub's login normalisation.
//!
//! GitHub requires every one of externalId, userName, active, name.givenName, name.familyName,
//! displayName and emails (value, type, primary) on create and PUT, accepts only the core
//! schema (no enterprise extension), and derives each user's GitHub login from the userName
//! (docs/providers/github.md, "What GitHub documents" and "Login normalisation"). A missing
//! attribute is reported as a permanent failure naming it, before any request, instead of a 400
//! per attempt.

use serde_json::{Map, Value, json};

use scimrelay_connector::ConvergeError;
use scimrelay_connector::kit::compare::{GROUP_SCHEMA, USER_SCHEMA};
use scimrelay_connector::kit::missing_attribute;
use scimrelay_connector::kit::resource::{display_name, require};
use scimrelay_proto::v1::{GroupState, UserState};

/// Longest GitHub login including `_SHORTCODE` (30 on GHE.com data residency; set
/// `options.max_login_len` there).
pub const DEFAULT_MAX_LOGIN_LEN: usize = 39;

const PROVIDER: &str = "GitHub";

/// GitHub's login normalisation without the `_SHORTCODE` suffix (docs/providers/github.md,
/// "Login normalisation"): drop everything up to a `\` and from the `@`, turn every character
/// other than letters and digits into `-`, collapse runs of `-` and trim them at both ends.
pub fn normalize(user_name: &str) -> String {
    let name = user_name.rsplit('\\').next().unwrap_or_default();
    let name = name.split('@').next().unwrap_or_default();
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The GitHub login a userName becomes in the enterprise with `shortcode`.
pub fn login(user_name: &str, shortcode: &str) -> String {
    format!("{}_{shortcode}", normalize(user_name))
}

/// Checks the login a userName becomes: not empty, and (when the short code is known) not
/// longer than GitHub allows. The failure names the login, never the userName (an e-mail).
pub fn check_login(
    subject: &str,
    user_name: &str,
    shortcode: Option<&str>,
    max_len: usize,
) -> Result<(), ConvergeError> {
    let base = normalize(user_name);
    if base.is_empty() {
        return Err(ConvergeError::new(
            scimrelay_connector::FailureClass::Permanent,
            format!(
                "user {subject}: the userName normalises to an empty GitHub login; use a userName with letters or digits before the @"
            ),
        ));
    }
    if let Some(code) = shortcode {
        let l = login(user_name, code);
        let n = l.chars().count();
        if n > max_len {
            return Err(ConvergeError::new(
                scimrelay_connector::FailureClass::Permanent,
                format!(
                    "user {subject}: the userName normalises to the GitHub login {l:?} ({n} characters), longer than GitHub's {max_len}; shorten the part before the @"
                ),
            ));
        }
    }
    Ok(())
}

/// The GitHub SCIM user for a desired state (core schema only, every required attribute).
pub fn user_resource(u: &UserState, active: bool) -> Result<Value, ConvergeError> {
    require(PROVIDER, "userName", &u.user_name, "")?;
    require(PROVIDER, "givenName (name.givenName)", &u.given_name, "")?;
    require(PROVIDER, "familyName (name.familyName)", &u.family_name, "")?;
    let display = display_name(u);
    let mut m = Map::new();
    m.insert("schemas".into(), json!([USER_SCHEMA]));
    m.insert("externalId".into(), json!(u.id));
    m.insert("userName".into(), json!(u.user_name));
    m.insert("active".into(), json!(active));
    m.insert(
        "name".into(),
        json!({"givenName": u.given_name, "familyName": u.family_name}),
    );
    m.insert("displayName".into(), json!(display));
    m.insert("emails".into(), emails(u)?);
    Ok(Value::Object(m))
}

/// Every e-mail with `type` (default "work") and exactly one `primary: true` (the first one
/// marked primary, else the first); a user without e-mails whose userName is an address gets
/// that address.
fn emails(u: &UserState) -> Result<Value, ConvergeError> {
    let mut list: Vec<(String, String, bool)> = u
        .emails
        .iter()
        .filter(|e| !e.value.trim().is_empty())
        .map(|e| {
            let t = if e.r#type.trim().is_empty() {
                "work".to_owned()
            } else {
                e.r#type.clone()
            };
            (e.value.clone(), t, e.primary)
        })
        .collect();
    if list.is_empty() && u.user_name.contains('@') {
        list.push((u.user_name.clone(), "work".into(), true));
    }
    if list.is_empty() {
        return Err(missing_attribute(PROVIDER, "e-mail address (emails)", ""));
    }
    let primary = list.iter().position(|e| e.2).unwrap_or(0);
    Ok(Value::Array(
        list.into_iter()
            .enumerate()
            .map(|(i, (value, t, _))| json!({"value": value, "type": t, "primary": i == primary}))
            .collect(),
    ))
}

/// The GitHub SCIM group (externalId and displayName are required), members by GitHub SCIM id.
pub fn group_resource(g: &GroupState, member_ids: &[String]) -> Value {
    json!({
        "schemas": [GROUP_SCHEMA],
        "externalId": g.id,
        "displayName": g.display_name,
        "members": member_ids.iter().map(|id| json!({"value": id})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use scimrelay_proto::v1::Email;

    fn user() -> UserState {
        UserState {
            id: "u1".into(),
            user_name: "mona.lisa@octo.example".into(),
            given_name: "Mona".into(),
            family_name: "Lisa".into(),
            emails: vec![
                Email {
                    value: "m@octo.example".into(),
                    r#type: String::new(),
                    primary: false,
                },
                Email {
                    value: "m2@octo.example".into(),
                    r#type: "home".into(),
                    primary: false,
                },
            ],
            department: "Art".into(),
            ..Default::default()
        }
    }

    #[test]
    fn payload_has_every_required_attribute_and_core_schema_only() {
        let r = user_resource(&user(), true).expect("maps");
        assert_eq!(r["schemas"], json!([USER_SCHEMA]));
        assert_eq!(r["externalId"], "u1");
        assert_eq!(r["active"], true);
        assert_eq!(r["displayName"], "Mona Lisa", "derived from the names");
        assert_eq!(
            r["emails"][0],
            json!({"value": "m@octo.example", "type": "work", "primary": true})
        );
        assert_eq!(r["emails"][1]["primary"], false);
        assert!(
            r.get("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
                .is_none()
        );
    }

    #[test]
    fn user_name_becomes_the_email_when_none_is_given() {
        let mut u = user();
        u.emails.clear();
        let r = user_resource(&u, true).expect("maps");
        assert_eq!(
            r["emails"],
            json!([{"value": "mona.lisa@octo.example", "type": "work", "primary": true}])
        );
        u.user_name = "mona".into();
        let e = user_resource(&u, true).expect_err("no email");
        assert!(e.detail.contains("emails"), "{e}");
    }

    #[test]
    fn missing_names_are_permanent_and_named() {
        let mut u = user();
        u.family_name.clear();
        let e = user_resource(&u, true).expect_err("no family name");
        assert_eq!(e.class, scimrelay_connector::FailureClass::Permanent);
        assert!(e.detail.contains("familyName"), "{e}");
    }

    #[test]
    fn normalisation_and_login_length() {
        assert_eq!(normalize("john.smith@a.com"), "john-smith");
        assert_eq!(normalize("john.smith@b.com"), "john-smith");
        assert_eq!(normalize("CONTOSO\\Jane.Doe"), "Jane-Doe");
        assert_eq!(login("Mona.Lisa@octo.com", "acme"), "Mona-Lisa_acme");
        assert!(check_login("u", "short@x.com", Some("acme"), 39).is_ok());
        let long = "a-very-long-first-name.and-a-longer-last-name@x.com";
        let e = check_login("u9", long, Some("acme"), 39).expect_err("too long");
        assert_eq!(e.class, scimrelay_connector::FailureClass::Permanent);
        assert!(
            e.detail.contains("_acme") && !e.detail.contains("@x.com"),
            "{e}"
        );
        assert!(
            check_login("u9", long, None, 39).is_ok(),
            "unknown short code: no length check"
        );
        assert!(check_login("u", "@x.com", None, 39).is_err());
    }
}
