//! W3C trace context (`traceparent`, `tracestate`) on the two carriers that cross process
//! boundaries: AMQP message headers and gRPC metadata.
//!
//! This crate does not depend on OpenTelemetry or lapin: a carrier is anything implementing
//! [`Carrier`] (a string get/set by lowercase key). `tonic` metadata is implemented here; the
//! AMQP `FieldTable` adapter lives in `scimrelay-core::amqp`, and the bridge to the
//! OpenTelemetry propagator in `scimrelay-core::telemetry`.

/// Header / metadata key of the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// Header / metadata key of the W3C trace state.
pub const TRACESTATE: &str = "tracestate";
/// The keys a trace context occupies on a carrier.
pub const KEYS: [&str; 2] = [TRACEPARENT, TRACESTATE];

/// A string map a trace context can be written to and read from.
pub trait Carrier {
    /// The value under `key`, if any and if it is a string.
    fn get_str(&self, key: &str) -> Option<String>;
    /// Stores `value` under `key`, replacing any previous value.
    fn set_str(&mut self, key: &str, value: String);
}

impl Carrier for tonic::metadata::MetadataMap {
    fn get_str(&self, key: &str) -> Option<String> {
        self.get(key)?.to_str().ok().map(str::to_owned)
    }

    fn set_str(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>(),
        ) {
            self.insert(k, v);
        }
    }
}

impl Carrier for std::collections::HashMap<String, String> {
    fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }

    fn set_str(&mut self, key: &str, value: String) {
        self.insert(key.to_owned(), value);
    }
}

/// A parsed `traceparent` (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The 16-byte trace id.
    pub trace_id: [u8; 16],
    /// The 8-byte id of the parent span.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; `None` for anything invalid (all-zero ids too).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (v, t, p, f) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if v.len() != 2 || v == "ff" || t.len() != 32 || p.len() != 16 || f.len() != 2 {
            return None;
        }
        if v == "00" && parts.next().is_some() {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex_into(t, &mut trace_id)?;
        hex_into(p, &mut span_id)?;
        let mut flags = [0u8; 1];
        hex_into(f, &mut flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags: flags[0],
        })
    }

    /// The trace id in lowercase hex (the form Jaeger shows and `Outcome.trace_id` stores).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// Reads the trace parent from a carrier.
    pub fn from_carrier(c: &impl Carrier) -> Option<Self> {
        Self::parse(&c.get_str(TRACEPARENT)?)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(s).expect("valid");
        assert_eq!(tp.to_string(), s);
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-zbf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn metadata_carrier() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.set_str(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        assert!(TraceParent::from_carrier(&md).is_some());
        assert_eq!(md.get_str(TRACESTATE), None);
    }
}
