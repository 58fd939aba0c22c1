//! Per-message acks on one subscription (`binlog_outbox::publish::acks`), against a real
//! nats-server: each reply is matched to its message by number, and says what JetStream did.

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::Config as StreamConfig};
use binlog_outbox::publish::acks::{Ack, AckInbox, ERR_WRONG_LAST_MSG_ID};

use crate::support::servers::Nats;

fn with_id(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", id);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ack_is_matched_to_its_message_and_says_stored_duplicate_refused_or_no_stream() {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    for name in ["ACKS_A", "ACKS_B"] {
        js.create_stream(StreamConfig {
            name: name.into(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut inbox = AckInbox::open(&client).await.unwrap();
    let mut wrong_last = with_id("c");
    wrong_last.insert("Nats-Expected-Last-Msg-Id", "not-the-last");
    let sends = [
        ("ACKS_A.x", with_id("a")),
        ("ACKS_B.x", with_id("a")),
        ("ACKS_A.x", with_id("b")),
        ("ACKS_A.x", with_id("a")),
        ("nowhere.x", with_id("d")),
        ("ACKS_B.x", wrong_last),
    ];
    let mut numbers = Vec::new();
    for (subject, headers) in sends {
        numbers.push(
            inbox
                .send(subject.into(), headers, "body".into())
                .await
                .unwrap(),
        );
    }
    assert_eq!(numbers, [0, 1, 2, 3, 4, 5], "numbered in send order");
    let mut acks = BTreeMap::new();
    while acks.len() < numbers.len() {
        let (number, ack) = inbox.next().await.unwrap();
        assert!(
            acks.insert(number, ack.unwrap()).is_none(),
            "one ack per message"
        );
    }
    let stored = |sequence, duplicate| Ack::Stored {
        sequence,
        duplicate,
    };
    assert_eq!(acks[&0], stored(1, false));
    assert_eq!(acks[&1], stored(1, false), "a stream of its own");
    assert_eq!(acks[&2], stored(2, false));
    assert_eq!(
        acks[&3],
        stored(1, true),
        "the duplicate names the original"
    );
    assert_eq!(acks[&4], Ack::NoResponders);
    match &acks[&5] {
        Ack::Refused(refusal) => assert_eq!(refusal.code, ERR_WRONG_LAST_MSG_ID, "{refusal}"),
        other => panic!("{other:?}"),
    }
}
