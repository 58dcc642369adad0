//! The faults issue reports named, each as a scenario of the driver against
//! the simulated broker on tokio's paused clock (the real-broker versions
//! are in `tests/`).

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::batch::Batching;
use super::driver::{deadline_after, Control, Driver, Settings};
use super::intake::{Intake, Limits};
use super::sim::{Mode, SimNet};
use super::spool::{OsFs, Spool};
use super::Stats;
use crate::config::BatchFormat;
use crate::encode::Encoded;
use crate::error::ShutdownError;
use crate::report::Reporter;

struct Rig {
    net: SimNet,
    intake: Arc<Intake>,
    ctrl: mpsc::UnboundedSender<Control>,
    next: u64,
}

fn settings(brokers: usize, seed: u64) -> Settings {
    Settings {
        brokers,
        confirm_window: 64,
        batching: Batching {
            records_per_message: 1,
            max_bytes: 1 << 20,
            format: BatchFormat::JsonArray,
        },
        batch_linger: Duration::from_millis(5),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(30),
        connect_bound: Duration::from_secs(10),
        liveness_timeout: Duration::from_secs(10),
        wake_interval: Duration::from_millis(1),
        shutdown_timeout: Duration::from_secs(5),
        exchange: "logstash".into(),
        routing_key: "logstash".into(),
        seed,
    }
}

impl Rig {
    fn start(net: SimNet, s: Settings) -> Rig {
        let intake = Arc::new(Intake::new(Limits {
            max_records: 100_000,
            max_bytes: 1 << 30,
            wake_batch: 256,
        }));
        let (ctrl, rx) = mpsc::unbounded_channel();
        let driver = Driver::new(
            s,
            intake.clone(),
            rx,
            net.transport(),
            None::<Spool<OsFs>>,
            Arc::new(Reporter::quiet()),
            Arc::new(Mutex::new(None)),
        );
        tokio::task::spawn_local(driver.run());
        Rig {
            net,
            intake,
            ctrl,
            next: 0,
        }
    }

    fn log(&mut self, n: usize, body_len: usize) {
        for _ in 0..n {
            let mut body = format!("{{\"i\":{},\"pad\":\"", self.next).into_bytes();
            body.resize(body.len() + body_len, b'x');
            body.extend_from_slice(b"\"}");
            self.intake
                .push(Encoded {
                    id: uuid::Uuid::from_u128(u128::from(self.next) + 1),
                    routing_key: "logstash.app".into(),
                    body,
                    truncated: false,
                })
                .expect("room");
            self.next += 1;
        }
    }

    fn flush(&self, timeout: Duration) -> Receiver<Result<(), ShutdownError>> {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        let _ = self.ctrl.send(Control::Flush {
            upto: self.intake.accepted(),
            timeout,
            reply,
        });
        rx
    }

    /// Advances the clock until `rx` answers; the answer and the time taken.
    async fn wait<T>(&self, rx: &Receiver<T>, limit: Duration) -> (T, Duration) {
        let t0 = Instant::now();
        loop {
            if let Ok(v) = rx.try_recv() {
                return (v, t0.elapsed());
            }
            assert!(t0.elapsed() < limit, "no answer within {limit:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Flushes and waits for the answer, which must be Ok; the time it took.
    async fn flushed(&self, limit: Duration) -> Duration {
        let (answer, took) = self.wait(&self.flush(limit), limit).await;
        assert_eq!(answer, Ok(()), "{:?}", self.stats());
        took
    }

    fn stats(&self) -> Stats {
        let (accepted, snap) = self.intake.snapshot();
        Stats::from_parts(accepted, &snap, [0; 4], 0)
    }

    /// The broker the driver is connected to now.
    fn current_broker(&self) -> usize {
        (0..self.net.brokers())
            .find(|b| self.net.open_links(*b) > 0)
            .expect("connected somewhere")
    }
}

fn run(body: impl std::future::Future<Output = ()>) {
    super::sim::run_paused(body);
}

#[test]
fn a_hung_broker_without_heartbeats_is_left_within_the_liveness_timeout() {
    run(async {
        // No heartbeat: the confirm watchdog alone must find the hang.
        let mut rig = Rig::start(SimNet::new(2, 1, Duration::ZERO), settings(2, 1));
        rig.log(100, 10);
        rig.flushed(Duration::from_secs(60)).await;
        let hung = rig.current_broker();
        rig.net.set_mode(hung, Mode::Hang);
        rig.log(100, 10);
        let took = rig.flushed(Duration::from_secs(60)).await;
        // 10 s of silence, then the next broker (its first backoff and
        // connect are well under a second).
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(11),
            "moved on after {took:?}"
        );
        assert_eq!(rig.current_broker(), 1 - hung);
        let s = rig.stats();
        assert_eq!((s.confirmed, s.lost_accepted()), (200, 0), "{s:?}");
    });
}

#[test]
fn a_hung_broker_is_found_by_heartbeats_when_nothing_is_in_flight() {
    run(async {
        let mut rig = Rig::start(SimNet::new(2, 2, Duration::from_secs(5)), settings(2, 2));
        rig.log(10, 10);
        rig.flushed(Duration::from_secs(60)).await;
        let hung = rig.current_broker();
        rig.net.set_mode(hung, Mode::Hang);
        // Quiet: no publish waits for a confirm; two heartbeats (10 s) tell.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(rig.current_broker(), 1 - hung);
        assert_eq!(rig.stats().connection_losses, 1);
    });
}

#[test]
fn a_broker_that_refuses_every_publish_sees_a_few_connections_per_minute() {
    run(async {
        let mut rig = Rig::start(SimNet::new(1, 3, Duration::from_secs(5)), settings(1, 3));
        rig.net.set_mode(0, Mode::Forbid);
        rig.log(1000, 10);
        tokio::time::sleep(Duration::from_secs(600)).await;
        let connects = rig.net.connects(0);
        // Backoff doubles from 100 ms while connections die at once: about
        // ten in the first minute, then two to four a minute.
        assert!(
            connects <= 12 + 4 * 9,
            "{connects} connections in 10 minutes"
        );
        assert!(connects >= 5, "it keeps trying ({connects})");
        // Each record refused alone three times is given up; the others wait.
        let s = rig.stats();
        assert!(s.balanced(), "{s:?}");
        assert_eq!(s.confirmed, 0);
        assert!(s.rejected >= 1, "{s:?}");
        // Permission granted: everything left flows at once.
        rig.net.set_mode(0, Mode::Up);
        rig.flushed(Duration::from_secs(120)).await;
        let s = rig.stats();
        assert_eq!(s.confirmed + s.rejected, 1000, "{s:?}");
    });
}

#[test]
fn a_record_over_max_message_size_is_rejected_and_the_records_behind_flow() {
    run(async {
        let mut rig = Rig::start(SimNet::new(1, 4, Duration::from_secs(5)), settings(1, 4));
        rig.net.set_max_message_size(0, Some(1000));
        rig.log(50, 10);
        rig.log(1, 5000);
        rig.log(50, 10);
        rig.flushed(Duration::from_secs(60)).await;
        let s = rig.stats();
        assert_eq!((s.confirmed, s.rejected), (100, 1), "{s:?}");
        // One refusal among many in flight finds it, three alone give it up.
        assert_eq!(s.connection_losses, 4, "{s:?}");
    });
}

#[test]
fn no_timeout_overflows_a_deadline() {
    let now = Instant::now();
    assert!(deadline_after(now, Duration::MAX) > now + Duration::from_secs(365 * 24 * 3600));
    run(async {
        let mut rig = Rig::start(SimNet::new(1, 5, Duration::from_secs(5)), settings(1, 5));
        rig.log(10, 10);
        let (answer, _) = rig
            .wait(&rig.flush(Duration::MAX), Duration::from_secs(10))
            .await;
        assert_eq!(answer, Ok(()));
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        rig.ctrl
            .send(Control::Shutdown {
                timeout: Duration::MAX,
                reply,
            })
            .unwrap();
        rig.wait(&rx, Duration::from_secs(10)).await;
        assert_eq!(rig.stats().confirmed, 10);
    });
}

#[test]
fn processes_start_at_random_brokers_of_the_list() {
    let mut first = [0u32; 3];
    for seed in 0..30 {
        run(async {
            let rig = Rig::start(
                SimNet::new(3, seed, Duration::from_secs(5)),
                settings(3, seed),
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            first[rig.current_broker()] += 1;
        });
    }
    assert!(first.iter().all(|n| *n >= 3), "{first:?}");
}

#[test]
fn a_steady_trickle_of_records_does_not_wake_the_shipper_per_record() {
    run(async {
        let mut rig = Rig::start(SimNet::new(1, 4, Duration::ZERO), settings(1, 4));
        rig.log(1, 10);
        rig.flushed(Duration::from_secs(10)).await;
        // 500 records a second, one every 2 ms, for two seconds: the
        // shipper looks at the intake every `wake_interval` (1 ms) on its
        // own, so no caller has to wake it (a wake-up is a system call on
        // the caller's thread).
        let wakes_before = rig.intake.wakes();
        let t0 = Instant::now();
        let mut slowest = Duration::ZERO;
        for _ in 0..1000 {
            rig.log(1, 10);
            let confirmed_before = rig.stats().confirmed;
            let sent = Instant::now();
            while rig.stats().confirmed == confirmed_before {
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
            slowest = slowest.max(sent.elapsed());
            tokio::time::sleep_until(t0 + Duration::from_millis(2) * (rig.next as u32)).await;
        }
        let wakes = rig.intake.wakes() - wakes_before;
        assert!(wakes <= 2, "{wakes} wake-ups for 1,000 records");
        // Each record was still confirmed within the wake interval (1 ms)
        // plus the simulated broker's confirm delay (up to 2 ms) and this
        // loop's polling step.
        assert!(
            slowest <= Duration::from_micros(3_200),
            "slowest {slowest:?}"
        );
        // Quiet again: after a short linger the shipper stops looking and
        // waits for the next record to wake it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let wakes_before = rig.intake.wakes();
        rig.log(1, 10);
        assert_eq!(rig.intake.wakes() - wakes_before, 1, "parked when idle");
        rig.flushed(Duration::from_secs(10)).await;
    });
}
