//! A service writing a domain row and its outbox event in one transaction (mysql_async):
//! either both commit or neither, and binlog-outbox publishes the event once the transaction
//! is in the binlog. The outbox row may be deleted right away (the event is read from the
//! binlog), which keeps the table small.
//!
//! `cargo run --example producer -- --url mysql://app:secret@127.0.0.1:3306/shop --order 1001`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use clap::Parser;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
struct Args {
    /// The application's database (with the outbox table of schemas/).
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306/shop")]
    url: String,
    #[arg(long, default_value_t = 1001)]
    order: u64,
    #[arg(long, default_value_t = 42)]
    customer: u64,
    #[arg(long, default_value = "99.50")]
    total: String,
    /// Delete the outbox row in the same transaction (it is published from the binlog).
    #[arg(long)]
    delete_outbox_row: bool,
}

/// The domain table of this example.
pub const ORDERS_DDL: &str = "CREATE TABLE IF NOT EXISTS orders (
    id BIGINT PRIMARY KEY,
    customer BIGINT NOT NULL,
    total DECIMAL(10, 2) NOT NULL,
    status VARCHAR(16) NOT NULL)";

/// Places an order: the `orders` row and its `OrderPlaced` event in one transaction.
/// Returns the event's id (a UUID, published as `Nats-Msg-Id`).
pub async fn place_order(
    conn: &mut Conn,
    order: u64,
    customer: u64,
    total: &str,
    delete_outbox_row: bool,
) -> Result<String, BoxError> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "INSERT INTO orders (id, customer, total, status) VALUES (?, ?, ?, 'placed')",
        (order, customer, total),
    )
    .await?;
    // The event id is made once, here, and never again: republished events keep it.
    let id: String = tx
        .query_first("SELECT UUID()")
        .await?
        .expect("UUID() returns a row");
    let payload = serde_json::json!({ "order": order, "customer": customer, "total": total });
    tx.exec_drop(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) \
         VALUES (UNHEX(REPLACE(?, '-', '')), 'Order', ?, 'OrderPlaced', ?)",
        (&id, order.to_string(), payload.to_string()),
    )
    .await?;
    if delete_outbox_row {
        tx.exec_drop(
            "DELETE FROM outbox WHERE id = UNHEX(REPLACE(?, '-', ''))",
            (&id,),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(id)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let mut conn = Conn::from_url(&args.url).await?;
    conn.query_drop(ORDERS_DDL).await?;
    let id = place_order(
        &mut conn,
        args.order,
        args.customer,
        &args.total,
        args.delete_outbox_row,
    )
    .await?;
    println!("order {} placed, event {id}", args.order);
    conn.disconnect().await?;
    Ok(())
}
