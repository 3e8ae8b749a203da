//! The RFC 7644 §3.4.2.2 filter language: a recursive-descent parser (precedence `not` > `and` >
//! `or`, JSON string escaping, case-insensitive keywords and attribute names), the PATCH path
//! grammar of §3.5.2, and the evaluator that matches both against stored resources.

use std::cmp::Ordering;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::schema::{self, Kind};

/// A parse failure, with the byte offset where the parser gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at offset {offset}")]
pub struct ParseError {
    /// What the parser expected or found.
    pub message: String,
    /// Byte offset in the input.
    pub offset: usize,
}

/// `[schemaURN:]attr[.sub]`, as written in a filter or PATCH path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The extension schema URN; `None` for the core schema (a core URN prefix is dropped).
    pub schema: Option<String>,
    /// The top-level attribute name.
    pub attr: String,
    /// The sub-attribute name.
    pub sub: Option<String>,
}

/// Comparison operators of RFC 7644 Table 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// equal
    Eq,
    /// not equal
    Ne,
    /// contains
    Co,
    /// starts with
    Sw,
    /// ends with
    Ew,
    /// greater than
    Gt,
    /// greater than or equal
    Ge,
    /// less than
    Lt,
    /// less than or equal
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "co" => Self::Co,
            "sw" => Self::Sw,
            "ew" => Self::Ew,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            "lt" => Self::Lt,
            "le" => Self::Le,
            _ => return None,
        })
    }
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr op value`.
    Compare {
        /// The attribute compared.
        path: AttrPath,
        /// The operator.
        op: CompareOp,
        /// The literal (string, number, boolean or null).
        value: Value,
    },
    /// `attr pr`.
    Present(AttrPath),
    /// `a and b`.
    And(Box<Filter>, Box<Filter>),
    /// `a or b`.
    Or(Box<Filter>, Box<Filter>),
    /// `not (a)`.
    Not(Box<Filter>),
    /// `attr[filter]`: some element of the multi-valued attribute matches the inner filter.
    ValuePath {
        /// The multi-valued attribute.
        path: AttrPath,
        /// Evaluated with each element as the root.
        filter: Box<Filter>,
    },
}

/// A PATCH operation target: `attrPath`, or `attr[valFilter]` optionally followed by `.sub`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute (with `sub` only when there is no value filter).
    pub path: AttrPath,
    /// The value selection filter, evaluated against each element.
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter (`emails[type eq "work"].value`).
    pub sub_after_filter: Option<String>,
}

/// Parses a `filter` query parameter.
pub fn parse_filter(input: &str) -> Result<Filter, ParseError> {
    let mut p = Parser { s: input, pos: 0 };
    let f = p.or_expr()?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.err("unexpected trailing input"));
    }
    Ok(f)
}

/// Parses a PATCH operation `path`.
pub fn parse_patch_path(input: &str) -> Result<PatchPath, ParseError> {
    let mut p = Parser { s: input, pos: 0 };
    p.skip_ws();
    let mut path = p.attr_path()?;
    let mut filter = None;
    let mut sub_after_filter = None;
    if p.peek() == Some('[') {
        if path.sub.is_some() {
            return Err(p.err("a value filter must follow a top-level attribute"));
        }
        p.pos += 1;
        filter = Some(p.or_expr()?);
        p.skip_ws();
        p.expect(']')?;
        if p.peek() == Some('.') {
            p.pos += 1;
            let name = p.name()?;
            sub_after_filter = Some(name);
        }
    }
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.err("unexpected trailing input"));
    }
    if let Some(schema) = &path.schema
        && path.attr.is_empty()
    {
        return Err(ParseError {
            message: format!("missing attribute after '{schema}'"),
            offset: 0,
        });
    }
    normalise_core(&mut path);
    Ok(PatchPath {
        path,
        filter,
        sub_after_filter,
    })
}

fn normalise_core(path: &mut AttrPath) {
    if path.schema.as_deref().is_some_and(|s| {
        s.eq_ignore_ascii_case(schema::USER_SCHEMA) || s.eq_ignore_ascii_case(schema::GROUP_SCHEMA)
    }) {
        path.schema = None;
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> ParseError {
        ParseError {
            message: message.to_string(),
            offset: self.pos,
        }
    }

    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start_matches([' ', '\t', '\n', '\r']);
        self.pos = self.s.len() - trimmed.len();
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            Ok(())
        } else {
            Err(self.err(&format!("expected '{c}'")))
        }
    }

    /// Reads a keyword-like word without consuming it; returns it if followed by a delimiter.
    fn peek_word(&self) -> &str {
        let rest = self.rest();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    }

    /// Consumes `kw` (case-insensitive) when it is the next whole word.
    fn keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let word = self.peek_word();
        if word.eq_ignore_ascii_case(kw) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn or_expr(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.and_expr()?;
        while self.keyword("or") {
            let right = self.and_expr()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, ParseError> {
        self.skip_ws();
        let save = self.pos;
        if self.keyword("not") {
            self.skip_ws();
            if self.peek() == Some('(') {
                self.pos += 1;
                let inner = self.or_expr()?;
                self.skip_ws();
                self.expect(')')?;
                return Ok(Filter::Not(Box::new(inner)));
            }
            // An attribute that happens to be called "not".
            self.pos = save;
        }
        if self.peek() == Some('(') {
            self.pos += 1;
            let inner = self.or_expr()?;
            self.skip_ws();
            self.expect(')')?;
            return Ok(inner);
        }
        self.attr_expr()
    }

    fn attr_expr(&mut self) -> Result<Filter, ParseError> {
        let mut path = self.attr_path()?;
        normalise_core(&mut path);
        if self.peek() == Some('[') {
            if path.sub.is_some() {
                return Err(self.err("a value filter must follow a top-level attribute"));
            }
            self.pos += 1;
            let inner = self.or_expr()?;
            self.skip_ws();
            self.expect(']')?;
            return Ok(Filter::ValuePath {
                path,
                filter: Box::new(inner),
            });
        }
        self.skip_ws();
        let word = self.peek_word().to_string();
        if word.is_empty() {
            return Err(self.err("expected an operator after the attribute"));
        }
        self.pos += word.len();
        if word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let Some(op) = CompareOp::parse(&word) else {
            self.pos -= word.len();
            return Err(self.err(&format!("unknown operator '{word}'")));
        };
        self.skip_ws();
        let value = self.comp_value()?;
        if value.is_boolean() && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Err(self.err("a boolean can only be compared with eq or ne"));
        }
        if value.is_null() && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Err(self.err("null can only be compared with eq or ne"));
        }
        Ok(Filter::Compare { path, op, value })
    }

    fn comp_value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some('"') => self.string(),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let rest = self.rest();
                let end = rest
                    .find(|c: char| {
                        !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
                    })
                    .unwrap_or(rest.len());
                let text = &rest[..end];
                let value: Value =
                    serde_json::from_str(text).map_err(|_| self.err("invalid number"))?;
                self.pos += end;
                Ok(value)
            }
            _ => {
                let word = self.peek_word().to_ascii_lowercase();
                let value = match word.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    _ => return Err(self.err("expected a string, number, true, false or null")),
                };
                self.pos += word.len();
                Ok(value)
            }
        }
    }

    /// A JSON string literal (RFC 7159 escaping: `\"`, `\\`, `\/`, `\n`, `\uXXXX`, …).
    fn string(&mut self) -> Result<Value, ParseError> {
        let rest = self.rest();
        let bytes = rest.as_bytes();
        let mut i = 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    let literal = &rest[..=i];
                    let value: String = serde_json::from_str(literal)
                        .map_err(|e| self.err(&format!("invalid string: {e}")))?;
                    self.pos += i + 1;
                    return Ok(Value::String(value));
                }
                _ => i += 1,
            }
        }
        Err(self.err("unterminated string"))
    }

    fn name(&mut self) -> Result<String, ParseError> {
        let rest = self.rest();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$')))
            .unwrap_or(rest.len());
        if end == 0 {
            return Err(self.err("expected an attribute name"));
        }
        let name = rest[..end].to_string();
        self.pos += end;
        Ok(name)
    }

    fn attr_path(&mut self) -> Result<AttrPath, ParseError> {
        self.skip_ws();
        let rest = self.rest();
        let end = rest
            .find(|c: char| {
                !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$' | ':' | '.'))
            })
            .unwrap_or(rest.len());
        let token = rest[..end].to_string();
        let token = token.as_str();
        if token.is_empty() {
            return Err(self.err("expected an attribute path"));
        }
        let start = self.pos;
        self.pos += end;
        let (schema, local) = if token.len() > 4 && token[..4].eq_ignore_ascii_case("urn:") {
            match token.rfind(':') {
                Some(i) => (Some(token[..i].to_string()), &token[i + 1..]),
                None => (None, token),
            }
        } else {
            (None, token)
        };
        let mut parts = local.split('.');
        let attr = parts.next().unwrap_or_default().to_string();
        let sub = parts.next().map(str::to_string);
        let bad = |m: &str| ParseError {
            message: m.to_string(),
            offset: start,
        };
        if parts.next().is_some() {
            return Err(bad("an attribute path has at most one sub-attribute"));
        }
        if attr.is_empty() || attr.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("invalid attribute name"));
        }
        if sub.as_deref().is_some_and(str::is_empty) {
            return Err(bad("empty sub-attribute name"));
        }
        Ok(AttrPath { schema, attr, sub })
    }
}

/// Looks up a key case-insensitively (exact match first: stored keys are canonical).
pub fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The container object a path starts from: the resource, or its extension object.
fn container<'a>(root: &'a Map<String, Value>, path: &AttrPath) -> Option<&'a Map<String, Value>> {
    match &path.schema {
        None => Some(root),
        Some(urn) => get_ci(root, urn)?.as_object(),
    }
}

/// Every value a path reaches, flattening multi-valued attributes; a complex value without a
/// sub-attribute stands for its `value` sub-attribute.
fn values<'a>(root: &'a Map<String, Value>, path: &AttrPath, out: &mut Vec<&'a Value>) {
    let Some(obj) = container(root, path) else {
        return;
    };
    let Some(top) = get_ci(obj, &path.attr) else {
        return;
    };
    let mut push = |v: &'a Value| match (&path.sub, v) {
        (Some(sub), Value::Object(o)) => match get_ci(o, sub) {
            Some(Value::Array(items)) => out.extend(items.iter()),
            Some(x) => out.push(x),
            None => {}
        },
        (Some(_), _) => {}
        (None, Value::Object(o)) => {
            if let Some(x) = get_ci(o, "value") {
                out.push(x);
            }
        }
        (None, x) => out.push(x),
    };
    match top {
        Value::Array(items) => items.iter().for_each(&mut push),
        v => push(v),
    }
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn as_datetime(s: &str) -> Option<OffsetDateTime> {
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn compare_one(actual: &Value, op: CompareOp, expected: &Value, exact: bool) -> bool {
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => {
            let (a, e) = if exact {
                (a.clone(), e.clone())
            } else {
                (a.to_lowercase(), e.to_lowercase())
            };
            let ord = || match (as_datetime(&a), as_datetime(&e)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => a.cmp(&e),
            };
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Co => a.contains(&e),
                CompareOp::Sw => a.starts_with(&e),
                CompareOp::Ew => a.ends_with(&e),
                CompareOp::Gt => ord() == Ordering::Greater,
                CompareOp::Ge => ord() != Ordering::Less,
                CompareOp::Lt => ord() == Ordering::Less,
                CompareOp::Le => ord() != Ordering::Greater,
            }
        }
        (Value::Number(a), Value::Number(e)) => {
            let (Some(a), Some(e)) = (a.as_f64(), e.as_f64()) else {
                return false;
            };
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Gt => a > e,
                CompareOp::Ge => a >= e,
                CompareOp::Lt => a < e,
                CompareOp::Le => a <= e,
                CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
            }
        }
        (Value::Bool(a), Value::Bool(e)) => match op {
            CompareOp::Eq => a == e,
            CompareOp::Ne => a != e,
            _ => false,
        },
        _ => false,
    }
}

/// Does the resource (or multi-valued element) `root` of `kind` match `filter`?
pub fn matches(kind: Kind, root: &Map<String, Value>, filter: &Filter) -> bool {
    match filter {
        Filter::And(a, b) => matches(kind, root, a) && matches(kind, root, b),
        Filter::Or(a, b) => matches(kind, root, a) || matches(kind, root, b),
        Filter::Not(a) => !matches(kind, root, a),
        Filter::Present(path) => {
            let mut vs = Vec::new();
            values(root, path, &mut vs);
            if vs.is_empty() {
                // A complex attribute without a `value` sub-attribute (e.g. `name pr`).
                return container(root, path)
                    .and_then(|o| get_ci(o, &path.attr))
                    .is_some_and(|v| path.sub.is_none() && present(v));
            }
            vs.into_iter().any(present)
        }
        Filter::Compare { path, op, value } => {
            let mut vs = Vec::new();
            values(root, path, &mut vs);
            vs.retain(|v| !v.is_null());
            let exact = schema::case_exact(
                kind,
                path.schema.as_deref(),
                &path.attr,
                path.sub.as_deref(),
            );
            match (op, value) {
                (CompareOp::Eq, Value::Null) => vs.is_empty(),
                (CompareOp::Ne, Value::Null) => !vs.is_empty(),
                (CompareOp::Ne, _) => !vs
                    .iter()
                    .any(|v| compare_one(v, CompareOp::Eq, value, exact)),
                _ => vs.iter().any(|v| compare_one(v, *op, value, exact)),
            }
        }
        Filter::ValuePath { path, filter } => {
            let Some(obj) = container(root, path) else {
                return false;
            };
            match get_ci(obj, &path.attr) {
                Some(Value::Array(items)) => items.iter().any(|item| {
                    item.as_object()
                        .is_some_and(|o| matches_element(kind, path, o, filter))
                }),
                Some(Value::Object(o)) => matches_element(kind, path, o, filter),
                _ => false,
            }
        }
    }
}

/// Evaluates a value filter against one element of a multi-valued attribute; inner attribute
/// names are sub-attributes of `parent`, so case-exactness is looked up there.
pub fn matches_element(
    kind: Kind,
    parent: &AttrPath,
    element: &Map<String, Value>,
    filter: &Filter,
) -> bool {
    match filter {
        Filter::And(a, b) => {
            matches_element(kind, parent, element, a) && matches_element(kind, parent, element, b)
        }
        Filter::Or(a, b) => {
            matches_element(kind, parent, element, a) || matches_element(kind, parent, element, b)
        }
        Filter::Not(a) => !matches_element(kind, parent, element, a),
        Filter::Present(p) => get_ci(element, &p.attr).is_some_and(present),
        Filter::Compare { path, op, value } => {
            let exact = schema::case_exact(
                kind,
                parent.schema.as_deref(),
                &parent.attr,
                Some(&path.attr),
            );
            let actual = get_ci(element, &path.attr).filter(|v| !v.is_null());
            match (op, value, actual) {
                (CompareOp::Eq, Value::Null, a) => a.is_none(),
                (CompareOp::Ne, Value::Null, a) => a.is_some(),
                (CompareOp::Ne, _, None) => true,
                (_, _, None) => false,
                (_, _, Some(a)) => compare_one(a, *op, value, exact),
            }
        }
        Filter::ValuePath { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Filter {
        match parse_filter(s) {
            Ok(f) => f,
            Err(e) => panic!("parse {s:?}: {e}"),
        }
    }

    fn path(attr: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            schema: None,
            attr: attr.into(),
            sub: sub.map(Into::into),
        }
    }

    fn eq(attr: &str, v: &str) -> Filter {
        Filter::Compare {
            path: path(attr, None),
            op: CompareOp::Eq,
            value: json!(v),
        }
    }

    #[test]
    fn parses_simple_compare() {
        assert_eq!(p(r#"userName eq "bjensen""#), eq("userName", "bjensen"));
        assert_eq!(
            p(r#"  userName   EQ   "bjensen"  "#),
            eq("userName", "bjensen")
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let f = p(r#"a eq "1" or b eq "2" and c eq "3""#);
        assert_eq!(
            f,
            Filter::Or(
                Box::new(eq("a", "1")),
                Box::new(Filter::And(Box::new(eq("b", "2")), Box::new(eq("c", "3"))))
            )
        );
        let f = p(r#"(a eq "1" or b eq "2") and c eq "3""#);
        assert_eq!(
            f,
            Filter::And(
                Box::new(Filter::Or(Box::new(eq("a", "1")), Box::new(eq("b", "2")))),
                Box::new(eq("c", "3"))
            )
        );
    }

    #[test]
    fn not_and_present() {
        let f = p(r#"not (title pr) and userType eq "x""#);
        assert_eq!(
            f,
            Filter::And(
                Box::new(Filter::Not(Box::new(Filter::Present(path("title", None))))),
                Box::new(eq("userType", "x"))
            )
        );
    }

    #[test]
    fn string_escapes() {
        let f = p(r#"displayName eq "say \"hi\" \\ back\/slash \u00e9""#);
        assert_eq!(f, eq("displayName", "say \"hi\" \\ back/slash é"));
        // A quote-escaped value containing " and " and "or" does not split the expression.
        let f = p(r#"displayName eq "a\" or b eq \"c""#);
        assert_eq!(f, eq("displayName", "a\" or b eq \"c"));
    }

    #[test]
    fn urn_and_sub_attributes() {
        let f = p(r#"urn:ietf:params:scim:schemas:core:2.0:User:name.givenName sw "Ba""#);
        assert_eq!(
            f,
            Filter::Compare {
                path: path("name", Some("givenName")),
                op: CompareOp::Sw,
                value: json!("Ba")
            }
        );
        let f = p(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7""#,
        );
        let Filter::Compare { path, .. } = f else {
            panic!("compare")
        };
        assert_eq!(path.schema.as_deref(), Some(schema::ENTERPRISE_USER_SCHEMA));
        assert_eq!(path.attr, "employeeNumber");
    }

    #[test]
    fn value_path_and_literals() {
        let f = p(r#"emails[type eq "work" and value co "@example.com"] or active eq true"#);
        let Filter::Or(left, right) = f else {
            panic!("or")
        };
        assert!(matches!(*left, Filter::ValuePath { .. }));
        assert_eq!(
            *right,
            Filter::Compare {
                path: path("active", None),
                op: CompareOp::Eq,
                value: json!(true)
            }
        );
        assert!(parse_filter("n gt 10.5").is_ok());
        assert!(parse_filter("manager eq null").is_ok());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "userName",
            r#"userName xx "a""#,
            r#"userName eq "a"#,
            r#"userName eq a"#,
            r#"(userName eq "a""#,
            r#"userName eq "a")"#,
            r#"userName eq "a" and"#,
            r#"active gt true"#,
            r#"a.b.c eq "x""#,
            r#"emails[type eq "work""#,
        ] {
            assert!(parse_filter(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn patch_paths() {
        let pp =
            parse_patch_path(r#"emails[type eq "work"].value"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pp.path, path("emails", None));
        assert_eq!(pp.filter, Some(eq("type", "work")));
        assert_eq!(pp.sub_after_filter.as_deref(), Some("value"));
        let pp = parse_patch_path("name.givenName").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pp.path, path("name", Some("givenName")));
        let pp = parse_patch_path(r#"members[value eq "x"]"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pp.filter, Some(eq("value", "x")));
        assert!(parse_patch_path("emails[").is_err());
        assert!(parse_patch_path("").is_err());
    }

    fn user() -> Map<String, Value> {
        let v = json!({
            "userName": "BJensen",
            "externalId": "Ext-1",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true,
            "title": "",
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@home.org", "type": "home"}
            ],
            "meta": {"created": "2024-01-02T03:04:05Z", "lastModified": "2024-03-01T00:00:00+01:00"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984"}
        });
        match v {
            Value::Object(o) => o,
            _ => unreachable!(),
        }
    }

    fn m(s: &str) -> bool {
        matches(Kind::User, &user(), &p(s))
    }

    #[test]
    fn evaluates() {
        assert!(
            m(r#"userName eq "bjensen""#),
            "userName is case-insensitive"
        );
        assert!(!m(r#"externalId eq "ext-1""#), "externalId is case-exact");
        assert!(m(r#"externalId eq "Ext-1""#));
        assert!(m(r#"USERNAME Eq "BJENSEN""#));
        assert!(m(r#"name.familyName co "ens""#));
        assert!(m(r#"userName sw "bj" and userName ew "sen""#));
        assert!(m(r#"userName ne "x""#));
        assert!(!m(r#"userName ne "bjensen""#));
        assert!(m(r#"emails.value ew "home.org""#));
        assert!(m(r#"emails co "example.com""#));
        assert!(m(r#"emails[type eq "work" and value co "@example.com"]"#));
        assert!(!m(r#"emails[type eq "home" and value co "@example.com"]"#));
        assert!(m(r#"active eq true"#));
        assert!(!m(r#"active eq false"#));
        assert!(m(r#"name pr"#));
        assert!(!m(r#"title pr"#), "empty string is not present");
        assert!(!m(r#"nickName pr"#));
        assert!(m(r#"not (nickName pr)"#));
        assert!(m(r#"nickName eq null"#));
        assert!(m(r#"userName eq "nobody" or name.givenName eq "barbara""#));
        assert!(!m(
            r#"userName eq "nobody" or name.givenName eq "barbara" and active eq false"#
        ));
        assert!(m(
            r#"(userName eq "nobody" or name.givenName eq "barbara") and active eq true"#
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#
        ));
    }

    #[test]
    fn compares_dates_as_instants() {
        assert!(m(r#"meta.created gt "2024-01-01T00:00:00Z""#));
        assert!(!m(r#"meta.created lt "2024-01-02T04:00:00+01:00""#));
        assert!(m(r#"meta.created ge "2024-01-02T03:04:05Z""#));
        assert!(
            m(r#"meta.created le "2024-01-02T04:04:05+01:00""#),
            "same instant in another offset"
        );
        assert!(
            m(r#"meta.lastModified lt "2024-03-01T00:00:00Z""#),
            "+01:00 is an hour earlier"
        );
        assert!(!m(r#"meta.created gt "2025-01-01T00:00:00Z""#));
    }
}
