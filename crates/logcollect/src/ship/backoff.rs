//! How long to wait before the next connection attempt.
//!
//! Exponential with jitter between `reconnect_min` and `reconnect_max`. The
//! delay only goes back to the minimum after a connection proved itself
//! (lived a while and had records confirmed): a broker that accepts
//! connections and then closes them at once (say, one that refuses every
//! publish) sees the delay keep growing, not a reconnect storm.

use std::time::Duration;

/// A connection that lived this long and had records confirmed was a good
/// one: the next loss reconnects quickly again. Ten seconds is longer than
/// any broker takes to refuse a publish, and short enough that a broker
/// restart after a stable period is retried at once.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    /// The delay the next failure waits (before jitter).
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// A connection attempt failed: wait, and wait longer next time.
    pub(crate) fn after_failure(&mut self, unit: f64) -> Duration {
        let wait = jitter(self.next, unit);
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }

    /// An established connection was lost after `lived`; `proved` when it
    /// had records confirmed.
    pub(crate) fn after_loss(&mut self, lived: Duration, proved: bool, unit: f64) -> Duration {
        if proved && lived >= STABLE_AFTER {
            self.next = self.min;
        }
        self.after_failure(unit)
    }
}

/// Between half and all of `d` (`unit` in 0..1 from the caller's random
/// source), so processes restarted together do not reconnect in lockstep.
fn jitter(d: Duration, unit: f64) -> Duration {
    let half = d / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<_> = (0..6).map(|_| b.after_failure(1.0)).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        assert_eq!(
            b.after_failure(0.0),
            Duration::from_millis(500),
            "jitter: half at least"
        );
    }

    #[test]
    fn only_a_connection_that_proved_itself_resets_the_delay() {
        let min = Duration::from_millis(100);
        let mut b = Backoff::new(min, Duration::from_secs(30));
        for _ in 0..5 {
            b.after_failure(1.0);
        }
        // Lost soon after opening, or long-lived but useless: keeps growing.
        assert_eq!(
            b.after_loss(Duration::from_secs(1), true, 1.0),
            Duration::from_millis(3200)
        );
        assert_eq!(
            b.after_loss(Duration::from_secs(60), false, 1.0),
            Duration::from_millis(6400)
        );
        // Lived and delivered: back to the minimum.
        assert_eq!(b.after_loss(STABLE_AFTER, true, 1.0), min);
    }

    #[test]
    fn a_refusing_broker_sees_a_few_connections_per_minute() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut t = Duration::ZERO;
        let mut connects = 0;
        // Each connection lives 50 ms and is refused; jitter at its
        // shortest (the most connections).
        while t < Duration::from_secs(600) {
            connects += 1;
            t += Duration::from_millis(50) + b.after_loss(Duration::from_millis(50), false, 0.0);
        }
        // The first minute ramps up; then about four a minute at most.
        assert!(
            connects <= 12 + 4 * 9,
            "{connects} connections in 10 minutes"
        );
    }
}
