//! Comparing a desired SCIM resource with what a provider holds: which attributes differ
//! (ignoring what servers add, case where SCIM ignores it, order in multi-valued attributes),
//! which the desired state cleared, and whether an update is due at all — so no profile sends
//! a write that would change nothing.

use serde_json::Value;

/// The RFC 7643 schema URNs, as the SCIM crate defines them.
pub use scimrelay_scim::{ENTERPRISE_USER_SCHEMA as ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};

/// Whether `current` (what the provider holds) differs from `desired` in any attribute the
/// desired state sets. Attributes the provider adds (id, meta, defaults) are ignored; strings
/// that SCIM treats case-insensitively (userName, e-mails) compare case-insensitively;
/// multi-valued attributes compare as sets.
pub fn differs(desired: &Value, current: &Value) -> bool {
    let (Value::Object(d), Value::Object(c)) = (desired, current) else {
        return desired != current;
    };
    d.iter().any(|(k, dv)| {
        if k == "schemas" || k == "id" {
            return false;
        }
        let cv = c.get(k).or_else(|| {
            c.iter()
                .find(|(ck, _)| ck.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
        });
        match cv {
            None => !is_empty(dv),
            Some(cv) => value_differs(k, dv, cv),
        }
    })
}

/// A PATCH of one `replace` (with its path) per top-level attribute of `desired` that
/// `current` does not hold ([`differs`]), whole values; `schemas` and `id` are never sent, and
/// `members`, which a group's membership PATCH changes by a diff, is left out.
/// Nothing is removed: a profile that clears attributes adds its `remove` operations
/// ([`cleared`]).
pub fn replace_patch(desired: &Value, current: &Value) -> scimrelay_scim::PatchBuilder {
    let mut patch = scimrelay_scim::PatchBuilder::new();
    if let Value::Object(d) = desired {
        for (k, v) in d {
            if matches!(k.as_str(), "schemas" | "id" | "members") {
                continue;
            }
            let mut single = serde_json::Map::new();
            single.insert(k.clone(), v.clone());
            if differs(&Value::Object(single), current) {
                patch = patch.replace(Some(k), v.clone());
            }
        }
    }
    patch
}

/// The enterprise extension's `employeeNumber`, as a PATCH path.
pub const ENTERPRISE_EMPLOYEE_NUMBER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber";
/// The enterprise extension's `department`, as a PATCH path.
pub const ENTERPRISE_DEPARTMENT: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";

/// The attribute of `resource` at a path of the form `name.givenName` or `urn:…:User:department`; keys match
/// case-insensitively, as SCIM attribute names do.
pub fn at<'v>(resource: &'v Value, path: &str) -> Option<&'v Value> {
    fn key<'v>(v: &'v Value, k: &str) -> Option<&'v Value> {
        let m = v.as_object()?;
        m.get(k).or_else(|| {
            m.iter()
                .find(|(ck, _)| ck.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
        })
    }
    if path.starts_with("urn:") {
        let (schema, attr) = path.rsplit_once(':')?;
        return key(key(resource, schema)?, attr);
    }
    match path.split_once('.') {
        Some((parent, sub)) => key(key(resource, parent)?, sub),
        None => key(resource, path),
    }
}

/// The attributes among `managed` that `current` (what the provider holds) has a value for and
/// `desired` leaves out or empty, in `managed`'s order.
///
/// An event carries the *whole* desired state (docs/design.md, "Events are desired state"): an
/// attribute it leaves out was cleared at the platform, and converging means clearing it at the
/// provider too. [`differs`] only looks at what the desired state sets, so an update is due when
/// either reports something ([`out_of_date`]). Each profile passes the attributes its provider
/// lets a client clear; one the provider requires or fills with a default of its own
/// (Salesforce's locale, say) must not be listed, or every update would try to remove it again.
pub fn cleared<'m>(desired: &Value, current: &Value, managed: &[&'m str]) -> Vec<&'m str> {
    managed
        .iter()
        .filter(|path| {
            at(desired, path).is_none_or(is_empty)
                && at(current, path).is_some_and(|v| !is_empty(v))
        })
        .copied()
        .collect()
}

/// Whether an update is due: `current` differs from `desired` in an attribute `desired` sets,
/// or holds one of `managed` that `desired` cleared.
pub fn out_of_date(desired: &Value, current: &Value, managed: &[&str]) -> bool {
    differs(desired, current) || !cleared(desired, current, managed).is_empty()
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_empty),
        _ => false,
    }
}

fn value_differs(key: &str, d: &Value, c: &Value) -> bool {
    match (d, c) {
        (Value::Object(_), Value::Object(_)) => differs(d, c),
        (Value::Array(da), Value::Array(ca)) => {
            da.len() != ca.len()
                || da
                    .iter()
                    .any(|x| !ca.iter().any(|y| !value_differs(key, x, y)))
        }
        (Value::String(ds), Value::String(cs)) if matches!(key, "userName" | "value") => {
            !ds.eq_ignore_ascii_case(cs)
        }
        _ => d != c,
    }
}
