// Package telemetry sets up jisr's traces and their companions in logs: an
// OpenTelemetry tracer provider configured from the standard OTEL_*
// environment variables (or an explicit OTLP endpoint), a bounded in-memory
// store of recent spans that the gateway serves by trace id, and a slog
// handler that stamps trace_id and span_id on every line logged with a
// query's context.
//
// Invariant: nothing is recorded or exported unless asked for. With no OTLP
// endpoint and no in-memory store, the provider is the no-op one and a span
// costs what a no-op costs. Span attributes name citizens only by ckey.
package telemetry
