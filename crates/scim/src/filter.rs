//! SCIM filter expressions (RFC 7644 §3.4.2.2), built as values and rendered with correct
//! escaping.
//!
//! Filter values are JSON strings: a `"` or `\` in a user name must be escaped, or the filter
//! matches the wrong object (or none) and the connector creates a duplicate. Compound
//! expressions are parenthesised whenever `and` and `or` meet, because Salesforce does not give
//! `and` precedence over `or` (docs/providers/salesforce.md, "What Salesforce documents"); the
//! extra parentheses are harmless elsewhere.

use std::fmt;

/// `attr eq "value"`, with the value escaped as a JSON string — the one filter every provider
/// supports.
pub fn filter_eq(attr: &str, value: &str) -> String {
    Filter::eq(attr, value).to_string()
}

/// Escapes a string as the inside of a JSON string literal (RFC 8259 §7): `\` and `"` are
/// backslash-escaped, control characters use their short or `\u00XX` form, everything else —
/// including non-ASCII text — is kept as is.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A comparison operator of a SCIM filter.
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
    /// The operator as written in a filter.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }
}

/// A comparison value: a string (quoted and escaped), a boolean, a number or null.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    /// A string, rendered as an escaped JSON string.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// `null`.
    Null,
}

impl From<&str> for FilterValue {
    fn from(v: &str) -> Self {
        FilterValue::Str(v.to_owned())
    }
}
impl From<String> for FilterValue {
    fn from(v: String) -> Self {
        FilterValue::Str(v)
    }
}
impl From<&String> for FilterValue {
    fn from(v: &String) -> Self {
        FilterValue::Str(v.clone())
    }
}
impl From<bool> for FilterValue {
    fn from(v: bool) -> Self {
        FilterValue::Bool(v)
    }
}
impl From<i64> for FilterValue {
    fn from(v: i64) -> Self {
        FilterValue::Int(v)
    }
}

impl fmt::Display for FilterValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterValue::Str(s) => write!(f, "\"{}\"", escape_value(s)),
            FilterValue::Bool(b) => write!(f, "{b}"),
            FilterValue::Int(i) => write!(f, "{i}"),
            FilterValue::Null => f.write_str("null"),
        }
    }
}

/// A SCIM filter expression; `to_string()` renders it for the `filter` query parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr op value`.
    Compare {
        /// The attribute path, e.g. `userName` or `emails.value`.
        attr: String,
        /// The operator.
        op: CompareOp,
        /// The value.
        value: FilterValue,
    },
    /// `attr pr` (attribute present).
    Present(String),
    /// `a and b`.
    And(Box<Filter>, Box<Filter>),
    /// `a or b`.
    Or(Box<Filter>, Box<Filter>),
    /// `not (a)`.
    Not(Box<Filter>),
    /// `(a)`, explicit grouping.
    Group(Box<Filter>),
}

impl Filter {
    /// `attr op value`.
    pub fn compare(attr: &str, op: CompareOp, value: impl Into<FilterValue>) -> Filter {
        Filter::Compare {
            attr: attr.to_owned(),
            op,
            value: value.into(),
        }
    }
    /// `attr eq value`.
    pub fn eq(attr: &str, value: impl Into<FilterValue>) -> Filter {
        Self::compare(attr, CompareOp::Eq, value)
    }
    /// `attr ne value`.
    pub fn ne(attr: &str, value: impl Into<FilterValue>) -> Filter {
        Self::compare(attr, CompareOp::Ne, value)
    }
    /// `attr co value`.
    pub fn co(attr: &str, value: impl Into<FilterValue>) -> Filter {
        Self::compare(attr, CompareOp::Co, value)
    }
    /// `attr sw value`.
    pub fn sw(attr: &str, value: impl Into<FilterValue>) -> Filter {
        Self::compare(attr, CompareOp::Sw, value)
    }
    /// `attr ew value`.
    pub fn ew(attr: &str, value: impl Into<FilterValue>) -> Filter {
        Self::compare(attr, CompareOp::Ew, value)
    }
    /// `attr pr`.
    pub fn pr(attr: &str) -> Filter {
        Filter::Present(attr.to_owned())
    }
    /// `self and other`.
    pub fn and(self, other: Filter) -> Filter {
        Filter::And(Box::new(self), Box::new(other))
    }
    /// `self or other`.
    pub fn or(self, other: Filter) -> Filter {
        Filter::Or(Box::new(self), Box::new(other))
    }
    /// `(self)`.
    pub fn grouped(self) -> Filter {
        Filter::Group(Box::new(self))
    }
}

impl std::ops::Not for Filter {
    type Output = Filter;

    /// `not (self)`: `!Filter::eq("active", false)`.
    fn not(self) -> Filter {
        Filter::Not(Box::new(self))
    }
}

/// Writes an operand of `and`/`or`, parenthesised when it is the other logical operator.
fn operand(f: &mut fmt::Formatter<'_>, child: &Filter, parent_is_and: bool) -> fmt::Result {
    let needs_parens = match child {
        Filter::And(..) => !parent_is_and,
        Filter::Or(..) => parent_is_and,
        _ => false,
    };
    if needs_parens {
        write!(f, "({child})")
    } else {
        write!(f, "{child}")
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Compare { attr, op, value } => write!(f, "{attr} {} {value}", op.as_str()),
            Filter::Present(attr) => write!(f, "{attr} pr"),
            Filter::And(a, b) => {
                operand(f, a, true)?;
                f.write_str(" and ")?;
                operand(f, b, true)
            }
            Filter::Or(a, b) => {
                operand(f, a, false)?;
                f.write_str(" or ")?;
                operand(f, b, false)
            }
            Filter::Not(inner) => match inner.as_ref() {
                Filter::Group(_) => write!(f, "not {inner}"),
                _ => write!(f, "not ({inner})"),
            },
            Filter::Group(inner) => write!(f, "({inner})"),
        }
    }
}

/// A value-filter path for PATCH, e.g. `members[value eq "2819c223"]` or, with a
/// sub-attribute, `emails[type eq "work"].value` (RFC 7644 §3.5.2).
pub fn value_path(attr: &str, filter: &Filter, sub_attr: Option<&str>) -> String {
    match sub_attr {
        Some(sub) => format!("{attr}[{filter}].{sub}"),
        None => format!("{attr}[{filter}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq_quotes_plain_values() {
        assert_eq!(filter_eq("userName", "bjensen"), r#"userName eq "bjensen""#);
        assert_eq!(filter_eq("externalId", ""), r#"externalId eq """#);
    }

    #[test]
    fn eq_escapes_quotes_and_backslashes() {
        assert_eq!(filter_eq("userName", r#"a"b"#), r#"userName eq "a\"b""#);
        assert_eq!(
            filter_eq("userName", r"DOMAIN\bob"),
            r#"userName eq "DOMAIN\\bob""#
        );
        // A value crafted to break out of the string stays inside it.
        assert_eq!(
            filter_eq("userName", r#"x" or userName pr or userName eq "y"#),
            r#"userName eq "x\" or userName pr or userName eq \"y""#
        );
        // A trailing backslash must not escape the closing quote.
        assert_eq!(filter_eq("userName", "a\\"), r#"userName eq "a\\""#);
    }

    #[test]
    fn eq_keeps_unicode_and_escapes_controls() {
        assert_eq!(
            filter_eq("displayName", "Zoë Ångström 山田"),
            "displayName eq \"Zoë Ångström 山田\""
        );
        assert_eq!(filter_eq("displayName", "😀"), "displayName eq \"😀\"");
        assert_eq!(filter_eq("x", "a\nb\tc\u{1}"), r#"x eq "a\nb\tc\u0001""#);
    }

    #[test]
    fn escaped_value_round_trips_as_json() {
        for v in [r#"a"b"#, r"c:\dir\", "tab\there", "é\u{7f}\u{1f}", "\"\\\""] {
            let literal = format!("\"{}\"", escape_value(v));
            let back: String = serde_json::from_str(&literal).expect("valid JSON string");
            assert_eq!(back, v);
        }
    }

    #[test]
    fn builder_renders_every_operator() {
        assert_eq!(Filter::ne("title", "x").to_string(), r#"title ne "x""#);
        assert_eq!(
            Filter::co("userName", "jen").to_string(),
            r#"userName co "jen""#
        );
        assert_eq!(
            Filter::sw("userName", "J").to_string(),
            r#"userName sw "J""#
        );
        assert_eq!(
            Filter::ew("userName", "n").to_string(),
            r#"userName ew "n""#
        );
        assert_eq!(Filter::pr("title").to_string(), "title pr");
        assert_eq!(Filter::eq("active", true).to_string(), "active eq true");
        assert_eq!(
            Filter::compare("x", CompareOp::Ge, 3i64).to_string(),
            "x ge 3"
        );
        assert_eq!(Filter::eq("x", FilterValue::Null).to_string(), "x eq null");
        assert_eq!(
            (!Filter::eq("active", false)).to_string(),
            "not (active eq false)"
        );
        assert_eq!(
            (!Filter::pr("a").or(Filter::pr("b")).grouped()).to_string(),
            "not (a pr or b pr)"
        );
    }

    #[test]
    fn mixed_and_or_is_parenthesised() {
        let f = Filter::eq("id", "g1").and(Filter::eq("members", "u1"));
        assert_eq!(f.to_string(), r#"id eq "g1" and members eq "u1""#);
        let f = Filter::pr("a").or(Filter::pr("b")).and(Filter::pr("c"));
        assert_eq!(f.to_string(), "(a pr or b pr) and c pr");
        let f = Filter::pr("a").and(Filter::pr("b")).or(Filter::pr("c"));
        assert_eq!(f.to_string(), "(a pr and b pr) or c pr");
        let f = Filter::pr("a").and(Filter::pr("b")).and(Filter::pr("c"));
        assert_eq!(f.to_string(), "a pr and b pr and c pr");
        let f = Filter::pr("a").and(Filter::pr("b")).grouped();
        assert_eq!(f.to_string(), "(a pr and b pr)");
    }

    #[test]
    fn value_paths() {
        assert_eq!(
            value_path("members", &Filter::eq("value", "2819c223"), None),
            r#"members[value eq "2819c223"]"#
        );
        assert_eq!(
            value_path("emails", &Filter::eq("type", "work"), Some("value")),
            r#"emails[type eq "work"].value"#
        );
    }
}
