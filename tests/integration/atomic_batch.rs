//! The JetStream atomic batch protocol, checked against a real nats-server >= 2.12.1 (the one
//! `scripts/test` installs): the facts `binlog_outbox::publish::batch` documents and the
//! `atomic_batch` publish mode is to rely on. Raw async-nats core requests, no connector.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream::Config as StreamConfig;
use binlog_outbox::publish::batch::{
    BATCH_COMMIT, BATCH_COMMIT_STORE, BATCH_ID, BATCH_SEQUENCE, ERR_BATCH_DISABLED,
    ERR_BATCH_DUPLICATE, ERR_BATCH_INCOMPLETE, MAX_BATCH_ID_LEN,
};
use serde_json::Value;

use crate::support::servers::{Nats, new_nats_binary};

/// One message of a batch: its `Nats-Msg-Id` and any extra header.
struct Part<'a> {
    msg_id: &'a str,
    extra: Option<(&'a str, String)>,
}

fn part(msg_id: &str) -> Part<'_> {
    Part {
        msg_id,
        extra: None,
    }
}

fn headers(batch: &str, seq: usize, commit: bool, part: &Part<'_>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(BATCH_ID, batch);
    h.insert(BATCH_SEQUENCE, seq.to_string().as_str());
    h.insert("Nats-Msg-Id", part.msg_id);
    if commit {
        h.insert(BATCH_COMMIT, BATCH_COMMIT_STORE);
    }
    if let Some((name, value)) = &part.extra {
        h.insert(*name, value.as_str());
    }
    h
}

/// Sends `parts` as batch `batch`: the first as a request (its reply returned), the middle
/// ones as plain publishes, the last as the committing request (its reply returned).
async fn send_batch(
    client: &async_nats::Client,
    batch: &str,
    parts: &[Part<'_>],
) -> (Vec<u8>, Value) {
    let subject = "ab.events";
    let n = parts.len();
    let first = client
        .request_with_headers(subject, headers(batch, 1, n == 1, &parts[0]), "e1".into())
        .await
        .unwrap();
    if n == 1 {
        return (Vec::new(), serde_json::from_slice(&first.payload).unwrap());
    }
    for (i, p) in parts.iter().enumerate().take(n - 1).skip(1) {
        client
            .publish_with_headers(subject, headers(batch, i + 1, false, p), "e".into())
            .await
            .unwrap();
    }
    let commit = client
        .request_with_headers(subject, headers(batch, n, true, &parts[n - 1]), "e".into())
        .await
        .unwrap();
    (
        first.payload.to_vec(),
        serde_json::from_slice(&commit.payload).unwrap(),
    )
}

fn error_code(reply: &Value) -> Option<u64> {
    reply["error"]["err_code"].as_u64()
}

async fn stored(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_the_atomic_batch_protocol_as_documented() {
    let Some(binary) = new_nats_binary() else {
        return;
    };
    let nats = Nats::start_binary(binary, "");
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client.clone());
    // async-nats has `allow_atomic_publish` only under its `server_2_12` feature, which this
    // crate does not enable: the stream is created through the JetStream API directly.
    let created = client
        .request(
            "$JS.API.STREAM.CREATE.AB",
            r#"{"name":"AB","subjects":["ab.>"],"allow_atomic":true}"#.into(),
        )
        .await
        .unwrap();
    let created: Value = serde_json::from_slice(&created.payload).unwrap();
    assert_eq!(created["config"]["allow_atomic"], true, "{created}");

    // A staged message answers with an empty reply; the commit with a pub ack naming the
    // batch, its count and the batch's last sequence. Nats-Msg-Id is allowed inside.
    let mut first = part("m1");
    first.extra = Some(("Nats-Expected-Last-Sequence", "0".into()));
    let (staged, ack) = send_batch(&client, "b1", &[first, part("m2"), part("m3")]).await;
    assert!(staged.is_empty(), "staged reply: {staged:?}");
    assert_eq!(ack["stream"], "AB", "{ack}");
    assert_eq!(ack["seq"], 3, "{ack}");
    assert_eq!(ack["batch"], "b1", "{ack}");
    assert_eq!(ack["count"], 3, "{ack}");
    assert_eq!(stored(&js, "AB").await, 3);

    // The same batch again (a restart republishing it): refused whole as a duplicate.
    let (_, ack) = send_batch(&client, "b2", &[part("m1"), part("m2"), part("m3")]).await;
    assert_eq!(error_code(&ack), Some(ERR_BATCH_DUPLICATE), "{ack}");
    // A batch of new events that starts with a stored one: nothing of it is stored either,
    // so a whole-batch duplicate does not mean "everything in it is stored".
    let (_, ack) = send_batch(&client, "b3", &[part("m3"), part("m4")]).await;
    assert_eq!(error_code(&ack), Some(ERR_BATCH_DUPLICATE), "{ack}");
    assert_eq!(stored(&js, "AB").await, 3, "nothing of a duplicate batch");

    // The order guard: Nats-Expected-Last-Sequence on the first message, checked at commit.
    let mut wrong = part("m4");
    wrong.extra = Some(("Nats-Expected-Last-Sequence", "2".into()));
    let (_, ack) = send_batch(&client, "b4", &[wrong, part("m5")]).await;
    assert_eq!(error_code(&ack), Some(10071), "wrong last sequence: {ack}");
    // ... and only there.
    let mut late = part("m5");
    late.extra = Some(("Nats-Expected-Last-Sequence", "3".into()));
    let (_, ack) = send_batch(&client, "b5", &[part("m4"), late]).await;
    assert!(error_code(&ack).is_some(), "not on a later message: {ack}");
    // Nats-Expected-Last-Msg-Id is refused inside a batch.
    let mut chained = part("m5");
    chained.extra = Some(("Nats-Expected-Last-Msg-Id", "m4".into()));
    let (_, ack) = send_batch(&client, "b6", &[part("m4"), chained]).await;
    assert_eq!(error_code(&ack), Some(10177), "{ack}");
    assert_eq!(stored(&js, "AB").await, 3, "nothing of the refused batches");

    // Pipelined batches: the second expects the first's last sequence before the first is
    // acknowledged (3 + 2 = 5), and both commit in order.
    let mut a = part("m4");
    a.extra = Some(("Nats-Expected-Last-Sequence", "3".into()));
    let mut b = part("m6");
    b.extra = Some(("Nats-Expected-Last-Sequence", "5".into()));
    let (one, two) = ([a, part("m5")], [b, part("m7")]);
    let (x, y) = tokio::join!(send_batch(&client, "b7", &one), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        send_batch(&client, "b8", &two).await
    });
    assert_eq!(
        (x.1["seq"].as_u64(), y.1["seq"].as_u64()),
        (Some(5), Some(7))
    );

    // A gap abandons the batch.
    let h = headers("b9", 1, false, &part("m8"));
    let r = client
        .request_with_headers("ab.events", h, "e".into())
        .await
        .unwrap();
    assert!(r.payload.is_empty());
    let r = client
        .request_with_headers("ab.events", headers("b9", 3, true, &part("m9")), "e".into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(error_code(&reply), Some(ERR_BATCH_INCOMPLETE), "{reply}");

    // A batch id above 64 bytes is refused.
    let long = "x".repeat(MAX_BATCH_ID_LEN + 1);
    let (_, ack) = send_batch(&client, &long, &[part("m10")]).await;
    assert_eq!(error_code(&ack), Some(10179), "{ack}");
    assert_eq!(stored(&js, "AB").await, 7);

    // A stream without allow_atomic refuses the first message.
    js.create_stream(StreamConfig {
        name: "PLAIN".into(),
        subjects: vec!["plain.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let r = client
        .request_with_headers(
            "plain.events",
            headers("p1", 1, false, &part("p1")),
            "e".into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(error_code(&reply), Some(ERR_BATCH_DISABLED), "{reply}");
}

fn library_batch(ids: std::ops::Range<u64>) -> Vec<binlog_outbox::publish::batch::BatchMessage> {
    ids.map(|n| {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("id-{n}").as_str());
        binlog_outbox::publish::batch::BatchMessage {
            subject: "ab.events".into(),
            headers,
            payload: format!("{n}").into(),
        }
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_no_stream_takes_is_answered_no_responders_even_when_each_message_asks() {
    use binlog_outbox::publish::batch::{BatchError, send};
    let Some(binary) = new_nats_binary() else {
        return;
    };
    let nats = Nats::start_binary(binary, "");
    let client = async_nats::connect(nats.url()).await.unwrap();
    // No stream: the first message's no-responders answer (an empty payload with status 503)
    // is the batch's answer, not an empty "staged" answer to skip until the timeout.
    for answer_each in [false, true] {
        let commit = send(
            &client,
            "no-stream",
            None,
            library_batch(0..3),
            answer_each,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        match commit.await {
            Err(BatchError::NoResponders { batch }) => assert_eq!(batch, "no-stream"),
            other => panic!("answer_each = {answer_each}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_library_batches_commit_in_order_and_a_republished_one_is_refused_whole() {
    use binlog_outbox::publish::batch::{BatchError, send};
    let Some(binary) = new_nats_binary() else {
        return;
    };
    let nats = Nats::start_binary(binary, "");
    let client = async_nats::connect(nats.url()).await.unwrap();
    client
        .request(
            "$JS.API.STREAM.CREATE.AB",
            r#"{"name":"AB","subjects":["ab.>"],"allow_atomic":true}"#.into(),
        )
        .await
        .unwrap();
    let timeout = Duration::from_secs(5);
    // Three batches in flight at once, each expecting the sequence the one before it ends at.
    let mut pending = Vec::new();
    let mut expected = 0;
    for (i, size) in [1000u64, 1, 250].into_iter().enumerate() {
        let messages = library_batch(expected..expected + size);
        let commit = send(
            &client,
            &format!("lb{i}"),
            Some(expected),
            messages,
            // The first batch asks for an answer to every message: the 999 empty ones are
            // passed over for the commit's.
            i == 0,
            timeout,
        )
        .await
        .unwrap();
        expected += size;
        pending.push(commit);
    }
    let mut last = Vec::new();
    for commit in pending {
        last.push(commit.await.unwrap());
    }
    let seqs: Vec<_> = last.iter().map(|a| (a.last_sequence, a.count)).collect();
    assert_eq!(seqs, [(1000, 1000), (1001, 1), (1251, 250)]);

    // A restart republishing the last batch under a new id: refused whole, nothing stored.
    let again = send(
        &client,
        "lb-again",
        Some(1000),
        library_batch(1001..1251),
        false,
        timeout,
    )
    .await
    .unwrap()
    .await;
    // The expectation (1000) is checked before the ids: either refusal stores nothing.
    assert!(
        matches!(&again, Err(BatchError::Refused { code, .. }) if [ERR_BATCH_DUPLICATE, 10071].contains(code)),
        "{again:?}"
    );
    let dup = send(
        &client,
        "lb-dup",
        Some(1251),
        library_batch(1001..1251),
        false,
        timeout,
    )
    .await
    .unwrap()
    .await;
    assert_eq!(dup.unwrap_err().code(), Some(ERR_BATCH_DUPLICATE));
    let js = async_nats::jetstream::new(client);
    assert_eq!(stored(&js, "AB").await, 1251);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_singles_are_stored_in_order_and_one_not_stored_is_never_overtaken() {
    use binlog_outbox::publish::batch::{BatchError, send, send_singles};
    let Some(binary) = new_nats_binary() else {
        return;
    };
    let nats = Nats::start_binary(binary, "");
    let client = async_nats::connect(nats.url()).await.unwrap();
    client
        .request(
            "$JS.API.STREAM.CREATE.AB",
            r#"{"name":"AB","subjects":["ab.>"],"allow_atomic":true,"max_msg_size":200}"#.into(),
        )
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let timeout = Duration::from_secs(5);
    // Singles, a batch and singles again in flight at once, each group expecting the
    // sequence the one before it ends at.
    let mut pending = Vec::new();
    let mut expected = 0;
    for (i, size) in [300u64, 20, 1].into_iter().enumerate() {
        let messages = library_batch(expected..expected + size);
        let commit = match i {
            1 => send(&client, "b", Some(expected), messages, false, timeout).await,
            _ => send_singles(&client, &format!("s{i}"), "AB", expected, messages, timeout).await,
        };
        expected += size;
        pending.push(commit.unwrap());
    }
    let mut acks = Vec::new();
    for commit in pending {
        acks.push(commit.await.unwrap());
    }
    let seqs: Vec<_> = acks.iter().map(|a| (a.last_sequence, a.count)).collect();
    assert_eq!(seqs, [(300, 300), (320, 20), (321, 1)]);
    assert_eq!(stored(&js, "AB").await, 321);

    // The second of three is refused (above max_msg_size): the third, expecting the
    // sequence the second would have had, is refused too, and the answer is the second's.
    let mut three = library_batch(321..324);
    three[1].payload = vec![b'x'; 300].into();
    let refused = send_singles(&client, "s-big", "AB", 321, three, timeout)
        .await
        .unwrap()
        .await;
    assert!(
        matches!(&refused, Err(BatchError::Refused { code, .. }) if *code != 10071),
        "the second message's own refusal: {refused:?}"
    );
    assert_eq!(stored(&js, "AB").await, 322, "the first only");

    // An id the stream holds: that message is not stored, nor anything after it.
    let mut again = library_batch(322..325);
    again[1] = library_batch(5..6).pop().unwrap();
    let dup = send_singles(&client, "s-dup", "AB", 322, again, timeout)
        .await
        .unwrap()
        .await;
    assert!(
        matches!(&dup, Err(BatchError::Duplicate { position: 2, .. })),
        "{dup:?}"
    );
    assert!(dup.unwrap_err().is_duplicate());
    assert_eq!(stored(&js, "AB").await, 323);

    // A wrong expectation stores nothing.
    let wrong = send_singles(
        &client,
        "s-wrong",
        "AB",
        5,
        library_batch(400..402),
        timeout,
    )
    .await
    .unwrap()
    .await;
    assert_eq!(wrong.unwrap_err().code(), Some(10071));
    assert_eq!(stored(&js, "AB").await, 323);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_off_before_its_commit_stores_nothing_and_is_republished_whole() {
    use binlog_outbox::publish::batch::send;
    let Some(binary) = new_nats_binary() else {
        return;
    };
    let nats = Nats::start_binary(binary, "");
    let cut_off = async_nats::connect(nats.url()).await.unwrap();
    cut_off
        .request(
            "$JS.API.STREAM.CREATE.AB",
            r#"{"name":"AB","subjects":["ab.>"],"allow_atomic":true}"#.into(),
        )
        .await
        .unwrap();
    // Three of four messages staged, then the publisher is gone (a crash before the commit).
    for (i, msg) in library_batch(0..3).into_iter().enumerate() {
        let mut headers = msg.headers;
        headers.insert(BATCH_ID, "cut");
        headers.insert(BATCH_SEQUENCE, (i + 1).to_string().as_str());
        let staged = cut_off
            .request_with_headers(msg.subject, headers, msg.payload)
            .await
            .unwrap();
        assert!(staged.payload.is_empty());
    }
    cut_off.drain().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    assert_eq!(
        stored(&js, "AB").await,
        0,
        "nothing of an uncommitted batch"
    );

    // Republished whole under a new id: the staged message ids do not count as duplicates.
    let ack = send(
        &client,
        "again",
        Some(0),
        library_batch(0..4),
        false,
        Duration::from_secs(5),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    assert_eq!((ack.last_sequence, ack.count), (4, 4));

    // The server abandons an idle batch after its timeout (10 s): a late commit is refused.
    let mut h = HeaderMap::new();
    h.insert(BATCH_ID, "idle");
    h.insert(BATCH_SEQUENCE, "1");
    let staged = client
        .request_with_headers("ab.events", h, "e".into())
        .await
        .unwrap();
    assert!(staged.payload.is_empty());
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut h = HeaderMap::new();
    h.insert(BATCH_ID, "idle");
    h.insert(BATCH_SEQUENCE, "2");
    h.insert(BATCH_COMMIT, BATCH_COMMIT_STORE);
    let late = client
        .request_with_headers("ab.events", h, "e".into())
        .await
        .unwrap();
    let late: Value = serde_json::from_slice(&late.payload).unwrap();
    assert_eq!(error_code(&late), Some(ERR_BATCH_INCOMPLETE), "{late}");
    assert_eq!(stored(&js, "AB").await, 4);
}
