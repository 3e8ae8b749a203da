//! Fuzzes the protobuf side: gRPC `IdentityEvent`s and the AMQP `Delivery` envelope a
//! connector consumes. Decoding garbage must fail cleanly, and a decoded event must validate
//! or be rejected with a named field — never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use scimrelay_core::config::TargetsFile;
use scimrelay_ingest::model::validate;
use scimrelay_proto::v1::{Delivery, IdentityEvent};

/// One scim target for tenant `acme`, so routing and target checks are exercised.
const TARGETS: &str = "targets:\n  - id: t1\n    provider: scim\n    tenants: [acme]\n    base_url: http://x/scim/v2\n    auth: { kind: none }\n";

fn targets() -> &'static TargetsFile {
    static T: OnceLock<TargetsFile> = OnceLock::new();
    // The fixture is a constant checked by the first run; a failure is a bug in this file.
    T.get_or_init(|| TargetsFile::parse(TARGETS).expect("fixture targets file parses"))
}

fn check(event: &IdentityEvent) {
    if let Err(err) = validate(event, "", targets()) {
        assert!(!err.field.is_empty(), "a rejection names no field: {err:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = IdentityEvent::decode(data) {
        check(&event);
        // Re-encoding a decoded message must round-trip (prost keeps known fields only).
        let again = IdentityEvent::decode(event.encode_to_vec().as_slice())
            .expect("re-encoded event decodes");
        assert_eq!(again, event);
    }
    if let Ok(delivery) = Delivery::decode(data) {
        if let Some(event) = &delivery.event {
            check(event);
        }
    }
});
