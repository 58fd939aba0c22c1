//! The README's demo command works end to end.

use std::process::Command;

#[test]
fn demo_script_publishes_the_sample_events_on_their_subjects() {
    // The demo runs `cargo build`, which would wait forever on the build lock that a running
    // `cargo test` holds; nextest releases it before running tests.
    if std::env::var_os("NEXTEST").is_none() && std::env::var_os("NEXTEST_RUN_ID").is_none() {
        crate::support::skip("runs only under cargo-nextest (cargo test holds the build lock)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo"))
        .env("DEMO_PROFILE", "dev")
        .env("DEMO_DIR", dir.path())
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert!(
        stdout.contains("order 1001 placed, event"),
        "the producer example places the order:\n{stdout}"
    );
    assert_eq!(
        stdout.matches("── outbox.event.User ──").count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("── outbox.event.Order ──").count(),
        2,
        "{stdout}"
    );
    for event in [
        "UserCreated",
        "UserEmailChanged",
        "OrderPlaced",
        "OrderPaid",
    ] {
        assert!(
            stdout.contains(&format!("Outbox-Event-Type: {event}")),
            "{event} missing:\n{stdout}"
        );
    }
    // The consumer example handles the two Order events, one line each.
    assert_eq!(
        stdout.matches("\noutbox.event.Order ").count(),
        2,
        "the consumer example:\n{stdout}"
    );
    // The example config serves metrics and readiness; status reads the running connector.
    assert!(stdout.contains("\nready\n"), "{stdout}");
    assert!(
        stdout.contains("binlog_outbox_messages_published_total{stream=\"OUTBOX\"} 4"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stream      OUTBOX: 4 messages"),
        "{stdout}"
    );
    assert!(stdout.contains("demo finished"), "{stdout}");
}
