//! The observer's derived values: readiness, health, lag and checkpoint age.

use super::*;

fn observer(stall_ms: u64) -> Observer {
    let limits = Limits {
        stall_after: Duration::from_millis(stall_ms),
        source_silence: Duration::from_millis(stall_ms),
    };
    Observer::new(limits, [], [])
}

#[test]
fn readiness_needs_both_connections_and_a_fresh_stream() {
    let o = observer(60_000);
    assert_eq!(o.not_ready().unwrap(), "binlog stream not connected");
    o.source_connected();
    assert_eq!(o.not_ready().unwrap(), "NATS not connected");
    o.nats_connection(true);
    assert_eq!(o.not_ready(), None);
    o.nats_connection(false);
    assert!(o.not_ready().is_some());
}

#[test]
fn a_silent_stream_is_not_ready_and_a_stalled_one_is_wedged() {
    let o = observer(20);
    o.source_connected();
    o.nats_connection(true);
    assert_eq!(o.wedged(), None);
    std::thread::sleep(Duration::from_millis(40));
    assert!(o.not_ready().unwrap().contains("silent"));
    assert!(o.wedged().unwrap().starts_with("source:"));
    o.binlog_event(true, 0);
    assert_eq!(o.not_ready(), None);
    assert_eq!(o.wedged(), None);
}

#[test]
fn waiting_acks_wedge_the_publisher_only_when_none_comes() {
    let o = observer(20);
    o.published(unix_micros());
    std::thread::sleep(Duration::from_millis(40));
    o.source_attempt();
    assert!(o.wedged().unwrap().starts_with("publisher:"));
    o.acked("S", false, unix_micros(), None);
    assert_eq!(o.wedged(), None);
}

#[test]
fn lag_is_the_oldest_unacked_commit_and_zero_when_caught_up() {
    let o = observer(60_000);
    assert_eq!(o.lag_seconds(), 0.0);
    let ten_s_ago = unix_micros() - 10_000_000;
    o.published(ten_s_ago);
    assert!((9.9..11.0).contains(&o.lag_seconds()));
    o.acked("S", false, ten_s_ago, None);
    o.binlog_event(false, (ten_s_ago / 1_000_000) as u32);
    assert!(
        o.lag_seconds() >= 9.9,
        "not caught up: the last event's age"
    );
    o.binlog_event(true, 0);
    assert_eq!(o.lag_seconds(), 0.0);
}

#[test]
fn checkpoint_age_counts_from_the_first_unsaved_ack() {
    let o = observer(20);
    assert_eq!(o.checkpoint_age(), Duration::ZERO);
    o.checkpoint_acked();
    std::thread::sleep(Duration::from_millis(30));
    o.checkpoint_acked();
    assert!(o.checkpoint_age() >= Duration::from_millis(30));
    o.source_attempt();
    assert!(o.wedged().unwrap().starts_with("checkpoint:"));
    o.checkpoint_saved(&BinlogPosition::new("b.000001", 4), true);
    assert_eq!(o.checkpoint_age(), Duration::ZERO);
}
