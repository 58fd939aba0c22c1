//! Integration tests against a real MariaDB (binlog on) and a real nats-server (JetStream),
//! both started privately per test on free ports.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

mod acks;
mod atomic_batch;
mod atomic_publish;
mod bad_rows;
mod cloudevents;
mod cluster;
mod compose;
mod crash;
mod crash_paths;
mod debezium;
mod delivery;
mod demo;
mod errors;
mod examples;
mod filtering;
mod gtid;
mod ha;
mod history;
mod large;
mod multi_table;
mod observe;
mod ordering;
mod privileges;
mod recovery;
mod replay;
mod restart;
mod routing;
mod runtime_changes;
mod server_settings;
mod tls_auth;
mod trace_context;
mod types;
mod xa;
