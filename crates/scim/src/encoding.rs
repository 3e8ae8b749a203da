//! Percent-encoding for query strings, path segments and form bodies.
//!
//! Everything outside RFC 3986's unreserved set is `%XX`-encoded, spaces included (`%20`,
//! never `+`): a SCIM filter such as `userName eq "a b"` then reaches every server intact,
//! whether it decodes queries as forms or as plain RFC 3986.

/// Percent-encodes a string: unreserved characters (`A-Z a-z 0-9 - . _ ~`) stay, every other
/// byte of its UTF-8 form becomes `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes one path segment, e.g. a resource id in `/Users/{id}`, so a `/`, `?` or `#` in an
/// id cannot change which resource is addressed.
pub fn path_segment(id: &str) -> String {
    percent_encode(id)
}

/// A query string (without the `?`); a pair with an empty value is written as the bare key.
pub(crate) fn query_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                percent_encode(k)
            } else {
                format!("{}={}", percent_encode(k), percent_encode(v))
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// An `application/x-www-form-urlencoded` body.
pub(crate) fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reserved_space_quotes_and_unicode() {
        assert_eq!(percent_encode("abc-._~XYZ09"), "abc-._~XYZ09");
        assert_eq!(
            percent_encode(r#"userName eq "a+b@x.com""#),
            "userName%20eq%20%22a%2Bb%40x.com%22"
        );
        assert_eq!(percent_encode("é/?#&="), "%C3%A9%2F%3F%23%26%3D");
        assert_eq!(path_segment("a/b"), "a%2Fb");
    }

    #[test]
    fn query_and_form() {
        let q = vec![
            ("cursor".to_string(), String::new()),
            ("count".to_string(), "100".to_string()),
        ];
        assert_eq!(query_string(&q), "cursor&count=100");
        assert_eq!(
            form_body(&[("grant_type", "client_credentials"), ("s", "a b&c")]),
            "grant_type=client_credentials&s=a%20b%26c"
        );
    }
}
