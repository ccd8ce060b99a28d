//! OpenTelemetry trace export, configured only through the standard `OTEL_` variables.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, and off when `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Spans go
//! over OTLP/HTTP with protobuf bodies, in batches from a background thread, so a slow
//! collector never delays a request. The exporter reads the endpoint, headers and timeout
//! variables itself; `OTEL_SERVICE_NAME` defaults to `folio`.
//!
//! NOTE: the exporter's HTTP client is built without TLS, so the endpoint must be a
//! plain-HTTP collector beside the node (an agent or sidecar on loopback or in the pod).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// Flushes and stops trace export when dropped; hold it until the process ends.
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("warning: flushing OpenTelemetry spans failed: {error}");
            }
        }
    }
}

/// Returns true when the `OTEL_` variables in `env` ask for trace export.
pub fn export_requested(env: impl Fn(&str) -> Option<String>) -> bool {
    if env("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return false;
    }
    if env("OTEL_TRACES_EXPORTER").is_some_and(|value| value.eq_ignore_ascii_case("none")) {
        return false;
    }
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| env(name).is_some_and(|value| !value.trim().is_empty()))
}

/// Builds the `tracing` layer that exports spans, when the `OTEL_` variables request it.
///
/// # Errors
/// Fails when the exporter cannot be built from the `OTEL_` variables, such as an
/// endpoint that is not a URL.
pub fn layer<S>() -> anyhow::Result<(Option<impl tracing_subscriber::Layer<S>>, TelemetryGuard)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if !export_requested(|name| std::env::var(name).ok()) {
        return Ok((None, TelemetryGuard::default()));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot build the OTLP span exporter: {error}; check \
                 OTEL_EXPORTER_OTLP_ENDPOINT (an http:// URL of a collector)"
            )
        })?;
    let service_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "folio".into());
    let resource = Resource::builder().with_service_name(service_name).build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("folio");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((
        Some(layer),
        TelemetryGuard {
            provider: Some(provider),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn endpoint_turns_export_on() {
        let env = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]);
        assert!(export_requested(env));
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert!(!export_requested(env_of(&[("OTEL_SERVICE_NAME", "x")])));
    }

    #[test]
    fn sdk_disabled_wins_over_endpoint() {
        let env = env_of(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces",
            ),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert!(!export_requested(env));
    }

    #[test]
    fn traces_exporter_none_turns_export_off() {
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]);
        assert!(!export_requested(env));
    }
}
