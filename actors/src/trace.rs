//! W3C trace context across NATS: a span's parent from a `traceparent` string, and the
//! `traceparent` of a span to stamp on what it emits.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `traceparent` (if any, and valid) the parent of `span`.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier: HashMap<String, String> = [("traceparent".to_owned(), tp.to_owned())].into();
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` of `span`, when tracing with OpenTelemetry is on.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    // The OpenTelemetry layer starts the span's OTel side on first entry.
    let cx = span.in_scope(|| span.context());
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}
