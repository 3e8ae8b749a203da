//! Fuzzes the filter builder's escaping: any value — quotes, backslashes, control characters,
//! non-ASCII — put through `filter_eq` must parse back, with the simulator's independent RFC 7644
//! filter parser, to exactly `userName eq <that value>`. A broken escape would make the
//! connector's lookup match the wrong user (or none) and create a duplicate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimrelay_scim::{escape_value, filter_eq};
use scimrelay_sim::filter::{CompareOp, Filter, parse_filter};
use serde_json::Value;

fuzz_target!(|value: &str| {
    let escaped = escape_value(value);
    // No unescaped `"` and no raw control character may survive escaping.
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next();
                assert!(
                    matches!(next, Some('"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' | 'u')),
                    "dangling or invalid escape in {escaped:?}"
                );
            }
            '"' => panic!("unescaped quote in {escaped:?}"),
            c if (c as u32) < 0x20 => panic!("raw control character in {escaped:?}"),
            _ => {}
        }
    }
    // As a JSON string literal it must decode to the original value.
    let literal = format!("\"{escaped}\"");
    let decoded: String = serde_json::from_str(&literal).expect("escaped value is a JSON string");
    assert_eq!(decoded, value);

    let filter = filter_eq("userName", value);
    match parse_filter(&filter) {
        Ok(Filter::Compare { path, op, value: parsed }) => {
            assert_eq!(path.attr, "userName", "filter {filter:?}");
            assert_eq!(op, CompareOp::Eq, "filter {filter:?}");
            assert_eq!(parsed, Value::String(value.to_owned()), "filter {filter:?}");
        }
        other => panic!("filter {filter:?} did not parse back: {other:?}"),
    }
});
