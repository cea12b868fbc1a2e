//! Logging and tracing set-up: fmt logs (RUST_LOG), OpenTelemetry spans for trace
//! context propagation, exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// Keeps the exporter alive; flushes spans when dropped.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// `default_filter` applies when RUST_LOG is unset.
pub fn init(service: &str, default_filter: &str) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let exporting = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("bulkhead");
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                // Colour for a terminal only, and not with NO_COLOR (no-color.org): a log
                // file or a collector gets plain text.
                .with_ansi(colour()),
        )
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()?;
    if exporting {
        tracing::info!("exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

/// Whether to colour what goes to stderr: a terminal, and no `NO_COLOR` set (to anything
/// but the empty string).
pub fn colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_carry_w3c_trace_context_across_messages() {
        let _t = super::init("test", "info").unwrap();
        let root = tracing::info_span!("admit");
        let tp = bulkhead_actors::trace::traceparent(&root).expect("a root span has a traceparent");
        assert_eq!(tp.split('-').count(), 4, "{tp}");
        let child = tracing::info_span!("start");
        bulkhead_actors::trace::set_parent(&child, Some(&tp));
        let child_tp = bulkhead_actors::trace::traceparent(&child).unwrap();
        assert_eq!(
            child_tp.split('-').nth(1),
            tp.split('-').nth(1),
            "same trace"
        );
        assert_ne!(child_tp, tp, "its own span id");
    }
}
