//! Crash anywhere: kill -9 at arbitrary moments under continuous inserts.

use std::time::Duration;

use crate::support::*;

/// A small deterministic generator for kill moments (no extra dependency; reproducible).
struct Lcg(u64);

impl Lcg {
    fn next_in(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_kills_at_random_moments_lose_nothing_duplicate_nothing_reorder_nothing() {
    let env = TestEnv::start("crash_anywhere").await;
    let config = env.write_config("connector.toml", &env.config_toml(None));
    let log = env.dir.path().join("connector.log");
    let mut connector = Binary::start(&config, &log);
    wait_for_file(&env.checkpoint_path()).await;

    let all = events(1, 6_000, 30);
    let writer = spawn_writer(&env, &all, 12, Duration::from_millis(3));
    let mut rng = Lcg(0x5eed);
    for _ in 0..12 {
        // Somewhere between just started (maybe still in preflight) and well into publishing.
        tokio::time::sleep(Duration::from_millis(rng.next_in(20, 400))).await;
        connector.kill9();
        connector = Binary::start(&config, &log);
    }
    writer.await.unwrap();
    env.wait_for_count(all.len() as u64, Duration::from_secs(120))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    // The last connector may have been started a moment ago: let it get going before SIGTERM.
    connector.wait_until_reading().await;
    let status = connector.terminate();
    let log = std::fs::read_to_string(&log).unwrap();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    assert!(
        status.success(),
        "exit {status}; log tail (newest first):\n{}",
        tail.join("\n")
    );
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}
