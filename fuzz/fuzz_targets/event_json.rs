//! Fuzzes the HTTP API's event decoding: any body must decode to events or a `FieldError`,
//! and every decoded event must validate or be rejected — never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use scimrelay_core::config::TargetsFile;
use scimrelay_ingest::model::{events_from_json, validate};

/// One scim target for tenant `acme`, so routing and target checks are exercised.
const TARGETS: &str = "targets:\n  - id: t1\n    provider: scim\n    tenants: [acme]\n    base_url: http://x/scim/v2\n    auth: { kind: none }\n";

fn targets() -> &'static TargetsFile {
    static T: OnceLock<TargetsFile> = OnceLock::new();
    // The fixture is a constant checked by the first run; a failure is a bug in this file.
    T.get_or_init(|| TargetsFile::parse(TARGETS).expect("fixture targets file parses"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match events_from_json(&body) {
        Ok(events) => {
            for (i, e) in events.iter().enumerate() {
                if let Err(err) = validate(e, &format!("events[{i}]"), targets()) {
                    assert!(!err.field.is_empty(), "a rejection names no field: {err:?}");
                }
            }
        }
        Err(err) => assert!(!err.field.is_empty(), "a rejection names no field: {err:?}"),
    }
});
