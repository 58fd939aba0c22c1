//! Loading and validating the ecosystem settings: trace context columns, CloudEvents.
use super::tests::{MINIMAL, load};

fn with_outbox(extra: &str) -> String {
    MINIMAL.replace(
        "table = \"shop.outbox\"",
        &format!("table = \"shop.outbox\"\n{extra}"),
    )
}

#[test]
fn trace_columns_load_and_conflicting_ones_are_refused_naming_the_key() {
    let c = load(
        &with_outbox("columns = { traceparent = \"tp\", tracestate = \"ts\" }"),
        &[],
    )
    .unwrap();
    assert_eq!(c.outbox[0].columns.traceparent.as_deref(), Some("tp"));
    load(
        &with_outbox("columns = { tracing_span_context = \"tracingspancontext\" }"),
        &[],
    )
    .expect("Debezium's span context column alone is fine");
    for (extra, key) in [
        (
            "columns = { tracing_span_context = \"c\", traceparent = \"tp\" }",
            "outbox[0].columns.tracing_span_context",
        ),
        (
            "columns = { tracestate = \"ts\" }",
            "outbox[0].columns.tracestate",
        ),
        (
            "columns = { traceparent = \"tp\" }\nheaders = { Traceparent = \"x\" }",
            "outbox[0].headers.Traceparent",
        ),
        (
            "columns = { traceparent = \" \" }",
            "outbox[0].columns.traceparent",
        ),
    ] {
        let err = load(&with_outbox(extra), &[]).unwrap_err().to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
}

#[test]
fn cloudevents_settings_load_and_bad_ones_are_refused_naming_the_key() {
    let c = load(
        &with_outbox(
            "envelope = \"cloudevents\"\ncloudevents_source = \"https://example.com/shop\"\ncontent_type = \"application/json\"",
        ),
        &[],
    )
    .unwrap();
    assert_eq!(
        c.outbox[0].envelope,
        crate::config::EnvelopeKind::Cloudevents
    );
    let err = load(&with_outbox("envelope = \"cloud\""), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("envelope") && err.contains("cloudevents"),
        "{err}"
    );
    for (extra, key) in [
        (
            "cloudevents_source = \"x\"",
            "outbox[0].cloudevents_source: only used",
        ),
        (
            "content_type = \"a/b\"",
            "outbox[0].content_type: only used",
        ),
        (
            "envelope = \"cloudevents\"\ncloudevents_source = \"a b\"",
            "outbox[0].cloudevents_source",
        ),
        (
            "envelope = \"cloudevents\"\ncontent_type = \"json\"",
            "outbox[0].content_type",
        ),
        (
            "envelope = \"cloudevents\"\nheaders = { ce-subject = \"aggregateid\" }",
            "outbox[0].headers.ce-subject",
        ),
    ] {
        let err = load(&with_outbox(extra), &[]).unwrap_err().to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
}
