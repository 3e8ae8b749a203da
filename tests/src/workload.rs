//! A mixed, adversarial workload for delivery tests: creates, updates, deactivations, deletes,
//! group changes, duplicated events and versions sent out of order — deterministic per seed.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The events of a workload, in the order to send them.
pub struct Workload {
    /// Events to send (duplicates included; some versions out of order).
    pub events: Vec<Value>,
    /// Distinct events (what the final state derives from).
    pub distinct: usize,
}

/// One user event as the workloads send it (`evt-<id>-v<version>`; an upsert carries a full user).
pub fn user_event(id: &str, version: u64, kind: &str, tenant: &str) -> Value {
    let mut e = json!({"id": format!("evt-{id}-v{version}"), "kind": kind, "tenant": tenant, "version": version,
                       "user": {"id": id}});
    if kind == "user.upserted" {
        e["user"] = json!({"id": id, "userName": format!("{id}@example.com"),
                           "displayName": format!("User {id} v{version}"),
                           "name": {"givenName": "Given", "familyName": format!("{id}-v{version}")},
                           "emails": [{"value": format!("{id}@example.com"), "type": "work", "primary": true}],
                           "title": format!("Title v{version}")});
    }
    e
}

/// Builds about `target_events` events for `tenant`, user ids prefixed with `prefix`.
/// `allow_delete` lets users end deleted (the target's delete policy must be `delete` for the
/// state check to expect removal).
pub fn mixed(seed: u64, target_events: usize, tenant: &str, prefix: &str) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    // About 1.9 events per user (create, 60% update, 30% deactivate or delete).
    let users = (target_events * 10 / 19).max(4);
    let mut per_user: Vec<Vec<Value>> = Vec::new();
    let mut keepers = Vec::new();
    for i in 0..users {
        let id = format!("{prefix}u{i:05}");
        let mut evs = vec![user_event(&id, 1, "user.upserted", tenant)];
        let mut v = 1;
        if rng.random_bool(0.6) {
            v += 1;
            evs.push(user_event(&id, v, "user.upserted", tenant));
        }
        let roll: f64 = rng.random();
        if roll < 0.2 {
            v += 1;
            evs.push(user_event(&id, v, "user.deactivated", tenant));
            keepers.push(id.clone());
        } else if roll < 0.3 {
            v += 1;
            evs.push(user_event(&id, v, "user.deleted", tenant));
        } else {
            keepers.push(id.clone());
        }
        per_user.push(evs);
    }
    // Groups over users that are never deleted.
    let groups = (users / 25).max(1);
    for g in 0..groups {
        let id = format!("{prefix}g{g:03}");
        let mut members: Vec<&String> = keepers
            .choose_multiple(&mut rng, keepers.len().min(8))
            .collect();
        let mut evs = vec![
            json!({"id": format!("evt-{id}-v1"), "kind": "group.upserted", "tenant": tenant, "version": 1,
                                  "group": {"id": id, "displayName": format!("Group {id}"), "members": members}}),
        ];
        members.truncate(members.len() / 2);
        evs.push(json!({"id": format!("evt-{id}-v2"), "kind": "group.upserted", "tenant": tenant, "version": 2,
                        "group": {"id": id, "displayName": format!("Group {id} renamed"), "members": members}}));
        if g % 4 == 3 {
            evs.push(json!({"id": format!("evt-{id}-v3"), "kind": "group.deleted", "tenant": tenant, "version": 3,
                            "group": {"id": id}}));
        }
        per_user.push(evs);
    }
    let distinct = per_user.iter().map(Vec::len).sum();
    // Interleave subjects; within a subject mostly in order, sometimes swapped (out of order).
    let mut events = Vec::new();
    for evs in &mut per_user {
        if evs.len() > 1 && rng.random_bool(0.15) {
            let i = rng.random_range(0..evs.len() - 1);
            evs.swap(i, i + 1);
        }
    }
    let mut cursors = vec![0usize; per_user.len()];
    let mut live: Vec<usize> = (0..per_user.len()).collect();
    while !live.is_empty() {
        let pick = rng.random_range(0..live.len());
        let s = live[pick];
        let e = per_user[s][cursors[s]].clone();
        if rng.random_bool(0.05) {
            events.push(e.clone()); // a duplicate
        }
        events.push(e);
        cursors[s] += 1;
        if cursors[s] == per_user[s].len() {
            live.swap_remove(pick);
        }
    }
    Workload { events, distinct }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_mixed_and_sized() {
        let a = mixed(7, 300, "acme", "x");
        let b = mixed(7, 300, "acme", "x");
        assert_eq!(a.events, b.events);
        assert!(
            a.events.len() >= a.distinct,
            "{} {}",
            a.events.len(),
            a.distinct
        );
        assert!(
            (255..=345).contains(&a.distinct),
            "about the size asked for: {}",
            a.distinct
        );
        let kinds: std::collections::HashSet<&str> =
            a.events.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
    }
}
