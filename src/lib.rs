//! binlog-outbox: a change-data-capture connector for the transactional outbox pattern.
//!
//! Applications insert domain events into an outbox table in the same transaction as their
//! state change. This crate follows the MySQL/MariaDB binlog as a replica, turns every
//! committed INSERT into a configured outbox table into a message and publishes it to NATS
//! JetStream.
//!
//! ```text
//! binlog ─▶ source ─▶ outbox ─▶ route ─▶ publish ─▶ checkpoint
//!          (decode,   (row →    (subject  (JetStream,  (ack'd tx end,
//!           filter,    event)    template) dedup id,    atomic file)
//!           tx ends)                       ordered acks)
//! ```
//!
//! Guarantees:
//! - **Every committed INSERT is published**: at-least-once from the connector, effectively
//!   once in the stream, because the dedup id (`Nats-Msg-Id`) is the outbox row's own id.
//! - **Commit order**: events are published and acknowledged in binlog order; a failed or
//!   unconfirmed publish makes the connector resume from the last acknowledged transaction and
//!   republish in order.
//! - **Checkpoints** are transaction ends whose events JetStream has all acknowledged; they are
//!   never advanced when an event is merely read.
//! - **Bad input stops the connector** with an error naming the table, row id and position;
//!   nothing past the row is checkpointed.
//!
//! Modules follow the stages: [`source`], [`outbox`], [`route`], [`publish`], [`checkpoint`];
//! [`pipeline`] wires them and owns the shutdown order; [`error`] decides retry vs. fatal.

pub mod cell;
pub mod check;
pub mod checkpoint;
pub mod config;
pub mod debezium;
pub mod error;
pub mod ha;
pub mod observe;
pub mod outbox;
pub mod pipeline;
pub mod position;
pub mod properties;
pub mod publish;
pub mod replay;
pub mod route;
pub mod secret;
pub mod source;
pub mod start;
pub mod status;
pub mod telemetry;

#[cfg(test)]
mod property_tests;
