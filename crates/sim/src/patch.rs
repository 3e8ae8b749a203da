//! RFC 7644 §3.5.2 PATCH: `add`, `replace` and `remove`, with or without `path`, on simple,
//! complex and multi-valued attributes, including value-filter paths such as
//! `emails[type eq "work"].value` and `members[value eq "id"]`.

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::filter::{self, AttrPath, CompareOp, Filter, PatchPath};
use crate::schema::{self, Kind, PATCH_OP_SCHEMA};

/// The three PATCH operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Add values (append to multi-valued attributes).
    Add,
    /// Replace values.
    Replace,
    /// Remove values.
    Remove,
}

/// One parsed PATCH operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// What to do.
    pub op: Op,
    /// Where; `None` means the value object names the attributes.
    pub path: Option<PatchPath>,
    /// The value, required for add and replace.
    pub value: Option<Value>,
}

/// Parses a PatchOp request body.
pub fn parse_request(body: &Value) -> Result<Vec<Operation>, ScimError> {
    let Some(obj) = body.as_object() else {
        return Err(ScimError::invalid_syntax(
            "a PATCH body must be a JSON object",
        ));
    };
    let schemas_ok = filter::get_ci(obj, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|s| {
                s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP_SCHEMA))
            })
        });
    if !schemas_ok {
        return Err(ScimError::invalid_syntax(format!(
            "'schemas' must contain \"{PATCH_OP_SCHEMA}\""
        )));
    }
    let Some(ops) = filter::get_ci(obj, "Operations").and_then(Value::as_array) else {
        return Err(ScimError::invalid_syntax("'Operations' must be an array"));
    };
    if ops.is_empty() {
        return Err(ScimError::invalid_syntax("'Operations' must not be empty"));
    }
    ops.iter()
        .enumerate()
        .map(|(i, raw)| {
            let Some(raw) = raw.as_object() else {
                return Err(ScimError::invalid_syntax(format!(
                    "Operations[{i}] must be an object"
                )));
            };
            let op = match filter::get_ci(raw, "op")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("add") => Op::Add,
                Some("replace") => Op::Replace,
                Some("remove") => Op::Remove,
                _ => {
                    return Err(ScimError::invalid_syntax(format!(
                        "Operations[{i}].op must be \"add\", \"replace\" or \"remove\""
                    )));
                }
            };
            let path = match filter::get_ci(raw, "path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) => Some(filter::parse_patch_path(p).map_err(|e| {
                    ScimError::invalid_path(format!("Operations[{i}].path {p:?}: {e}"))
                })?),
                Some(_) => {
                    return Err(ScimError::invalid_path(format!(
                        "Operations[{i}].path must be a string"
                    )));
                }
            };
            let value = filter::get_ci(raw, "value").cloned();
            match (op, &path, &value) {
                (Op::Remove, None, _) => {
                    return Err(ScimError::no_target(format!(
                        "Operations[{i}]: remove needs a path"
                    )));
                }
                (Op::Add | Op::Replace, _, None) => {
                    return Err(ScimError::invalid_syntax(format!(
                        "Operations[{i}]: {op:?} needs a value"
                    )));
                }
                (Op::Add | Op::Replace, None, Some(v)) if !v.is_object() => {
                    return Err(ScimError::invalid_syntax(format!(
                        "Operations[{i}]: without a path the value must be an object of attributes"
                    )));
                }
                _ => {}
            }
            Ok(Operation { op, path, value })
        })
        .collect()
}

/// Applies operations to a resource body in place. The caller validates the result (required
/// attributes, types, uniqueness) and discards it on error, so a failed PATCH changes nothing.
pub fn apply(
    kind: Kind,
    resource: &mut Map<String, Value>,
    ops: &[Operation],
) -> Result<(), ScimError> {
    for op in ops {
        match &op.path {
            Some(path) => match whole_extension(kind, path) {
                Some(urn) => apply_extension(kind, resource, op.op, urn, op.value.as_ref())?,
                None => apply_path(kind, resource, op.op, path, op.value.clone())?,
            },
            None => {
                let Some(Value::Object(attrs)) = &op.value else {
                    continue;
                };
                for (key, value) in attrs {
                    if let Some((urn, _)) = schema::extension(kind, key) {
                        let Value::Object(ext) = value else {
                            return Err(ScimError::invalid_value(format!(
                                "extension '{urn}' must be an object"
                            )));
                        };
                        for (k, v) in ext {
                            let path = PatchPath {
                                path: parse_attr(&format!("{urn}:{k}"))?,
                                filter: None,
                                sub_after_filter: None,
                            };
                            apply_path(kind, resource, op.op, &path, Some(v.clone()))?;
                        }
                        continue;
                    }
                    let path = filter::parse_patch_path(key)
                        .map_err(|e| ScimError::invalid_path(format!("attribute {key:?}: {e}")))?;
                    apply_path(kind, resource, op.op, &path, Some(value.clone()))?;
                }
            }
        }
    }
    normalise_primary(resource);
    Ok(())
}

/// The canonical URN when a path names a whole extension (`urn:…:enterprise:2.0:User`), which
/// the path grammar otherwise reads as schema `urn:…:2.0` plus attribute `User`.
fn whole_extension(kind: Kind, path: &PatchPath) -> Option<&'static str> {
    if path.filter.is_some() || path.path.sub.is_some() {
        return None;
    }
    let full = match &path.path.schema {
        Some(schema) => format!("{schema}:{}", path.path.attr),
        None => path.path.attr.clone(),
    };
    schema::extension(kind, &full).map(|(urn, _)| urn)
}

/// add / replace / remove on a whole extension object: add and replace set each attribute of
/// the value object, remove drops the extension.
fn apply_extension(
    kind: Kind,
    resource: &mut Map<String, Value>,
    op: Op,
    urn: &str,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if op == Op::Remove {
        if let Some(key) = key_of(resource, urn) {
            resource.remove(&key);
        }
        return Ok(());
    }
    let Some(Value::Object(attrs)) = value else {
        return Err(ScimError::invalid_value(format!(
            "the value of extension '{urn}' must be an object"
        )));
    };
    for (k, v) in attrs {
        let path = PatchPath {
            path: parse_attr(&format!("{urn}:{k}"))?,
            filter: None,
            sub_after_filter: None,
        };
        apply_path(kind, resource, op, &path, Some(v.clone()))?;
    }
    Ok(())
}

fn parse_attr(s: &str) -> Result<AttrPath, ScimError> {
    filter::parse_patch_path(s)
        .map(|p| p.path)
        .map_err(|e| ScimError::invalid_path(format!("{s:?}: {e}")))
}

/// Finds a key case-insensitively and returns its stored spelling.
fn key_of(obj: &Map<String, Value>, name: &str) -> Option<String> {
    if obj.contains_key(name) {
        return Some(name.to_string());
    }
    obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

fn canonical_name(kind: Kind, schema: Option<&str>, name: &str) -> String {
    schema::attr_def(kind, schema, name).map_or_else(|| name.to_string(), |d| d.name.to_string())
}

/// One operation on one attribute path: checks the attribute may be written, finds the object
/// holding it (the resource or an extension), then adds, replaces or removes the attribute,
/// its filtered values or a sub-attribute.
fn apply_path(
    kind: Kind,
    resource: &mut Map<String, Value>,
    op: Op,
    path: &PatchPath,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let attr = &path.path.attr;
    let schema_urn = path.path.schema.as_deref();
    let def = writable_def(kind, schema_urn, attr)?;
    let Some(container) = container_of(kind, resource, schema_urn, op)? else {
        // Removing from an extension the resource does not have.
        return Ok(());
    };
    let multi = def.is_some_and(|d| d.multi);
    let key = key_of(container, attr).unwrap_or_else(|| canonical_name(kind, schema_urn, attr));

    if let Some(filter) = &path.filter {
        return apply_filtered(
            kind,
            container,
            &key,
            &path.path,
            filter,
            path.sub_after_filter.as_deref(),
            op,
            value,
        );
    }

    match (&path.path.sub, op) {
        (None, Op::Remove) => remove_attr(container, &key, value),
        (None, Op::Add) => add_attr(container, key, multi, value.unwrap_or(Value::Null)),
        (None, Op::Replace) => replace_attr(container, key, multi, value.unwrap_or(Value::Null)),
        (Some(sub), op) => {
            let sub_name = def
                .and_then(|d| d.sub_attr(sub))
                .map_or_else(|| sub.clone(), |d| d.name.to_string());
            apply_sub(container, key, &sub_name, multi, op, value);
        }
    }
    Ok(())
}

/// The schema definition of an attribute a PATCH may write (`None` for one the schema does
/// not define); an error for `id`, `meta`, `schemas` and read-only attributes.
fn writable_def(
    kind: Kind,
    schema_urn: Option<&str>,
    attr: &str,
) -> Result<Option<&'static schema::AttrDef>, ScimError> {
    if schema_urn.is_none()
        && ["id", "meta", "schemas"]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(attr))
    {
        return Err(ScimError::mutability(format!(
            "attribute '{attr}' is read-only"
        )));
    }
    let def = schema::attr_def(kind, schema_urn, attr);
    if def.is_some_and(|d| d.mutability == "readOnly") {
        return Err(ScimError::mutability(format!(
            "attribute '{attr}' is read-only"
        )));
    }
    Ok(def)
}

/// The object holding an attribute: the resource itself, or the extension object of
/// `schema_urn` (created for add and replace). `None` when removing from an extension the
/// resource does not have.
fn container_of<'a>(
    kind: Kind,
    resource: &'a mut Map<String, Value>,
    schema_urn: Option<&str>,
    op: Op,
) -> Result<Option<&'a mut Map<String, Value>>, ScimError> {
    let Some(urn) = schema_urn else {
        return Ok(Some(resource));
    };
    let Some((urn, _)) = schema::extension(kind, urn) else {
        return Err(ScimError::invalid_path(format!("unknown schema '{urn}'")));
    };
    let key = key_of(resource, urn).unwrap_or_else(|| urn.to_string());
    if op == Op::Remove && !resource.contains_key(&key) {
        return Ok(None);
    }
    let entry = resource
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(o) => Ok(Some(o)),
        _ => Ok(None),
    }
}

/// remove without a filter: the whole attribute, or only the values listed in `value` of a
/// multi-valued one (`"value":[{"value":"id"}]`).
fn remove_attr(container: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match (value, container.get_mut(key)) {
        (Some(v), Some(Value::Array(items))) => {
            let targets = as_list(v);
            items.retain(|item| !targets.iter().any(|t| same_element(item, t)));
            if items.is_empty() {
                container.remove(key);
            }
        }
        _ => {
            container.remove(key);
        }
    }
}

/// add without a filter: appends new values to a multi-valued attribute, merges into a
/// complex one, sets anything else.
fn add_attr(container: &mut Map<String, Value>, key: String, multi: bool, value: Value) {
    match container.get_mut(&key) {
        Some(Value::Array(items)) => {
            for v in as_list(value) {
                if !items.iter().any(|i| same_element(i, &v)) {
                    items.push(v);
                }
            }
        }
        Some(Value::Object(existing)) if value.is_object() => merge(existing, value),
        _ => {
            let v = if multi {
                Value::Array(as_list(value))
            } else {
                value
            };
            container.insert(key, v);
        }
    }
}

/// replace without a filter: merges into a single complex attribute, sets anything else (a
/// multi-valued attribute is replaced as a whole).
fn replace_attr(container: &mut Map<String, Value>, key: String, multi: bool, value: Value) {
    match container.get_mut(&key) {
        Some(Value::Object(existing)) if value.is_object() && !multi => merge(existing, value),
        _ => {
            let v = if multi {
                Value::Array(as_list(value))
            } else {
                value
            };
            container.insert(key, v);
        }
    }
}

/// Any operation on a sub-attribute (`name.givenName`, `emails.value`): applied to every value
/// of a multi-valued attribute, or to the complex value, created for add and replace.
fn apply_sub(
    container: &mut Map<String, Value>,
    key: String,
    sub_name: &str,
    multi: bool,
    op: Op,
    value: Option<Value>,
) {
    match container.get_mut(&key) {
        Some(Value::Array(items)) => {
            for item in items.iter_mut() {
                if let Value::Object(o) = item {
                    set_sub(o, sub_name, op, value.clone());
                }
            }
        }
        Some(Value::Object(o)) => set_sub(o, sub_name, op, value),
        _ if op == Op::Remove => {}
        _ => {
            let mut o = Map::new();
            set_sub(&mut o, sub_name, op, value);
            let v = if multi {
                Value::Array(vec![Value::Object(o)])
            } else {
                Value::Object(o)
            };
            container.insert(key, v);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_filtered(
    kind: Kind,
    container: &mut Map<String, Value>,
    key: &str,
    parent: &AttrPath,
    filter: &Filter,
    sub: Option<&str>,
    op: Op,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let items = match container.get_mut(key) {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ScimError::invalid_path(format!(
                "attribute '{key}' is not multi-valued"
            )));
        }
        None => {
            return match op {
                Op::Remove => Ok(()),
                Op::Replace => Err(ScimError::no_target(format!(
                    "no value of '{key}' matches the filter"
                ))),
                Op::Add => {
                    container.insert(key.to_string(), Value::Array(Vec::new()));
                    apply_filtered(kind, container, key, parent, filter, sub, op, value)
                }
            };
        }
    };
    let hits: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| {
            item.as_object()
                .is_some_and(|o| filter::matches_element(kind, parent, o, filter))
        })
        .map(|(i, _)| i)
        .collect();
    match (op, sub) {
        (Op::Remove, None) => {
            let mut i = 0;
            items.retain(|_| {
                let keep = !hits.contains(&i);
                i += 1;
                keep
            });
            if items.is_empty() {
                container.remove(key);
            }
        }
        (Op::Remove, Some(sub)) => {
            for &i in &hits {
                if let Some(Value::Object(o)) = items.get_mut(i) {
                    set_sub(o, sub, Op::Remove, None);
                }
            }
        }
        (Op::Replace | Op::Add, _) if hits.is_empty() => {
            if op == Op::Replace {
                return Err(ScimError::no_target(format!(
                    "no value of '{key}' matches the filter"
                )));
            }
            // Add through a filter that matches nothing creates the element the filter describes
            // (what Entra ID expects of `emails[type eq "work"].value`).
            let Some(mut element) = element_from_filter(filter) else {
                return Err(ScimError::no_target(format!(
                    "no value of '{key}' matches the filter"
                )));
            };
            match (sub, value) {
                (Some(sub), v) => set_sub(&mut element, sub, Op::Add, v),
                (None, Some(Value::Object(v))) => element.extend(v),
                (None, _) => {
                    return Err(ScimError::invalid_value(format!(
                        "'{key}' elements must be objects"
                    )));
                }
            }
            items.push(Value::Object(element));
        }
        (op, Some(sub)) => {
            for &i in &hits {
                if let Some(Value::Object(o)) = items.get_mut(i) {
                    set_sub(o, sub, op, value.clone());
                }
            }
        }
        (Op::Replace, None) => {
            for &i in &hits {
                if let Some(slot) = items.get_mut(i) {
                    *slot = value.clone().unwrap_or(Value::Null);
                }
            }
        }
        (Op::Add, None) => {
            for &i in &hits {
                if let (Some(Value::Object(o)), Some(Value::Object(v))) =
                    (items.get_mut(i), value.clone())
                {
                    o.extend(v);
                }
            }
        }
    }
    Ok(())
}

/// `type eq "work" and primary eq true` → `{"type":"work","primary":true}`; `None` for filters
/// that do not describe one element.
fn element_from_filter(filter: &Filter) -> Option<Map<String, Value>> {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } if path.sub.is_none() && !value.is_null() => {
            let mut m = Map::new();
            m.insert(path.attr.clone(), value.clone());
            Some(m)
        }
        Filter::And(a, b) => {
            let mut m = element_from_filter(a)?;
            m.extend(element_from_filter(b)?);
            Some(m)
        }
        _ => None,
    }
}

fn set_sub(obj: &mut Map<String, Value>, sub: &str, op: Op, value: Option<Value>) {
    let key = key_of(obj, sub).unwrap_or_else(|| sub.to_string());
    match (op, value) {
        (Op::Remove, _) | (_, None) => {
            obj.remove(&key);
        }
        (_, Some(v)) => {
            obj.insert(key, v);
        }
    }
}

fn merge(existing: &mut Map<String, Value>, value: Value) {
    if let Value::Object(v) = value {
        for (k, v) in v {
            let key = key_of(existing, &k).unwrap_or(k);
            existing.insert(key, v);
        }
    }
}

fn as_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Two elements of a multi-valued attribute are the same when their `value`s are (members,
/// emails), else when they are equal.
fn same_element(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            match (filter::get_ci(x, "value"), filter::get_ci(y, "value")) {
                (Some(vx), Some(vy)) => vx == vy,
                _ => x == y,
            }
        }
        _ => a == b,
    }
}

/// RFC 7643 §2.4: at most one element of a multi-valued attribute is `primary`; the last one set
/// wins.
fn normalise_primary(resource: &mut Map<String, Value>) {
    for v in resource.values_mut() {
        let Value::Array(items) = v else { continue };
        let primaries: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.get("primary") == Some(&Value::Bool(true)))
            .map(|(i, _)| i)
            .collect();
        if let Some((&keep, rest)) = primaries.split_last() {
            let _ = keep;
            for &i in rest {
                if let Some(Value::Object(o)) = items.get_mut(i) {
                    o.insert("primary".into(), Value::Bool(false));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(kind: Kind, mut res: Value, ops: Value) -> Result<Value, ScimError> {
        let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops});
        let ops = parse_request(&body)?;
        let Some(obj) = res.as_object_mut() else {
            panic!("object")
        };
        apply(kind, obj, &ops)?;
        Ok(res)
    }

    fn ok(kind: Kind, res: Value, ops: Value) -> Value {
        run(kind, res, ops).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn replace_with_and_without_path() {
        let u =
            json!({"userName": "a", "name": {"givenName": "A", "familyName": "F"}, "active": true});
        let out = ok(
            Kind::User,
            u.clone(),
            json!([{"op": "replace", "path": "name.givenName", "value": "B"}]),
        );
        assert_eq!(out["name"], json!({"givenName": "B", "familyName": "F"}));
        let out = ok(
            Kind::User,
            u.clone(),
            json!([{"op": "Replace", "value": {"active": false, "name": {"givenName": "C"}}}]),
        );
        assert_eq!(out["active"], false);
        assert_eq!(
            out["name"],
            json!({"givenName": "C", "familyName": "F"}),
            "sub-attributes not given stay"
        );
        let out = ok(
            Kind::User,
            u,
            json!([{"op": "replace", "value": {"name.familyName": "G"}}]),
        );
        assert_eq!(out["name"]["familyName"], "G");
    }

    #[test]
    fn value_filter_paths() {
        let u = json!({"userName": "a", "emails": [
            {"value": "w@x", "type": "work", "primary": true},
            {"value": "h@x", "type": "home"}]});
        let out = ok(
            Kind::User,
            u.clone(),
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w2@x"}]),
        );
        assert_eq!(out["emails"][0]["value"], "w2@x");
        assert_eq!(out["emails"][1]["value"], "h@x");
        let out = ok(
            Kind::User,
            u.clone(),
            json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
        );
        assert_eq!(
            out["emails"],
            json!([{"value": "w@x", "type": "work", "primary": true}])
        );
        let err = run(
            Kind::User,
            u.clone(),
            json!([{"op": "replace", "path": "emails[type eq \"other\"].value", "value": "z"}]),
        );
        assert_eq!(err.err().and_then(|e| e.scim_type), Some("noTarget"));
        let out = ok(
            Kind::User,
            json!({"userName": "a"}),
            json!([{"op": "add", "path": "emails[type eq \"work\"].value", "value": "n@x"}]),
        );
        assert_eq!(out["emails"], json!([{"type": "work", "value": "n@x"}]));
    }

    #[test]
    fn members_add_and_both_remove_forms() {
        let g = json!({"displayName": "g", "members": [{"value": "1"}, {"value": "2"}]});
        let out = ok(
            Kind::Group,
            g.clone(),
            json!([{"op": "add", "path": "members", "value": [{"value": "2"}, {"value": "3"}]}]),
        );
        assert_eq!(
            out["members"],
            json!([{"value": "1"}, {"value": "2"}, {"value": "3"}]),
            "no duplicates"
        );
        let out = ok(
            Kind::Group,
            g.clone(),
            json!([{"op": "remove", "path": "members[value eq \"1\"]"}]),
        );
        assert_eq!(out["members"], json!([{"value": "2"}]));
        let out = ok(
            Kind::Group,
            g.clone(),
            json!([{"op": "remove", "path": "members", "value": [{"value": "2"}]}]),
        );
        assert_eq!(out["members"], json!([{"value": "1"}]));
        let out = ok(Kind::Group, g, json!([{"op": "remove", "path": "members"}]));
        assert!(out.get("members").is_none());
    }

    #[test]
    fn add_without_path_appends_and_merges() {
        let u = json!({"userName": "a", "emails": [{"value": "1@x"}], "name": {"givenName": "A"}});
        let out = ok(
            Kind::User,
            u,
            json!([{"op": "add", "value": {"emails": [{"value": "2@x"}], "name": {"familyName": "F"}, "title": "T"}}]),
        );
        assert_eq!(out["emails"], json!([{"value": "1@x"}, {"value": "2@x"}]));
        assert_eq!(out["name"], json!({"givenName": "A", "familyName": "F"}));
        assert_eq!(out["title"], "T");
    }

    #[test]
    fn extension_paths() {
        let out = ok(
            Kind::User,
            json!({"userName": "a"}),
            json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"}]),
        );
        assert_eq!(out[schema::ENTERPRISE_USER_SCHEMA]["department"], "R&D");
    }

    #[test]
    fn rejects_bad_requests() {
        let e = |ops: Value| {
            run(Kind::User, json!({"userName": "a"}), ops)
                .err()
                .and_then(|e| e.scim_type)
        };
        assert_eq!(e(json!([{"op": "remove"}])), Some("noTarget"));
        assert_eq!(
            e(json!([{"op": "jump", "path": "x"}])),
            Some("invalidSyntax")
        );
        assert_eq!(
            e(json!([{"op": "add", "path": "emails[", "value": 1}])),
            Some("invalidPath")
        );
        assert_eq!(
            e(json!([{"op": "replace", "path": "id", "value": "x"}])),
            Some("mutability")
        );
        let no_schema = parse_request(&json!({"Operations": [{"op": "remove", "path": "x"}]}));
        assert_eq!(
            no_schema.err().and_then(|e| e.scim_type),
            Some("invalidSyntax")
        );
    }

    #[test]
    fn one_primary() {
        let u = json!({"userName": "a", "emails": [{"value": "1@x", "primary": true}]});
        let out = ok(
            Kind::User,
            u,
            json!([{"op": "add", "path": "emails", "value": [{"value": "2@x", "primary": true}]}]),
        );
        assert_eq!(out["emails"][0]["primary"], false);
        assert_eq!(out["emails"][1]["primary"], true);
    }
}
