//! Hot path without servers: one decoded outbox row → OutboxEvent (mapping, subject) →
//! JetStream headers. Reports events/s for a 300-byte and a 4 KB JSON payload, taken as is
//! (MySQL binary JSON) and validated (MariaDB JSON columns).
//!
//! A second group measures what observing one event costs on that path (the calls the source
//! and the publisher make per event, with the Prometheus recorder installed as under
//! `[http]`): `observe/per_event`.
//!
//! `cargo bench --bench mapping`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;

use binlog_outbox::cell::Cell;
use binlog_outbox::config::{ColumnMapping, OutboxTableConfig};
use binlog_outbox::outbox::OutboxTable;
use binlog_outbox::position::RowPosition;
use binlog_outbox::publish::OutgoingMessage;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn row(payload_bytes: usize) -> Vec<Cell> {
    let filler = "x".repeat(payload_bytes.saturating_sub(40));
    vec![
        Cell::Bytes((0u8..16).collect()),
        Cell::Text("Order".into()),
        Cell::Text("order-1234".into()),
        Cell::Text("OrderPlaced".into()),
        Cell::Json(format!("{{\"id\": 1234, \"filler\": \"{filler}\"}}")),
        Cell::DateTime("2024-01-02T03:04:05.123456Z".into()),
    ]
}

fn bench(c: &mut Criterion) {
    let config = OutboxTableConfig {
        columns: ColumnMapping {
            timestamp: Some("created_at".into()),
            ..ColumnMapping::default()
        },
        ..OutboxTableConfig::new("shop.outbox", "outbox.event.{aggregatetype}")
    };
    let table = Arc::new(OutboxTable::from_config(&config).unwrap());
    let columns: Vec<String> = [
        "id",
        "aggregatetype",
        "aggregateid",
        "type",
        "payload",
        "created_at",
    ]
    .map(String::from)
    .to_vec();
    // MariaDB's JSON columns are validated (they are LONGTEXT with a CHECK a producer can
    // bypass); MySQL's binary JSON is not.
    let plain = table.resolve(&columns).unwrap();
    let validated = table.resolve(&columns).unwrap().with_payload_json(true);
    let position = RowPosition {
        file: "mariadb-bin.000001".into(),
        pos: 123_456,
        row: 0,
    };
    let mut group = c.benchmark_group("row_to_message");
    group.throughput(Throughput::Elements(1));
    for (size, (kind, resolved)) in [300usize, 4096]
        .into_iter()
        .flat_map(|size| [(size, ("", &plain)), (size, ("_validated", &validated))])
    {
        let cells = row(size);
        group.bench_function(format!("{size}B_json{kind}"), |b| {
            b.iter_batched(
                || cells.clone(),
                |cells| {
                    let event = resolved.event(cells, position.clone(), 0).unwrap();
                    OutgoingMessage::from(event)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The per-event observer calls: a row read, its publish, its ack (metrics recorder on).
fn bench_observe(c: &mut Criterion) {
    use binlog_outbox::observe::{self, Limits, Observer};
    observe::install_recorder();
    let limits = Limits {
        stall_after: std::time::Duration::from_secs(60),
        source_silence: std::time::Duration::from_secs(10),
    };
    let table: Arc<str> = Arc::from("shop.outbox");
    let stream = "OUTBOX".to_owned();
    let observer = Observer::new(limits, [&table], [&stream]);
    let mut group = c.benchmark_group("observe");
    group.throughput(Throughput::Elements(1));
    group.bench_function("per_event", |b| {
        b.iter(|| {
            let now = observe::unix_micros();
            observer.binlog_event(false, (now / 1_000_000) as u32);
            observer.rows_read(&table, 1);
            observer.published(now);
            observer.acked(&stream, false, now, None);
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_observe);
criterion_main!(benches);
