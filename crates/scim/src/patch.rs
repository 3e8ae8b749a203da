//! PATCH request bodies (RFC 7644 §3.5.2), built operation by operation.
//!
//! The builder writes what the RFC says and nothing more: lowercase `op`, `path` only when
//! given, `value` only when given. Which form a provider accepts (explicit single-attribute
//! paths for AWS, a value object without path for Salesforce, value-filter paths or
//! remove-with-value for members) is the provider profile's choice, so every form can be built.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The schema URN of a PATCH request body.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The kind of a PATCH operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchOpKind {
    /// Adds values (or sets a missing attribute).
    Add,
    /// Replaces values.
    Replace,
    /// Removes values.
    Remove,
}

/// One operation of a PATCH request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOperation {
    /// add, replace or remove.
    pub op: PatchOpKind,
    /// The attribute path (`active`, `name.givenName`, `members[value eq "x"]`); absent means
    /// the value is an object of attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The value; absent for a remove by path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// Builds a PATCH request body operation by operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    /// An empty PATCH.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends any operation.
    pub fn op(mut self, op: PatchOpKind, path: Option<&str>, value: Option<Value>) -> Self {
        self.ops.push(PatchOperation {
            op,
            path: path.map(str::to_owned),
            value,
        });
        self
    }

    /// `{"op":"add","path":path,"value":value}` (no `path` when `None`).
    pub fn add(self, path: Option<&str>, value: Value) -> Self {
        self.op(PatchOpKind::Add, path, Some(value))
    }

    /// `{"op":"replace","path":path,"value":value}` (no `path` when `None`).
    pub fn replace(self, path: Option<&str>, value: Value) -> Self {
        self.op(PatchOpKind::Replace, path, Some(value))
    }

    /// `{"op":"remove","path":path}`, with `value` when given (e.g. the members to remove).
    pub fn remove(self, path: &str, value: Option<Value>) -> Self {
        self.op(PatchOpKind::Remove, Some(path), value)
    }

    /// The operations so far.
    pub fn operations(&self) -> &[PatchOperation] {
        &self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation was added (callers skip sending an empty PATCH).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The request body: `{"schemas":[PatchOp], "Operations":[…]}`.
    pub fn build(&self) -> Value {
        json!({ "schemas": [PATCH_OP_SCHEMA], "Operations": self.ops })
    }
}

/// The member objects of a group PATCH value: `[{"value": id}, …]`.
pub fn member_values<'a>(ids: impl IntoIterator<Item = &'a str>) -> Value {
    Value::Array(ids.into_iter().map(|id| json!({ "value": id })).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_rfc_body_with_every_op() {
        let body = PatchBuilder::new()
            .replace(Some("active"), json!(false))
            .add(None, json!({"title": "Engineer"}))
            .remove("members[value eq \"u1\"]", None)
            .remove("members", Some(member_values(["u2", "u3"])))
            .build();
        assert_eq!(
            body,
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "replace", "path": "active", "value": false},
                    {"op": "add", "value": {"title": "Engineer"}},
                    {"op": "remove", "path": "members[value eq \"u1\"]"},
                    {"op": "remove", "path": "members", "value": [{"value": "u2"}, {"value": "u3"}]}
                ]
            })
        );
    }

    #[test]
    fn empty_builder_and_counts() {
        let b = PatchBuilder::new();
        assert!(b.is_empty());
        assert_eq!(
            b.build(),
            json!({"schemas": [PATCH_OP_SCHEMA], "Operations": []})
        );
        let b = b.add(Some("members"), member_values(["a"]));
        assert_eq!(b.len(), 1);
        assert_eq!(b.operations()[0].op, PatchOpKind::Add);
    }

    #[test]
    fn operation_round_trips() {
        let op: PatchOperation = serde_json::from_value(
            json!({"op": "replace", "path": "name.givenName", "value": "Ann"}),
        )
        .expect("valid op");
        assert_eq!(op.op, PatchOpKind::Replace);
        assert_eq!(op.path.as_deref(), Some("name.givenName"));
        assert_eq!(
            serde_json::to_value(&op).expect("serializes"),
            json!({"op": "replace", "path": "name.givenName", "value": "Ann"})
        );
    }
}
