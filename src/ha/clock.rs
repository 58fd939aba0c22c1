//! How long this instance may still act as the leader: one deadline, moved forward by each
//! confirmed renewal, read before every publish and every checkpoint write.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The leader's deadline on this process's monotonic clock (it keeps counting while the
/// process is stopped, so a thawed leader finds its deadline passed).
#[derive(Debug)]
pub struct LeaseClock {
    base: Instant,
    /// Milliseconds after `base` up to which the lease is ours; 0: not (any more).
    valid_until_ms: AtomicU64,
}

impl LeaseClock {
    /// A clock valid until `until`.
    pub fn new(until: Instant) -> Self {
        let clock = Self {
            base: Instant::now(),
            valid_until_ms: AtomicU64::new(0),
        };
        clock.extend_to(until);
        clock
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    /// Moves the deadline to `until` (a renewal was confirmed).
    pub fn extend_to(&self, until: Instant) {
        self.valid_until_ms.store(self.ms(until).max(1), Relaxed);
    }

    /// Ends the lease here at once.
    pub fn expire(&self) {
        self.valid_until_ms.store(0, Relaxed);
    }

    /// Whether this instance may still publish and write checkpoints.
    pub fn is_valid(&self) -> bool {
        self.ms(Instant::now()) < self.valid_until_ms.load(Relaxed)
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(
            self.valid_until_ms
                .load(Relaxed)
                .saturating_sub(self.ms(Instant::now())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_until_the_deadline_then_not_and_expire_ends_it_at_once() {
        let clock = LeaseClock::new(Instant::now() + Duration::from_millis(50));
        assert!(clock.is_valid());
        assert!(clock.remaining() > Duration::ZERO);
        std::thread::sleep(Duration::from_millis(60));
        assert!(!clock.is_valid());
        assert_eq!(clock.remaining(), Duration::ZERO);
        clock.extend_to(Instant::now() + Duration::from_secs(5));
        assert!(clock.is_valid());
        clock.expire();
        assert!(!clock.is_valid());
    }
}
