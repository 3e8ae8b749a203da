//! The delivery invariant, checked from the outside: given the events accepted, what must the
//! simulator hold? (docs/design.md, "Events are desired state": per subject, the state of the
//! highest accepted version; no object twice.)

use std::collections::HashMap;

use serde_json::Value;

/// The highest-version event of each subject (`user:ID` / `group:ID`).
pub fn final_events(events: &[Value]) -> HashMap<String, Value> {
    let mut finals: HashMap<String, Value> = HashMap::new();
    for e in events {
        let kind = e["kind"].as_str().unwrap_or_default();
        let key = if kind.starts_with("user.") {
            format!("user:{}", e["user"]["id"].as_str().unwrap_or_default())
        } else {
            format!("group:{}", e["group"]["id"].as_str().unwrap_or_default())
        };
        let v = e["version"].as_u64().unwrap_or(0);
        if finals
            .get(&key)
            .is_none_or(|f| f["version"].as_u64().unwrap_or(0) < v)
        {
            finals.insert(key, e.clone());
        }
    }
    finals
}

fn by_external_id(objects: &[Value]) -> (HashMap<String, &Value>, Vec<String>) {
    let mut map = HashMap::new();
    let mut dups = Vec::new();
    for o in objects {
        let ext = o["externalId"].as_str().unwrap_or_default().to_owned();
        if map.insert(ext.clone(), o).is_some() {
            dups.push(ext);
        }
    }
    (map, dups)
}

/// The objects of `tenant` at a target shared by several tenants (externalId
/// `<tenant>:<id>`), with the prefix removed, so [`check`] can compare them with the tenant's
/// events.
pub fn of_tenant(objects: &[Value], tenant: &str) -> Vec<Value> {
    let prefix = format!("{tenant}:");
    objects
        .iter()
        .filter_map(|o| {
            let ext = o["externalId"].as_str()?.strip_prefix(&prefix)?.to_owned();
            let mut o = o.clone();
            o["externalId"] = Value::String(ext);
            Some(o)
        })
        .collect()
}

/// How a target represents the platform's subjects, for [`check_with`].
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// user.deleted removes the user (else it deactivates).
    pub delete_removes: bool,
    /// Appended to every userName by the target (Salesforce's `username_suffix`).
    pub user_name_suffix: String,
    /// The target does not store `title` (so it is not compared).
    pub skip_title: bool,
    /// Groups are matched by displayName (Salesforce's existing public groups), not externalId.
    pub groups_by_display_name: bool,
}

/// Compares the simulator's users and groups with the final events; returns every mismatch
/// in words (empty = the invariant holds). `delete_policy_delete` says whether user.deleted
/// removes the user (else it deactivates).
pub fn check(
    users: &[Value],
    groups: &[Value],
    events: &[Value],
    delete_policy_delete: bool,
) -> Vec<String> {
    let opts = CheckOptions {
        delete_removes: delete_policy_delete,
        ..Default::default()
    };
    check_with(users, groups, events, &opts)
}

/// [`check`] for targets that represent subjects their own way.
pub fn check_with(
    users: &[Value],
    groups: &[Value],
    events: &[Value],
    opts: &CheckOptions,
) -> Vec<String> {
    let delete_policy_delete = opts.delete_removes;
    let finals = final_events(events);
    let (users_by_ext, dup_users) = by_external_id(users);
    let (groups_by_ext, dup_groups) = if opts.groups_by_display_name {
        let mut map = HashMap::new();
        for e in events.iter().filter(|e| e["kind"] == "group.upserted") {
            let id = e["group"]["id"].as_str().unwrap_or_default().to_owned();
            if let Some(g) = groups
                .iter()
                .find(|g| g["displayName"] == e["group"]["displayName"])
            {
                map.insert(id, g);
            }
        }
        (map, Vec::new())
    } else {
        by_external_id(groups)
    };
    let mut problems: Vec<String> = dup_users
        .iter()
        .map(|d| format!("user {d} exists more than once"))
        .collect();
    problems.extend(
        dup_groups
            .iter()
            .map(|d| format!("group {d} exists more than once")),
    );
    let id_to_ext: HashMap<&str, &str> = users
        .iter()
        .filter_map(|u| Some((u["id"].as_str()?, u["externalId"].as_str()?)))
        .collect();
    for (key, e) in &finals {
        let kind = e["kind"].as_str().unwrap_or_default();
        let (_, id) = key.split_once(':').unwrap_or_default();
        match kind {
            "user.upserted" | "user.deactivated" => {
                let Some(u) = users_by_ext.get(id) else {
                    if kind == "user.upserted" {
                        problems.push(format!("user {id} missing (version {})", e["version"]));
                    }
                    continue;
                };
                let want_active =
                    kind == "user.upserted" && e["user"]["active"].as_bool().unwrap_or(true);
                if u["active"].as_bool() != Some(want_active) {
                    problems.push(format!(
                        "user {id}: active is {} but version {} wants {want_active}",
                        u["active"], e["version"]
                    ));
                }
                if kind == "user.upserted" {
                    let user_name = e["user"]["userName"]
                        .as_str()
                        .map(|n| Value::from(format!("{n}{}", opts.user_name_suffix)))
                        .unwrap_or(Value::Null);
                    let title = if opts.skip_title {
                        Value::Null
                    } else {
                        e["user"]["title"].clone()
                    };
                    for (path, want) in [
                        ("userName", &user_name),
                        ("displayName", &e["user"]["displayName"]),
                        ("title", &title),
                    ] {
                        if !want.is_null()
                            && u[path].as_str().map(str::to_lowercase)
                                != want.as_str().map(str::to_lowercase)
                        {
                            problems.push(format!(
                                "user {id}: {path} is {} but version {} wants {want}",
                                u[path], e["version"]
                            ));
                        }
                    }
                    // The event is the whole state: a title it leaves out was cleared, and the
                    // target must not keep an older one.
                    if !opts.skip_title
                        && title.as_str().is_none_or(str::is_empty)
                        && u["title"].as_str().is_some_and(|t| !t.is_empty())
                    {
                        problems.push(format!(
                            "user {id}: title is {} but version {} cleared it",
                            u["title"], e["version"]
                        ));
                    }
                    for n in ["givenName", "familyName"] {
                        let want = &e["user"]["name"][n];
                        if !want.is_null() && &u["name"][n] != want {
                            problems.push(format!(
                                "user {id}: name.{n} is {} but version {} wants {want}",
                                u["name"][n], e["version"]
                            ));
                        }
                    }
                }
            }
            "user.deleted" => match (users_by_ext.get(id), delete_policy_delete) {
                (Some(_), true) => {
                    problems.push(format!("user {id} still exists after user.deleted"))
                }
                (Some(u), false) if u["active"].as_bool() != Some(false) => {
                    problems.push(format!(
                        "user {id} still active after user.deleted (policy deactivate)"
                    ));
                }
                _ => {}
            },
            "group.upserted" => {
                let Some(g) = groups_by_ext.get(id) else {
                    problems.push(format!("group {id} missing (version {})", e["version"]));
                    continue;
                };
                if g["displayName"] != e["group"]["displayName"] {
                    problems.push(format!(
                        "group {id}: displayName is {} but wants {}",
                        g["displayName"], e["group"]["displayName"]
                    ));
                }
                let mut have: Vec<&str> = g["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|x| x["value"].as_str())
                            .map(|rid| *id_to_ext.get(rid).unwrap_or(&rid))
                            .collect()
                    })
                    .unwrap_or_default();
                // A member whose own final state is "not at the target" cannot be a member.
                let mut want: Vec<&str> = e["group"]["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(Value::as_str)
                            .filter(|u| users_by_ext.contains_key(*u))
                            .collect()
                    })
                    .unwrap_or_default();
                have.sort_unstable();
                want.sort_unstable();
                if have != want {
                    problems.push(format!(
                        "group {id}: members {have:?} but version {} wants {want:?}",
                        e["version"]
                    ));
                }
            }
            "group.deleted" => {
                if groups_by_ext.contains_key(id) {
                    problems.push(format!("group {id} still exists after group.deleted"));
                }
            }
            _ => problems.push(format!("{key}: unknown kind {kind}")),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upsert(version: u64, title: Option<&str>) -> Value {
        let mut user = json!({"id": "u1", "userName": "u1@example.com", "active": true});
        if let Some(t) = title {
            user["title"] = json!(t);
        }
        json!({"kind": "user.upserted", "version": version, "user": user})
    }

    #[test]
    fn a_title_the_final_event_cleared_must_be_gone() {
        let events = [upsert(1, Some("Engineer")), upsert(2, None)];
        let stale = [
            json!({"id": "1", "externalId": "u1", "userName": "u1@example.com",
                            "active": true, "title": "Engineer"}),
        ];
        let problems = check(&stale, &[], &events, false);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("cleared"), "{problems:?}");
        let cleared = [
            json!({"id": "1", "externalId": "u1", "userName": "u1@example.com",
                              "active": true}),
        ];
        assert!(check(&cleared, &[], &events, false).is_empty());
        let opts = CheckOptions {
            skip_title: true,
            ..Default::default()
        };
        assert!(check_with(&stale, &[], &events, &opts).is_empty());
    }
}
