//! Fuzzes what a provider sends back: error bodies of any shape (`parse_error_body`,
//! `ScimError::from_response` with a fuzzed `Retry-After`) and resource bodies deserialised
//! into `User`, `Group` and `ListResponse`. None may panic, whatever the provider sends.
#![no_main]

use http::{HeaderMap, HeaderValue, header::RETRY_AFTER};
use libfuzzer_sys::fuzz_target;
use scimrelay_scim::resources::{Group, ListResponse, User};
use scimrelay_scim::{ScimError, parse_error_body};

fuzz_target!(|data: &[u8]| {
    // First byte picks the status (400..=655), the next line (up to '\n') is a Retry-After
    // value, the rest is the body.
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let status = 400 + u16::from(first);
    let (retry_after, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };

    let (scim_type, detail, code) = parse_error_body(status, body);
    for s in [&scim_type, &detail, &code].into_iter().flatten() {
        assert!(!s.is_empty(), "empty values must be None");
    }

    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(retry_after) {
        headers.insert(RETRY_AFTER, v);
    }
    let err = ScimError::from_response(status, headers, body);
    assert_eq!(err.status(), Some(status));
    let _ = err.to_string();
    let _ = (err.is_transient(), err.is_auth_failure(), err.retry_after());

    let _ = serde_json::from_slice::<User>(body);
    let _ = serde_json::from_slice::<Group>(body);
    let _ = serde_json::from_slice::<ListResponse<User>>(body);
    if let Ok(list) = serde_json::from_slice::<ListResponse<Group>>(body) {
        // What we read we must be able to write back (the connector logs and re-sends).
        let _ = serde_json::to_vec(&list).expect("a parsed list serialises");
    }
});
