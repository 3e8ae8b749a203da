//! The event model of the HTTP API (JSON) and its validation, shared with the gRPC API.
//!
//! JSON is decoded by hand rather than by serde derive so that every error names the exact
//! field (`events[3].user.userName`) in the API's own spelling, whether the event came over
//! HTTP or gRPC. Validation runs on the protobuf form, so both transports share it.

use serde_json::{Map, Value};

use scimrelay_core::config::TargetsFile;
use scimrelay_proto::v1::{
    Email, EventKind, GroupState, IdentityEvent, PhoneNumber, Priority, UserState,
};

/// Longest accepted event id (an idempotency key).
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted string attribute; SCIM servers reject far shorter ones, this only stops abuse.
pub const MAX_STRING_LEN: usize = 1024;
/// Most members one group event may carry.
pub const MAX_GROUP_MEMBERS: usize = 100_000;

/// An invalid event: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field, in the HTTP API's spelling, prefixed with the event's position in a batch.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

fn obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, FieldError> {
    v.as_object()
        .ok_or_else(|| FieldError::new(path, "must be a JSON object"))
}

fn opt_str(m: &Map<String, Value>, prefix: &str, key: &str) -> Result<String, FieldError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(FieldError::new(join(prefix, key), "must be a string")),
    }
}

fn opt_bool(
    m: &Map<String, Value>,
    prefix: &str,
    key: &str,
    default: bool,
) -> Result<bool, FieldError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(FieldError::new(join(prefix, key), "must be true or false")),
    }
}

fn check_keys(m: &Map<String, Value>, prefix: &str, allowed: &[&str]) -> Result<(), FieldError> {
    for k in m.keys() {
        if k.is_empty() {
            // Found by fuzzing: `{"": 1}` must still name where the problem is.
            let field = if prefix.is_empty() { "body" } else { prefix };
            return Err(FieldError::new(field, "an object member has an empty name"));
        }
        if !allowed.contains(&k.as_str()) {
            return Err(FieldError::new(
                join(prefix, k),
                format!("unknown field; expected one of: {}", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Decodes the body of `POST /v1/events`: one event object, a JSON array of events, or
/// `{"events": [...]}`. Field paths carry `events[i]` for batches.
pub fn events_from_json(body: &Value) -> Result<Vec<IdentityEvent>, FieldError> {
    let (items, batch): (Vec<&Value>, bool) = match body {
        Value::Array(a) => (a.iter().collect(), true),
        Value::Object(m) if m.contains_key("events") => match m.get("events") {
            Some(Value::Array(a)) => {
                check_keys(m, "", &["events"])?;
                (a.iter().collect(), true)
            }
            _ => return Err(FieldError::new("events", "must be an array of events")),
        },
        Value::Object(_) => (vec![body], false),
        _ => {
            return Err(FieldError::new(
                "body",
                "must be an event object, an array of events, or {\"events\": [...]}",
            ));
        }
    };
    if batch && items.is_empty() {
        return Err(FieldError::new("events", "must hold at least one event"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            event_from_json(
                v,
                &if batch {
                    format!("events[{i}]")
                } else {
                    String::new()
                },
            )
        })
        .collect()
}

/// Decodes one event object.
pub fn event_from_json(v: &Value, prefix: &str) -> Result<IdentityEvent, FieldError> {
    let m = obj(v, if prefix.is_empty() { "body" } else { prefix })?;
    check_keys(
        m,
        prefix,
        &[
            "id",
            "kind",
            "tenant",
            "targets",
            "version",
            "occurred_at",
            "plan",
            "priority",
            "user",
            "group",
        ],
    )?;
    let (kind, kind_name) = kind_from_json(m, prefix)?;
    let version = version_from_json(m, prefix)?;
    let targets = targets_from_json(m, prefix)?;
    let occurred_at_ms = occurred_at_from_json(m, prefix)?;
    let mut event = IdentityEvent {
        id: opt_str(m, prefix, "id")?,
        tenant: opt_str(m, prefix, "tenant")?,
        targets,
        occurred_at_ms,
        version,
        kind: kind as i32,
        user: None,
        group: None,
        plan: opt_bool(m, prefix, "plan", false)?,
        priority: priority_from_json(m, prefix)? as i32,
    };
    if kind.is_user() {
        if m.contains_key("group") {
            return Err(FieldError::new(
                join(prefix, "group"),
                format!("not allowed for kind {kind_name}"),
            ));
        }
        let u = m
            .get("user")
            .ok_or_else(|| FieldError::new(join(prefix, "user"), "required for user events"))?;
        event.user = Some(user_from_json(u, &join(prefix, "user"))?);
    } else {
        if m.contains_key("user") {
            return Err(FieldError::new(
                join(prefix, "user"),
                format!("not allowed for kind {kind_name}"),
            ));
        }
        let g = m
            .get("group")
            .ok_or_else(|| FieldError::new(join(prefix, "group"), "required for group events"))?;
        event.group = Some(group_from_json(g, &join(prefix, "group"))?);
    }
    Ok(event)
}

/// The optional `priority`: `interactive` or `bulk` (absent: ingest decides, see
/// `resolve_priority`).
fn priority_from_json(m: &Map<String, Value>, prefix: &str) -> Result<Priority, FieldError> {
    match m.get("priority") {
        None | Some(Value::Null) => Ok(Priority::Unspecified),
        Some(Value::String(s)) if s == "interactive" => Ok(Priority::Interactive),
        Some(Value::String(s)) if s == "bulk" => Ok(Priority::Bulk),
        Some(_) => Err(FieldError::new(
            join(prefix, "priority"),
            "must be \"interactive\" (a person is waiting) or \"bulk\"",
        )),
    }
}

/// The required `kind`, and its name as sent (for errors about the user or group).
fn kind_from_json(m: &Map<String, Value>, prefix: &str) -> Result<(EventKind, String), FieldError> {
    let kind_name = match m.get("kind") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            return Err(FieldError::new(
                join(prefix, "kind"),
                format!("required; one of: {}", EventKind::API_NAMES),
            ));
        }
        Some(_) => return Err(FieldError::new(join(prefix, "kind"), "must be a string")),
    };
    let kind = EventKind::from_api_name(&kind_name).ok_or_else(|| {
        FieldError::new(
            join(prefix, "kind"),
            format!(
                "unknown kind {kind_name:?}; one of: {}",
                EventKind::API_NAMES
            ),
        )
    })?;
    Ok((kind, kind_name))
}

/// The required `version`, the subject's revision (zero is refused by [`validate`]).
fn version_from_json(m: &Map<String, Value>, prefix: &str) -> Result<u64, FieldError> {
    match m.get("version") {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            FieldError::new(
                join(prefix, "version"),
                "must be a positive integer (the subject's revision)",
            )
        }),
        None | Some(Value::Null) => Err(FieldError::new(
            join(prefix, "version"),
            "required: a positive integer that grows per subject",
        )),
        Some(_) => Err(FieldError::new(
            join(prefix, "version"),
            "must be a positive integer, not a string",
        )),
    }
}

/// The optional `targets`: target ids (empty when absent).
fn targets_from_json(m: &Map<String, Value>, prefix: &str) -> Result<Vec<String>, FieldError> {
    match m.get("targets") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.as_str().map(str::to_owned).ok_or_else(|| {
                    FieldError::new(join(prefix, &format!("targets[{i}]")), "must be a string")
                })
            })
            .collect(),
        Some(_) => Err(FieldError::new(
            join(prefix, "targets"),
            "must be an array of target ids",
        )),
    }
}

/// The optional `occurred_at`, RFC 3339 or milliseconds since the epoch (0 when absent).
fn occurred_at_from_json(m: &Map<String, Value>, prefix: &str) -> Result<i64, FieldError> {
    match m.get("occurred_at") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => parse_rfc3339_ms(s).ok_or_else(|| {
            FieldError::new(
                join(prefix, "occurred_at"),
                "must be an RFC 3339 timestamp like 2026-11-28T10:00:00Z",
            )
        }),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            FieldError::new(
                join(prefix, "occurred_at"),
                "must be milliseconds since the epoch or RFC 3339",
            )
        }),
        Some(_) => Err(FieldError::new(
            join(prefix, "occurred_at"),
            "must be an RFC 3339 timestamp",
        )),
    }
}

fn user_from_json(v: &Value, prefix: &str) -> Result<UserState, FieldError> {
    let m = obj(v, prefix)?;
    check_keys(
        m,
        prefix,
        &[
            "id",
            "userName",
            "displayName",
            "name",
            "emails",
            "phoneNumbers",
            "active",
            "title",
            "department",
            "employeeNumber",
            "locale",
            "timezone",
            "preferredLanguage",
            "attributes",
        ],
    )?;
    let (given_name, family_name) = match m.get("name") {
        None | Some(Value::Null) => (String::new(), String::new()),
        Some(n) => {
            let p = join(prefix, "name");
            let nm = obj(n, &p)?;
            check_keys(nm, &p, &["givenName", "familyName"])?;
            (
                opt_str(nm, &p, "givenName")?,
                opt_str(nm, &p, "familyName")?,
            )
        }
    };
    let multi = |key: &str| -> Result<Vec<(String, String, bool)>, FieldError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let p = join(prefix, &format!("{key}[{i}]"));
                    let em = obj(e, &p)?;
                    check_keys(em, &p, &["value", "type", "primary"])?;
                    Ok((
                        opt_str(em, &p, "value")?,
                        opt_str(em, &p, "type")?,
                        opt_bool(em, &p, "primary", false)?,
                    ))
                })
                .collect(),
            Some(_) => Err(FieldError::new(join(prefix, key), "must be an array")),
        }
    };
    let attributes = match m.get("attributes") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(a)) => a
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(FieldError::new(
                    join(prefix, &format!("attributes.{k}")),
                    "must be a string",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(FieldError::new(
                join(prefix, "attributes"),
                "must be an object of strings",
            ));
        }
    };
    Ok(UserState {
        id: opt_str(m, prefix, "id")?,
        user_name: opt_str(m, prefix, "userName")?,
        display_name: opt_str(m, prefix, "displayName")?,
        given_name,
        family_name,
        emails: multi("emails")?
            .into_iter()
            .map(|(value, r#type, primary)| Email {
                value,
                r#type,
                primary,
            })
            .collect(),
        phone_numbers: multi("phoneNumbers")?
            .into_iter()
            .map(|(value, r#type, primary)| PhoneNumber {
                value,
                r#type,
                primary,
            })
            .collect(),
        active: opt_bool(m, prefix, "active", true)?,
        title: opt_str(m, prefix, "title")?,
        department: opt_str(m, prefix, "department")?,
        employee_number: opt_str(m, prefix, "employeeNumber")?,
        locale: opt_str(m, prefix, "locale")?,
        timezone: opt_str(m, prefix, "timezone")?,
        preferred_language: opt_str(m, prefix, "preferredLanguage")?,
        attributes,
    })
}

fn group_from_json(v: &Value, prefix: &str) -> Result<GroupState, FieldError> {
    let m = obj(v, prefix)?;
    check_keys(m, prefix, &["id", "displayName", "members"])?;
    let member_ids = match m.get("members") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_str().map(str::to_owned).ok_or_else(|| {
                    FieldError::new(
                        join(prefix, &format!("members[{i}]")),
                        "must be a user id (string)",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(FieldError::new(
                join(prefix, "members"),
                "must be an array of user ids",
            ));
        }
    };
    Ok(GroupState {
        id: opt_str(m, prefix, "id")?,
        display_name: opt_str(m, prefix, "displayName")?,
        member_ids,
    })
}

fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn check_len(field: String, value: &str) -> Result<(), FieldError> {
    if value.len() > MAX_STRING_LEN {
        return Err(FieldError::new(
            field,
            format!("longer than {MAX_STRING_LEN} bytes"),
        ));
    }
    Ok(())
}

fn required(field: String, value: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "required and must not be empty"));
    }
    check_len(field, value)
}

/// Validates one event (from either transport) against the API rules and the targets file.
/// `prefix` is the event's position in a batch (`events[2]`), or empty.
pub fn validate(
    event: &IdentityEvent,
    prefix: &str,
    targets: &TargetsFile,
) -> Result<(), FieldError> {
    let f = |name: &str| join(prefix, name);
    if !event.id.is_empty()
        && (event.id.len() > MAX_ID_LEN || !event.id.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(FieldError::new(
            f("id"),
            format!("must be 1–{MAX_ID_LEN} printable ASCII characters without spaces"),
        ));
    }
    required(f("tenant"), &event.tenant)?;
    if Priority::try_from(event.priority).is_err() {
        return Err(FieldError::new(
            f("priority"),
            "unknown priority; one of: interactive, bulk",
        ));
    }
    let kind = EventKind::try_from(event.kind).unwrap_or(EventKind::Unspecified);
    if kind == EventKind::Unspecified {
        return Err(FieldError::new(
            f("kind"),
            format!("unknown kind; one of: {}", EventKind::API_NAMES),
        ));
    }
    if event.version == 0 {
        return Err(FieldError::new(
            f("version"),
            "must be a positive integer (the subject's revision)",
        ));
    }
    if event.version > i64::MAX as u64 {
        return Err(FieldError::new(f("version"), "must be below 2^63"));
    }
    if kind.is_user() {
        if event.group.is_some() {
            return Err(FieldError::new(
                f("group"),
                format!("not allowed for kind {}", kind.api_name()),
            ));
        }
        let u = event
            .user
            .as_ref()
            .ok_or_else(|| FieldError::new(f("user"), "required for user events"))?;
        required(f("user.id"), &u.id)?;
        if kind == EventKind::UserUpserted {
            required(f("user.userName"), &u.user_name)?;
        }
        for (name, value) in [
            ("user.userName", &u.user_name),
            ("user.displayName", &u.display_name),
            ("user.name.givenName", &u.given_name),
            ("user.name.familyName", &u.family_name),
            ("user.title", &u.title),
            ("user.department", &u.department),
        ] {
            check_len(f(name), value)?;
        }
        for (i, e) in u.emails.iter().enumerate() {
            let field = f(&format!("user.emails[{i}].value"));
            required(field.clone(), &e.value)?;
            if !e.value.contains('@') {
                return Err(FieldError::new(field, "is not an e-mail address"));
            }
        }
        if u.emails.iter().filter(|e| e.primary).count() > 1 {
            return Err(FieldError::new(
                f("user.emails"),
                "at most one e-mail may be primary",
            ));
        }
        if u.phone_numbers.iter().filter(|e| e.primary).count() > 1 {
            return Err(FieldError::new(
                f("user.phoneNumbers"),
                "at most one phone number may be primary",
            ));
        }
    } else {
        if event.user.is_some() {
            return Err(FieldError::new(
                f("user"),
                format!("not allowed for kind {}", kind.api_name()),
            ));
        }
        let g = event
            .group
            .as_ref()
            .ok_or_else(|| FieldError::new(f("group"), "required for group events"))?;
        required(f("group.id"), &g.id)?;
        if kind == EventKind::GroupUpserted {
            required(f("group.displayName"), &g.display_name)?;
        }
        if g.member_ids.len() > MAX_GROUP_MEMBERS {
            return Err(FieldError::new(
                f("group.members"),
                format!("more than {MAX_GROUP_MEMBERS} members"),
            ));
        }
        for (i, m) in g.member_ids.iter().enumerate() {
            required(f(&format!("group.members[{i}]")), m)?;
        }
    }
    for (i, t) in event.targets.iter().enumerate() {
        let field = f(&format!("targets[{i}]"));
        let target = targets
            .target(t)
            .ok_or_else(|| FieldError::new(field.clone(), format!("unknown target {t:?}")))?;
        if !target.tenants.iter().any(|x| x == &event.tenant) {
            return Err(FieldError::new(
                field,
                format!("target {t:?} does not serve tenant {:?}", event.tenant),
            ));
        }
    }
    if event.targets.is_empty() && targets.targets_for_tenant(&event.tenant).next().is_none() {
        return Err(FieldError::new(
            f("tenant"),
            format!("no target serves tenant {:?}", event.tenant),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn targets() -> TargetsFile {
        TargetsFile::parse(
            "targets:\n  - id: t1\n    provider: scim\n    tenants: [acme]\n    base_url: http://x/scim/v2\n    auth: { kind: none }\n",
        )
        .expect("valid")
    }

    fn user_event() -> Value {
        json!({"kind": "user.upserted", "tenant": "acme", "version": 1,
               "user": {"id": "u1", "userName": "alice@example.com",
                        "name": {"givenName": "Alice", "familyName": "Liddell"},
                        "emails": [{"value": "alice@example.com", "type": "work", "primary": true}]}})
    }

    fn err_of(body: Value) -> FieldError {
        match events_from_json(&body) {
            Err(e) => e,
            Ok(events) => {
                let prefix = if body.is_array() { "events[0]" } else { "" };
                validate(&events[0], prefix, &targets()).expect_err("should be invalid")
            }
        }
    }

    #[test]
    fn accepts_single_batch_and_wrapped() {
        let one = events_from_json(&user_event()).expect("one");
        assert_eq!(one.len(), 1);
        assert_eq!(
            one[0].user.as_ref().map(|u| u.given_name.as_str()),
            Some("Alice")
        );
        validate(&one[0], "", &targets()).expect("valid");
        assert_eq!(
            events_from_json(&json!([user_event(), user_event()]))
                .expect("array")
                .len(),
            2
        );
        assert_eq!(
            events_from_json(&json!({"events": [user_event()]}))
                .expect("wrapped")
                .len(),
            1
        );
    }

    #[test]
    fn each_bad_input_names_its_field() {
        let mut missing_user_name = user_event();
        missing_user_name["user"]
            .as_object_mut()
            .map(|u| u.remove("userName"));
        assert_eq!(err_of(missing_user_name).field, "user.userName");

        let mut bad_version = user_event();
        bad_version["version"] = json!(-3);
        assert_eq!(err_of(bad_version).field, "version");
        let mut zero_version = user_event();
        zero_version["version"] = json!(0);
        assert_eq!(err_of(zero_version).field, "version");
        let mut str_version = user_event();
        str_version["version"] = json!("3");
        assert_eq!(err_of(str_version).field, "version");

        let mut unknown_target = user_event();
        unknown_target["targets"] = json!(["t1", "nope"]);
        let e = err_of(unknown_target);
        assert_eq!(e.field, "targets[1]");
        assert!(e.message.contains("nope"));

        let mut unknown_kind = user_event();
        unknown_kind["kind"] = json!("user.created");
        let e = err_of(unknown_kind);
        assert_eq!(e.field, "kind");
        assert!(e.message.contains("user.upserted"));

        let mut batch = json!([user_event(), user_event()]);
        batch[1]["user"]["emails"][0]["value"] = json!("not-an-email");
        assert_eq!(
            events_from_json(&batch)
                .and_then(|ev| {
                    ev.iter()
                        .enumerate()
                        .try_for_each(|(i, e)| validate(e, &format!("events[{i}]"), &targets()))
                })
                .expect_err("bad email")
                .field,
            "events[1].user.emails[0].value"
        );

        let mut typo = user_event();
        typo["user"]["usrName"] = json!("x");
        assert_eq!(err_of(typo).field, "user.usrName");

        let mut other_tenant = user_event();
        other_tenant["tenant"] = json!("globex");
        assert_eq!(err_of(other_tenant).field, "tenant");
    }

    #[test]
    fn an_empty_member_name_is_named_too() {
        let e = events_from_json(&json!({"di": "g1", "": 24})).expect_err("empty key");
        assert_eq!(e.field, "body");
        let mut nested = user_event();
        nested["user"][""] = json!(1);
        assert_eq!(events_from_json(&nested).expect_err("nested").field, "user");
    }

    #[test]
    fn group_events() {
        let g = json!({"kind": "group.upserted", "tenant": "acme", "version": 2,
                       "group": {"id": "g1", "displayName": "Eng", "members": ["u1", "u2"]}});
        let ev = events_from_json(&g).expect("group");
        validate(&ev[0], "", &targets()).expect("valid");
        assert_eq!(ev[0].group.as_ref().map(|g| g.member_ids.len()), Some(2));
        let mut bad = g.clone();
        bad["group"]["members"] = json!(["u1", 7]);
        assert_eq!(err_of(bad).field, "group.members[1]");
        let del =
            json!({"kind": "group.deleted", "tenant": "acme", "version": 3, "group": {"id": "g1"}});
        validate(&events_from_json(&del).expect("del")[0], "", &targets()).expect("valid delete");
    }

    #[test]
    fn occurred_at_parses() {
        let mut e = user_event();
        e["occurred_at"] = json!("2026-11-28T10:00:00Z");
        assert_eq!(
            events_from_json(&e).expect("ok")[0].occurred_at_ms,
            1_795_860_000_000
        );
        e["occurred_at"] = json!("yesterday");
        assert_eq!(err_of(e).field, "occurred_at");
    }
}
