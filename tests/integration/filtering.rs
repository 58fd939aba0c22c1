//! Only INSERTs into configured outbox tables are published.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tables_updates_deletes_and_rollbacks_publish_nothing_but_insert_then_delete_does() {
    let env = TestEnv::start("filtering").await;
    env.exec("CREATE TABLE other (id INT PRIMARY KEY, v VARCHAR(10))")
        .await;
    env.exec_root(&format!(
        "CREATE DATABASE elsewhere; CREATE TABLE elsewhere.outbox LIKE {}.outbox",
        env.schema
    ))
    .await;
    let connector = env.start_connector(env.config(None)).await;

    let e = events(1, 6, 3);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[0..2], false).await;
    let ids = |i: usize| {
        let hex: String = e[i].id_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("UNHEX('{hex}')")
    };
    let statements = [
        "INSERT INTO other VALUES (1, 'a'), (2, 'b')".to_string(),
        "UPDATE other SET v = 'c' WHERE id = 1".to_string(),
        format!("UPDATE outbox SET type = 'Changed' WHERE id = {}", ids(0)),
        format!("DELETE FROM outbox WHERE id = {}", ids(1)),
        // Same table name in another schema.
        format!(
            "INSERT INTO elsewhere.outbox (id, aggregatetype, aggregateid, type, payload) VALUES {}",
            e[5].sql_values()
        ),
        // Inserted and deleted in one transaction: the insert was committed, so it is published.
        format!(
            "START TRANSACTION; INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {}; DELETE FROM outbox WHERE id = {}; COMMIT",
            e[2].sql_values(),
            ids(2)
        ),
        // Rolled back: never committed, never published.
        format!(
            "START TRANSACTION; INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {}; ROLLBACK",
            e[3].sql_values()
        ),
    ];
    for sql in &statements {
        mysql_async::prelude::Queryable::query_drop(&mut conn, sql)
            .await
            .unwrap();
    }
    // A sentinel: once it is stored, everything committed before it has been processed.
    insert_tx(&mut conn, &e[4..5], false).await;
    env.wait_for_count(4, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");

    let stored: Vec<String> = env
        .stored_messages()
        .await
        .iter()
        .map(|m| m.header("Nats-Msg-Id").to_owned())
        .collect();
    let expected: Vec<String> = [0, 1, 2, 4].iter().map(|&i| e[i].uuid()).collect();
    assert_eq!(stored, expected);
}

/// A transaction that also changes a non-transactional (MyISAM) table is binlogged even when
/// it rolls back, with its transactional rows: the whole group ends in ROLLBACK, or a
/// `ROLLBACK TO` a savepoint undoes part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_undone_by_a_rollback_or_a_rollback_to_savepoint_are_not_published() {
    let env = TestEnv::start("undone_rows").await;
    env.exec("CREATE TABLE notes (a INT) ENGINE = MyISAM").await;
    let connector = env.start_connector(env.config(None)).await;
    let kept = events(1, 4, 1);
    let undone = events(100, 4, 1);
    let row = |e: &TestEvent| {
        format!(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {};",
            e.sql_values()
        )
    };
    let statements = [
        // Part undone by a rollback to a savepoint.
        format!(
            "BEGIN; {} SAVEPOINT s1; INSERT INTO notes VALUES (1); {} ROLLBACK TO SAVEPOINT s1; {} COMMIT",
            row(&kept[0]),
            row(&undone[0]),
            row(&kept[1])
        ),
        // Undone back to a savepoint taken before any change.
        format!(
            "BEGIN; SAVEPOINT s0; {} INSERT INTO notes VALUES (2); {} ROLLBACK TO SAVEPOINT s0; {} COMMIT",
            row(&undone[1]),
            row(&undone[2]),
            row(&kept[2])
        ),
        // All rolled back.
        format!(
            "BEGIN; {} INSERT INTO notes VALUES (3); ROLLBACK",
            row(&undone[3])
        ),
    ];
    let mut conn = env.conn().await;
    for sql in &statements {
        mysql_async::prelude::Queryable::query_drop(&mut conn, sql)
            .await
            .unwrap();
    }
    insert_tx(&mut conn, &kept[3..], true).await;
    env.wait_for_count(4, Duration::from_secs(30)).await;
    wait_for_checkpoint_at_end(&env).await;
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &kept);
}
