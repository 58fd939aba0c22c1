//! Property tests for the pure encodings: subject rendering, message headers, positions and
//! GTID texts. Bad input must give an error, never a panic, an invalid subject or a header
//! that breaks the message framing.

use std::sync::Arc;

use proptest::prelude::*;

use crate::cell::Cell;
use crate::config::OutboxTableConfig;
use crate::outbox::OutboxTable;
use crate::position::RowPosition;
use crate::position::{BinlogPosition, MariadbGtid, MariadbGtidList, MysqlGtidSet};
use crate::publish::OutgoingMessage;
use crate::route::{SubjectTemplate, subject_covers};

fn table(subject: &str) -> Arc<OutboxTable> {
    let config = OutboxTableConfig {
        headers: [("Tenant".to_string(), "tenant".to_string())].into(),
        columns: crate::config::ColumnMapping {
            timestamp: Some("created".into()),
            ..Default::default()
        },
        ..OutboxTableConfig::new("shop.outbox", subject)
    };
    Arc::new(OutboxTable::from_config(&config).unwrap())
}

fn columns() -> Vec<String> {
    [
        "id",
        "aggregatetype",
        "aggregateid",
        "type",
        "payload",
        "tenant",
        "created",
    ]
    .map(String::from)
    .to_vec()
}

/// Column text: anything, or the characters that break subjects and headers.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![".{0,12}", "[a-zA-Z0-9\r\n\t .*>-]{0,10}"]
}

proptest! {
    #[test]
    fn any_row_becomes_a_valid_message_or_a_bad_row(
        id in proptest::collection::vec(any::<u8>(), 0..20),
        aggregate_type in value(),
        aggregate_id in value(),
        event_type in value(),
        tenant in value(),
        created in value(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        for template in ["outbox.event.{aggregatetype}", "x.{type}.{aggregateid}", "t-{id}.{aggregatetype}", "t.{tenant}.{column:created}"] {
            let resolved = table(template).resolve(&columns()).unwrap();
            let cells = vec![
                Cell::Bytes(id.clone()),
                Cell::Text(aggregate_type.clone()),
                Cell::Text(aggregate_id.clone()),
                Cell::Text(event_type.clone()),
                Cell::Bytes(payload.clone()),
                Cell::Text(tenant.clone()),
                Cell::Text(created.clone()),
            ];
            let position = RowPosition { file: "bin.000001".into(), pos: 4, row: 0 };
            let Ok(event) = resolved.event(cells, position, 0) else { continue };
            let filter = SubjectTemplate::parse(template).unwrap().filter();
            prop_assert!(subject_covers(&filter, &event.subject), "{} not under {}", event.subject, filter);
            prop_assert!(event.subject.split('.').all(|t| !t.is_empty() && !t.chars().any(char::is_whitespace)));
            prop_assert_eq!(&event.payload, &payload);
            let headers = OutgoingMessage::from(event).headers;
            for (name, values) in headers.iter() {
                for value in values {
                    prop_assert!(!value.as_str().contains(['\r', '\n']), "header {} = {:?}", name, value);
                }
            }
        }
    }

    #[test]
    fn binary_values_render_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let rendered = Cell::Bytes(bytes.clone()).render().unwrap();
        if bytes.len() == 16 {
            prop_assert_eq!(rendered.len(), 36);
        }
    }

    #[test]
    fn positions_round_trip(file in "[a-z][a-z_-]{0,15}\\.[0-9]{6}", pos in 4u64.., row in 0usize..100_000) {
        let p = BinlogPosition::new(file.clone(), pos);
        prop_assert_eq!(p.to_string().parse::<BinlogPosition>().unwrap(), p);
        let r = RowPosition { file: file.as_str().into(), pos, row };
        prop_assert_eq!(r.to_string().parse::<RowPosition>().unwrap(), r);
    }

    #[test]
    fn gtid_texts_round_trip(
        mariadb in proptest::collection::vec((0u32..5, any::<u32>(), any::<u64>()), 0..6),
        mysql in proptest::collection::vec((0u8..3, prop::option::of("[a-z_][a-z0-9_]{0,7}"), 1u64..500), 0..40),
    ) {
        let mut list = MariadbGtidList::default();
        for (domain_id, server_id, seq_no) in mariadb {
            list.apply(MariadbGtid { domain_id, server_id, seq_no });
        }
        prop_assert_eq!(list.to_string().parse::<MariadbGtidList>().unwrap(), list);
        let mut set = MysqlGtidSet::default();
        for (uuid_seed, tag, gno) in mysql {
            set.add(&[uuid_seed; 16], tag.as_deref(), gno);
        }
        let text = set.to_string();
        prop_assert_eq!(text.parse::<MysqlGtidSet>().unwrap(), set);
    }

    #[test]
    fn malformed_templates_and_starts_are_errors_not_panics(s in ".{0,40}") {
        let _ = SubjectTemplate::parse(&s);
        let _ = s.parse::<crate::config::StartPosition>();
        let _ = s.parse::<MysqlGtidSet>();
        let _ = s.parse::<MariadbGtidList>();
        let _ = s.parse::<RowPosition>();
    }
}
