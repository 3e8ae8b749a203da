//! One telemetry set-up for every binary: `RUST_LOG` filter, text or JSON logs, OTLP trace
//! export when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, and
//! the W3C trace-context propagator.
//!
//! Logs go to stderr, so a binary's stdout stays free for machine-readable lines.
//!
//! The OpenTelemetry layer is always installed (without an exporter when OTLP is not asked
//! for), so every span has a trace id even when nothing is exported: the ids still travel in
//! AMQP headers and gRPC metadata, land in `Outcome.trace_id`, and appear in JSON logs as the
//! `trace_id` / `span_id` fields of the spans that [`record_ids`] was called on.
//!
//! Carrier helpers ([`inject`], [`set_parent`]) bridge the W3C propagator to
//! [`scimrelay_proto::trace::Carrier`] (AMQP headers, gRPC metadata).

use opentelemetry::propagation::Injector;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use scimrelay_proto::trace::Carrier;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the tracer provider alive; flushes spans on drop.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

fn otlp_requested() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()))
        && std::env::var("OTEL_SDK_DISABLED")
            .map(|v| v != "true")
            .unwrap_or(true)
}

/// Installs the global subscriber for `service`. Log format: `SCIMRELAY_LOG_FORMAT=json|text`.
/// Must be called inside a tokio runtime (the OTLP batch exporter needs one).
pub fn init(service: &'static str) -> TelemetryGuard {
    let json = std::env::var("SCIMRELAY_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let mut exporting = false;
    if otlp_requested() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => {
                builder = builder.with_batch_exporter(exporter);
                exporting = true;
            }
            Err(e) => eprintln!("{service}: OTLP exporter disabled: {e}"),
        }
    }
    let p = builder.build();
    let tracer = p.tracer(service);
    opentelemetry::global::set_tracer_provider(p.clone());
    let provider = exporting.then_some(p);
    let otel = Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter()),
    );

    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    TelemetryGuard { provider }
}

struct InjectInto<'a, C: ?Sized>(&'a mut C);
impl<C: Carrier + ?Sized> Injector for InjectInto<'_, C> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set_str(key, value);
    }
}

/// Writes the context of `span` (W3C `traceparent` / `tracestate`) onto `carrier`.
pub fn inject_span(span: &tracing::Span, carrier: &mut (impl Carrier + ?Sized)) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut InjectInto(carrier))
    });
}

/// Writes the context of the current span onto `carrier`.
pub fn inject(carrier: &mut (impl Carrier + ?Sized)) {
    inject_span(&tracing::Span::current(), carrier);
}

/// The remote context a carrier holds (an empty context when it holds none).
pub fn extract(carrier: &(impl Carrier + ?Sized)) -> opentelemetry::Context {
    let owned: std::collections::HashMap<String, String> = scimrelay_proto::trace::KEYS
        .iter()
        .filter_map(|k| carrier.get_str(k).map(|v| ((*k).to_owned(), v)))
        .collect();
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&owned))
}

/// Makes the context a carrier holds the parent of `span` (no-op when it holds none), then
/// records the span's ids (see [`record_ids`]).
pub fn set_parent(span: &tracing::Span, carrier: &(impl Carrier + ?Sized)) {
    let cx = extract(carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
    record_ids(span);
}

/// Adds a link from `span` to the context a carrier holds (for batched work with many parents).
pub fn link(span: &tracing::Span, carrier: &(impl Carrier + ?Sized)) {
    let cx = extract(carrier);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
}

/// The trace id of `span` in lowercase hex, empty when it has none.
pub fn trace_id(span: &tracing::Span) -> String {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        sc.trace_id().to_string()
    } else {
        String::new()
    }
}

/// Records `trace_id` and `span_id` on a span that declared them as `tracing::field::Empty`,
/// so every log line inside it (JSON: the `span` / `spans` objects) carries them.
pub fn record_ids(span: &tracing::Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// Free text made safe for a log field: every word holding an `@` (an e-mail) becomes
/// `***@***`, and the text is cut at 200 characters.
pub fn redact(text: &str) -> String {
    let mut out: String = text
        .split_inclusive(char::is_whitespace)
        .map(|w| {
            if w.contains('@') {
                let tail: String = w.chars().rev().take_while(|c| c.is_whitespace()).collect();
                format!("***@***{tail}")
            } else {
                w.to_owned()
            }
        })
        .collect();
    if out.chars().count() > 200 {
        out = out.chars().take(200).collect::<String>() + "…";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_masks_emails() {
        let r = redact("409 userName \"ada@example.com\" exists; retry");
        assert!(!r.contains("ada@example.com"), "{r}");
        assert!(r.starts_with("409 userName ***@*** exists"), "{r}");
    }

    #[test]
    fn trace_context_round_trips_through_a_carrier() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        let mut carrier = std::collections::HashMap::new();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut InjectInto(&mut carrier))
        });
        assert_eq!(
            carrier.get("traceparent").map(String::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let back = extract(&carrier);
        assert_eq!(
            back.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
