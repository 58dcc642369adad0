//! A real three-node RabbitMQ cluster (`scripts/cluster.sh`, beside the main
//! broker, which is never touched), a quorum queue, and the shipper given
//! the failover list of the three nodes:
//!
//! 1. the node the shipper is connected to stops mid-stream: the shipper
//!    moves on to another node and the queue is missing no record;
//! 2. a node that neither leads the queue nor holds the shipper's connection
//!    stops mid-stream: nothing to see for the shipper, no record missing;
//! 3. a fleet of 20 processes sharing the failover list spreads over more
//!    than one node, and every member moves on when its node stops.
//!
//! The scenarios share one cluster (starting one takes 15 to 25 s on this
//! machine), so they run in order in one test; the cluster is stopped at the
//! end whatever happens. The figures printed (run with `-- --nocapture`) are
//! the ones the README quotes.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable};
use logcollect::{Level, Record, Shipper, Stats};
use logcollect_tests::cluster::{Cluster, NODE_WAIT};
use logcollect_tests::faults::{drain_keyed_at, durable_capture_at, stream_with, WAIT};
use logcollect_tests::unique;

/// Records streamed in each failover scenario: at [`PACE`], about 6 s of
/// records, so the stream is still going when the stopped node closes its
/// connections (1 to 4 s after `stop_app` on this machine).
const RECORDS: u64 = 10_000;
/// Pause after every 100 records: about 1,700 records a second, below what
/// a quorum queue takes here with three nodes on two cores.
const PACE: Duration = Duration::from_millis(60);
/// Processes of the fleet.
const FLEET: usize = 20;

#[test]
fn three_node_cluster() {
    let cluster = Cluster::start();
    let t0 = Instant::now();
    connected_node_stops_mid_stream(&cluster);
    println!("(scenario 1 took {:.1} s)", t0.elapsed().as_secs_f64());
    let t1 = Instant::now();
    follower_node_stops_mid_stream(&cluster);
    println!("(scenario 2 took {:.1} s)", t1.elapsed().as_secs_f64());
    let t2 = Instant::now();
    fleet_spreads_and_moves_on(&cluster);
    println!("(scenario 3 took {:.1} s)", t2.elapsed().as_secs_f64());
}

/// A durable topic exchange and a quorum queue bound with `logstash.#`,
/// declared through `node`.
fn quorum_queue(cluster: &Cluster, node: &str, exchange: &str, queue: &str) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    durable_capture_at(&cluster.lapin_url(node), exchange, queue, args);
}

fn shipper(cluster: &Cluster, exchange: &str) -> Shipper {
    let config = logcollect_tests::config(exchange)
        .broker_uri(cluster.uri.as_str())
        .durable(true)
        .reconnect_min(Duration::from_millis(100))
        .reconnect_max(Duration::from_secs(1))
        .shutdown_timeout(WAIT)
        .build()
        .unwrap();
    let shipper = Shipper::new(config).unwrap();
    // One record, confirmed: the shipper is connected before the stream.
    assert!(shipper.submit(&Record::new(Level::Info, "cluster", "hello")));
    shipper.flush(WAIT).expect("first record confirmed");
    shipper
}

/// What the shipper went through after the node was told to stop (times
/// counted from then): when it saw the connection go, when it was
/// connected to another node, and the longest time without a new confirm.
#[derive(Debug, Default)]
struct Timeline {
    lost: Option<Duration>,
    reconnected: Option<Duration>,
    confirming: Option<Duration>,
    /// From the last confirm before the loss to the first one after it.
    confirm_gap: Option<Duration>,
}

impl Timeline {
    fn ms(d: Option<Duration>) -> String {
        d.map_or_else(|| "never".to_owned(), |d| format!("{} ms", d.as_millis()))
    }
}

/// Watches the shipper's stats from `t0` until it confirmed records again
/// after a connection loss, or `limit` passed.
fn watch(shipper: &Shipper, t0: Instant, before: &Stats, limit: Duration) -> Timeline {
    let mut timeline = Timeline::default();
    let mut confirmed = shipper.stats().confirmed;
    let mut last_confirm = t0;
    while t0.elapsed() < limit {
        let s = shipper.stats();
        let now = Instant::now();
        if timeline.lost.is_none() && s.connection_losses > before.connection_losses {
            timeline.lost = Some(now - t0);
        }
        if timeline.lost.is_some()
            && timeline.reconnected.is_none()
            && s.connected
            && s.connects > before.connects
        {
            timeline.reconnected = Some(now - t0);
        }
        if s.confirmed > confirmed {
            confirmed = s.confirmed;
            if timeline.reconnected.is_some() {
                timeline.confirming = Some(now - t0);
                timeline.confirm_gap = Some(now - last_confirm);
                break;
            }
            last_confirm = now;
        }
        // Polling resolution of the figures, not a synchronisation.
        std::thread::sleep(Duration::from_millis(1));
    }
    timeline
}

/// Missing and duplicated numbers at the queue (drained through `node`),
/// checked: none missing, duplicates only as the same record id.
fn count_at_queue(
    cluster: &Cluster,
    node: &str,
    exchange: &str,
    queue: &str,
    stats: &Stats,
) -> u64 {
    let number = |v: &serde_json::Value| v["i"].as_u64();
    let (by_i, by_id) = drain_keyed_at(&cluster.lapin_url(node), exchange, queue, RECORDS, number);
    let missing = (0..RECORDS).filter(|i| !by_i.contains_key(i)).count();
    let duplicates: u64 = by_i.values().map(|c| u64::from(c - 1)).sum();
    let dup_ids: u64 = by_id.values().map(|c| u64::from(c - 1)).sum();
    assert_eq!(
        missing, 0,
        "records missing at the quorum queue; stats {stats:?}"
    );
    assert_eq!(duplicates, dup_ids, "a duplicate with a new record id");
    assert!(
        duplicates <= stats.republished,
        "more duplicates ({duplicates}) than republishes: {stats:?}"
    );
    duplicates
}

fn connected_node_stops_mid_stream(cluster: &Cluster) {
    let (ex, q) = (unique("cluster-failover"), unique("cluster-failover-q"));
    let shipper = shipper(cluster, &ex);
    let pid = std::process::id();
    let victim = cluster.node_of_connection(pid);
    // Declared through the shipper's node, the queue is led from there
    // (RabbitMQ places a quorum queue's leader on the declaring node): the
    // stop takes the connection and the leader at once, the worst case.
    quorum_queue(cluster, &victim, &ex, &q);
    let was_leader = cluster.leader(&q) == victim;
    let before = shipper.stats();
    let timeline = stream_with(&shipper, RECORDS, PACE, || {
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        std::thread::scope(|s| {
            let watcher = s.spawn(|| watch(&shipper, t0, &before, WAIT));
            cluster.stop_app(&victim);
            watcher.join().unwrap()
        })
    });
    shipper.flush(WAIT).expect("flush after the failover");
    let stats = shipper.stats();
    let now_on = cluster.node_of_connection(pid);
    assert_ne!(now_on, victim, "still connected to the stopped node");
    assert!(
        stats.connection_losses > before.connection_losses,
        "{stats:?}"
    );
    let duplicates = count_at_queue(cluster, &now_on, &ex, &q, &stats);
    println!(
        "cluster: connected node stopped mid-stream ({}): sent {RECORDS}, missing 0, duplicates \
         {duplicates} (republished {}); after `stop_app`: connection lost at {}, reconnected to \
         another node at {}, confirms again at {}; no confirm for {}",
        if was_leader {
            "also the queue's leader"
        } else {
            "a follower of the queue"
        },
        stats.republished - before.republished,
        Timeline::ms(timeline.lost),
        Timeline::ms(timeline.reconnected),
        Timeline::ms(timeline.confirming),
        Timeline::ms(timeline.confirm_gap),
    );
    shipper.shutdown(WAIT).unwrap();
    cluster.start_app(&victim);
}

fn follower_node_stops_mid_stream(cluster: &Cluster) {
    let (ex, q) = (unique("cluster-follower"), unique("cluster-follower-q"));
    quorum_queue(cluster, &cluster.nodes[1], &ex, &q);
    let shipper = shipper(cluster, &ex);
    let pid = std::process::id();
    let connected = cluster.node_of_connection(pid);
    let leader = cluster.leader(&q);
    let victim = cluster
        .nodes
        .iter()
        .find(|n| **n != connected && **n != leader)
        .expect("three nodes: one is neither")
        .clone();
    let before = shipper.stats();
    stream_with(&shipper, RECORDS, PACE, || {
        std::thread::sleep(Duration::from_millis(300));
        cluster.stop_app(&victim);
    });
    shipper.flush(WAIT).expect("flush with a follower down");
    let stats = shipper.stats();
    assert_eq!(
        stats.connection_losses, before.connection_losses,
        "a follower's stop reached the shipper: {stats:?}"
    );
    let duplicates = count_at_queue(cluster, &connected, &ex, &q, &stats);
    assert_eq!(duplicates, 0, "nothing to republish: {stats:?}");
    println!(
        "cluster: a node with neither the connection nor the queue's leader stopped mid-stream: \
         sent {RECORDS}, missing 0, duplicates 0, no reconnect"
    );
    shipper.shutdown(WAIT).unwrap();
    cluster.start_app(&victim);
}

/// A running fleet member: its stdin, and its answers.
struct Member {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: mpsc::Receiver<String>,
}

impl Member {
    fn start(cluster: &Cluster, exchange: &str) -> Member {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleet_member"))
            .env("LOGCOLLECT_BROKER_URI", &cluster.uri)
            .env("LOGCOLLECT_EXCHANGE", exchange)
            .env_remove("LOGCOLLECT_SPOOL_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a fleet member");
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Member {
            stdin: child.stdin.take(),
            child,
            answers,
        }
    }

    fn ask(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap();
    }

    fn await_answer(&self, line: &str) {
        let answer = self
            .answers
            .recv_timeout(NODE_WAIT)
            .unwrap_or_else(|e| panic!("member {} did not confirm {line:?}: {e}", self.child.id()));
        assert_eq!(answer, format!("confirmed {line}"));
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Only when the test failed half-way: don't leave members behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How many members each node holds, once all `FLEET` are connected.
fn spread(cluster: &Cluster, members: &[Member]) -> HashMap<String, usize> {
    let ours: Vec<u32> = members.iter().map(|m| m.child.id()).collect();
    let t0 = Instant::now();
    loop {
        let per_node: HashMap<String, usize> = cluster
            .connection_pids()
            .into_iter()
            .map(|(node, pids)| (node, pids.iter().filter(|p| ours.contains(p)).count()))
            .collect();
        if per_node.values().sum::<usize>() == FLEET {
            return per_node;
        }
        assert!(t0.elapsed() < NODE_WAIT, "members connected: {per_node:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn fleet_spreads_and_moves_on(cluster: &Cluster) {
    let (ex, q) = (unique("cluster-fleet"), unique("cluster-fleet-q"));
    // Routable records: an unroutable one counts as lost for the members.
    quorum_queue(cluster, &cluster.nodes[2], &ex, &q);
    let mut members: Vec<Member> = (0..FLEET).map(|_| Member::start(cluster, &ex)).collect();
    for m in &mut members {
        m.ask("first");
    }
    for m in &members {
        m.await_answer("first");
    }
    let first = spread(cluster, &members);
    let used = first.values().filter(|n| **n > 0).count();
    println!("cluster: fleet of {FLEET} processes, connections per node: {first:?}");
    // Each member picks its first node at random: all 20 on one node of
    // three has a chance of 3 in 3^20 (about 1 in a billion).
    assert!(used > 1, "every member started on the same node: {first:?}");

    // The busiest node stops: its members move on, nobody loses a record.
    let (victim, _) = first.iter().max_by_key(|(_, n)| **n).unwrap();
    let victim = victim.clone();
    cluster.stop_app(&victim);
    for m in &mut members {
        m.ask("second");
    }
    for m in &members {
        m.await_answer("second");
    }
    let after = spread(cluster, &members);
    println!("cluster: after {victim} stopped: {after:?}");
    assert_eq!(after.get(&victim).copied().unwrap_or(0), 0, "{after:?}");
    for m in &mut members {
        m.stdin.take();
    }
    for m in &mut members {
        let status = m.child.wait().unwrap();
        assert!(
            status.success(),
            "member {} lost records: {status}",
            m.child.id()
        );
    }
    cluster.start_app(&victim);
    // Each member's two records are at the queue.
    let key = |v: &serde_json::Value| {
        Some(v["member"].as_u64()? * 2 + u64::from(v["message"] == "second"))
    };
    let want = 2 * FLEET as u64;
    let (records, _) = drain_keyed_at(&cluster.lapin_url(&victim), &ex, &q, want, key);
    assert_eq!(records.len() as u64, want, "{records:?}");
}
