//! Mapping rows to events.

use super::*;
use crate::cell::Cell;
use crate::config::ColumnMapping;

fn table(subject: &str, headers: &[(&str, &str)]) -> Arc<OutboxTable> {
    let config = OutboxTableConfig {
        columns: ColumnMapping {
            timestamp: Some("created_at".into()),
            ..ColumnMapping::default()
        },
        headers: headers
            .iter()
            .map(|(h, c)| (h.to_string(), c.to_string()))
            .collect(),
        ..OutboxTableConfig::new("shop.outbox", subject)
    };
    Arc::new(OutboxTable::from_config(&config).unwrap())
}

fn columns() -> Vec<String> {
    [
        "id",
        "AggregateType",
        "aggregateid",
        "type",
        "payload",
        "created_at",
        "tenant",
    ]
    .map(String::from)
    .to_vec()
}

fn pos() -> RowPosition {
    RowPosition {
        file: "bin.000001".into(),
        pos: 500,
        row: 2,
    }
}

fn row(aggregate_type: &str) -> Vec<Cell> {
    vec![
        Cell::Bytes((0u8..16).collect()),
        Cell::Text(aggregate_type.into()),
        Cell::Int(42),
        Cell::Text("OrderPlaced".into()),
        Cell::Json(r#"{"total":1}"#.into()),
        Cell::DateTime("2024-01-02T03:04:05.123456Z".into()),
        Cell::Text("acme".into()),
    ]
}

#[test]
fn row_maps_to_event_with_subject_and_headers() {
    let t = table("outbox.event.{aggregatetype}", &[("Tenant", "tenant")]);
    let resolved = t.resolve(&columns()).unwrap();
    let e = resolved.event(row("Order"), pos(), 0).unwrap();
    assert_eq!(e.id, "00010203-0405-0607-0809-0a0b0c0d0e0f");
    assert_eq!(e.aggregate_id, "42");
    assert_eq!(e.subject, "outbox.event.Order");
    assert_eq!(e.payload, br#"{"total":1}"#);
    assert_eq!(e.timestamp.as_deref(), Some("2024-01-02T03:04:05.123456Z"));
    assert_eq!(e.headers, vec![(Arc::from("Tenant"), "acme".to_string())]);
    assert_eq!(e.position.to_string(), "bin.000001:500#2");
}

#[test]
fn row_positions_round_trip_and_order_like_the_binlog() {
    let p: RowPosition = "mariadb-bin.000002:1234#7".parse().unwrap();
    assert_eq!(p.to_string(), "mariadb-bin.000002:1234#7");
    let earlier: RowPosition = "mariadb-bin.000002:1234#6".parse().unwrap();
    let other_file: RowPosition = "mariadb-bin.000001:9999#0".parse().unwrap();
    assert!(earlier < p && other_file < earlier);
    assert!("x:1".parse::<RowPosition>().is_err());
}

#[test]
fn missing_mapped_column_is_a_mapping_error_naming_it() {
    let t = table("a.{type}", &[("X", "nope")]);
    let err = t.resolve(&columns()).unwrap_err();
    assert_eq!(err.column, "nope");
    assert!(err.to_string().contains("shop.outbox"), "{err}");
}

#[test]
fn invalid_subject_value_is_a_bad_row_naming_id_and_position() {
    let t = table("outbox.event.{aggregatetype}", &[]);
    let err = t
        .resolve(&columns())
        .unwrap()
        .event(row("Order Line"), pos(), 0)
        .unwrap_err();
    assert_eq!(err.id, "00010203-0405-0607-0809-0a0b0c0d0e0f");
    assert_eq!(err.position, "bin.000001:500#2");
    assert!(err.to_string().contains("whitespace"), "{err}");
}

#[test]
fn line_breaks_in_header_values_are_bad_rows_not_header_injection() {
    let t = table("a.{type}", &[("Tenant", "tenant")]);
    let r = t.resolve(&columns()).unwrap();
    let mut cells = row("Order");
    cells[2] = Cell::Text("42\r\nNats-Msg-Id: forged".into());
    let err = r.event(cells, pos(), 0).unwrap_err();
    assert!(
        err.reason.contains("line break") && err.reason.contains("aggregateid"),
        "{err}"
    );
    let mut cells = row("Order");
    cells[6] = Cell::Text("acme\n".into());
    assert!(
        r.event(cells, pos(), 0)
            .unwrap_err()
            .reason
            .contains("Tenant")
    );
    // The timestamp becomes a header too (a text column can hold anything).
    let mut cells = row("Order");
    cells[5] = Cell::Text("2024-01-02\r\nNats-Msg-Id: forged".into());
    let err = r.event(cells, pos(), 0).unwrap_err();
    assert!(
        err.reason.contains("line break") && err.reason.contains("created_at"),
        "{err}"
    );
}

#[test]
fn null_id_and_null_payload_are_bad_rows() {
    let t = table("a.{type}", &[]);
    let r = t.resolve(&columns()).unwrap();
    let mut cells = row("Order");
    cells[0] = Cell::Null;
    assert!(
        r.event(cells, pos(), 0)
            .unwrap_err()
            .reason
            .contains("NULL")
    );
    let mut cells = row("Order");
    cells[4] = Cell::Null;
    assert!(
        r.event(cells, pos(), 0)
            .unwrap_err()
            .reason
            .contains("payload")
    );
}

#[test]
fn invalid_json_is_a_bad_row_only_where_the_payload_is_declared_json() {
    let t = table("a.{type}", &[]);
    let mut cells = row("Order");
    cells[4] = Cell::Text("{\"total\": 1,".into());
    let plain = t.resolve(&columns()).unwrap();
    assert!(
        plain.event(cells.clone(), pos(), 0).is_ok(),
        "bytes stay bytes"
    );
    let json = t.resolve(&columns()).unwrap().with_payload_json(true);
    let err = json.event(cells, pos(), 0).unwrap_err();
    assert!(err.reason.contains("invalid JSON"), "{err}");
    assert!(
        json.event(row("Order"), pos(), 0).is_ok(),
        "valid JSON passes"
    );
}

#[test]
fn any_column_of_the_row_routes_the_event() {
    let t = table("outbox.{tenant}.{column:AggregateType}", &[]);
    let r = t.resolve(&columns()).unwrap();
    assert!(r.uses_column(6), "the tenant column is decoded");
    let e = r.event(row("Order"), pos(), 0).unwrap();
    assert_eq!(e.subject, "outbox.acme.Order");
    assert!(
        t.required_columns()
            .iter()
            .any(|(field, col)| *col == "tenant" && field == "subject token {tenant}"),
        "preflight checks the column: {:?}",
        t.required_columns()
    );
}

#[test]
fn a_subject_column_the_table_lacks_is_an_error_naming_table_token_and_columns() {
    let t = table("outbox.{tennant}.{aggregatetype}", &[]);
    let err = t.resolve(&columns()).unwrap_err();
    let text = err.to_string();
    for part in ["shop.outbox", "{tennant}", "tenant", "aggregateid"] {
        assert!(text.contains(part), "{part} missing in: {text}");
    }
}

#[test]
fn a_subject_column_that_is_null_or_no_token_is_a_bad_row() {
    let t = table("outbox.{tenant}", &[]);
    let r = t.resolve(&columns()).unwrap();
    for (value, reason) in [
        (Cell::Null, "NULL"),
        (Cell::Text("a.b".into()), "split"),
        (Cell::Text("a b".into()), "whitespace"),
    ] {
        let mut cells = row("Order");
        cells[6] = value;
        let err = r.event(cells, pos(), 0).unwrap_err();
        assert!(
            err.reason.contains("column `tenant`") && err.reason.contains(reason),
            "{err}"
        );
    }
}

fn traced(columns: ColumnMapping) -> Arc<OutboxTable> {
    let config = OutboxTableConfig {
        columns,
        ..OutboxTableConfig::new("shop.outbox", "a.{type}")
    };
    Arc::new(OutboxTable::from_config(&config).unwrap())
}

#[test]
fn mapped_trace_columns_become_traceparent_and_tracestate_headers() {
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let t = traced(ColumnMapping {
        traceparent: Some("created_at".into()),
        tracestate: Some("tenant".into()),
        ..ColumnMapping::default()
    });
    let r = t.resolve(&columns()).unwrap();
    let mut cells = row("Order");
    cells[5] = Cell::Text(PARENT.into());
    cells[6] = Cell::Text("rojo=1".into());
    let e = r.event(cells, pos(), 0).unwrap();
    let h: Vec<(&str, &str)> = e.headers.iter().map(|(n, v)| (&**n, v.as_str())).collect();
    assert_eq!(h, [("traceparent", PARENT), ("tracestate", "rojo=1")]);
    // NULL: no header.
    let mut cells = row("Order");
    cells[5] = Cell::Null;
    assert!(r.event(cells, pos(), 0).unwrap().headers.is_empty());
    // Invalid: a bad row saying why.
    let mut cells = row("Order");
    cells[5] = Cell::Text(PARENT.to_uppercase());
    let err = r.event(cells, pos(), 0).unwrap_err();
    assert!(err.reason.contains("not a W3C traceparent"), "{err}");
}

#[test]
fn debeziums_span_context_column_becomes_the_trace_headers() {
    let t = traced(ColumnMapping {
        tracing_span_context: Some("tenant".into()),
        ..ColumnMapping::default()
    });
    let r = t.resolve(&columns()).unwrap();
    let mut cells = row("Order");
    cells[6] = Cell::Text(
        "#Thu Jan 01\ntraceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n".into(),
    );
    let e = r.event(cells, pos(), 0).unwrap();
    assert_eq!(&*e.headers[0].0, "traceparent");
    let mut cells = row("Order");
    cells[6] =
        Cell::Text("traceparent=00-00000000000000000000000000000000-00f067aa0ba902b7-01".into());
    assert!(
        r.event(cells, pos(), 0)
            .unwrap_err()
            .reason
            .contains("all zeros")
    );
}
