//! The three-node RabbitMQ cluster of `scripts/cluster.sh`, started for a
//! test and always stopped afterwards (even when the test fails), and what
//! the cluster tests ask of it: which node holds a connection or leads a
//! queue, stopping and starting a node's RabbitMQ application.
//!
//! The cluster never touches the main broker on 127.0.0.1:5672. Its ports
//! and node names are fixed, so one cluster runs per machine at a time: a
//! lock file orders test processes (and checkouts) that want one.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where cluster users on one machine take turns.
const CLUSTER_LOCK_FILE: &str = "/tmp/logcollect-cluster.lock";

/// Bound on a node's restart; it takes a few seconds here.
pub const NODE_WAIT: Duration = Duration::from_secs(120);

/// A running three-node cluster; stopped on drop.
#[derive(Debug)]
pub struct Cluster {
    /// The failover list of the three nodes, `;`-separated.
    pub uri: String,
    /// `amqp://` URI of each node, in node order.
    pub uris: Vec<String>,
    /// Node names (`logcollect-c1@localhost`…), in the order of `uris`.
    pub nodes: Vec<String>,
    /// Nodes whose application [`Cluster::stop_app`] stopped.
    stopped: Mutex<HashSet<String>>,
    _lock: std::fs::File,
}

fn script() -> Command {
    Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/cluster.sh"
    ))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Cluster {
    /// Waits for this machine's cluster to be free, then starts it.
    pub fn start() -> Cluster {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(CLUSTER_LOCK_FILE)
            .expect("open the cluster lock file");
        lock.lock().expect("take the cluster lock");
        // From here on, drop stops the cluster whatever happens.
        let mut cluster = Cluster {
            uri: String::new(),
            uris: Vec::new(),
            nodes: Vec::new(),
            stopped: Mutex::new(HashSet::new()),
            _lock: lock,
        };
        let t0 = Instant::now();
        let out = script()
            .arg("start")
            .output()
            .expect("run scripts/cluster.sh");
        assert!(
            out.status.success(),
            "scripts/cluster.sh start failed: {}",
            text(&out)
        );
        println!("cluster started in {:.1} s", t0.elapsed().as_secs_f64());
        let uri = script().arg("uri").output().unwrap();
        cluster.uri = String::from_utf8(uri.stdout).unwrap().trim().to_owned();
        cluster.uris = cluster.uri.split(';').map(str::to_owned).collect();
        let nodes = script().arg("nodes").output().unwrap();
        cluster.nodes = String::from_utf8(nodes.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(cluster.nodes.len(), 3, "{:?}", cluster.nodes);
        assert_eq!(cluster.uris.len(), 3, "{:?}", cluster.uris);
        cluster
    }

    /// `rabbitmqctl -q -n <node> args…`; its standard output, or a panic
    /// with what it said.
    pub fn ctl(&self, node: &str, args: &[&str]) -> String {
        assert!(self.nodes.iter().any(|n| n == node), "not ours: {node}");
        let out = Command::new("rabbitmqctl")
            .args(["-q", "-n", node])
            .args(args)
            .output()
            .expect("rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl -n {node} {args:?}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pid of each connection named the way our shipper names them
    /// (`logcollect <host> pid <pid>`), by the node that holds it.
    pub fn connection_pids(&self) -> HashMap<String, Vec<u32>> {
        let mut by_node: HashMap<String, Vec<u32>> =
            self.nodes.iter().map(|n| (n.clone(), Vec::new())).collect();
        // Any running node lists the connections of the whole cluster; the
        // connection's Erlang pid names its node: `<node.1.2.0>`.
        let rows = self.ctl(
            &self.running_node(),
            &[
                "list_connections",
                "--no-table-headers",
                "pid",
                "client_properties",
            ],
        );
        // `<pid>\t[…{"connection_name","logcollect vm pid 123"}…]`
        let key = "{\"connection_name\",\"";
        for row in rows.lines() {
            let Some((erlang_pid, props)) = row.split_once('\t') else {
                continue;
            };
            let node = self.nodes.iter().find(|n| {
                erlang_pid
                    .trim_start_matches('<')
                    .starts_with(&format!("{n}."))
            });
            let pid = props.find(key).and_then(|at| {
                let name = &props[at + key.len()..];
                let name = &name[..name.find('"')?];
                name.strip_prefix("logcollect ")?
                    .rsplit_once(" pid ")?
                    .1
                    .parse()
                    .ok()
            });
            if let (Some(node), Some(pid)) = (node, pid) {
                by_node.entry(node.clone()).or_default().push(pid);
            }
        }
        by_node
    }

    /// The node holding the one connection of process `pid`, once there is
    /// exactly one.
    pub fn node_of_connection(&self, pid: u32) -> String {
        let t0 = Instant::now();
        loop {
            let holding: Vec<String> = self
                .connection_pids()
                .into_iter()
                .filter(|(_, pids)| pids.contains(&pid))
                .map(|(node, _)| node)
                .collect();
            if holding.len() == 1 {
                return holding[0].clone();
            }
            assert!(
                t0.elapsed() < NODE_WAIT,
                "connections of pid {pid} found on {holding:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node leading quorum queue `queue` in vhost `/`.
    pub fn leader(&self, queue: &str) -> String {
        let node = self.running_node();
        let rows = self.ctl(
            &node,
            &["list_queues", "--no-table-headers", "name", "leader"],
        );
        rows.lines()
            .find_map(|row| {
                let mut cols = row.split('\t');
                (cols.next() == Some(queue)).then(|| cols.next().unwrap_or("").trim().to_owned())
            })
            .unwrap_or_else(|| panic!("queue {queue} not listed: {rows}"))
    }

    /// A node whose RabbitMQ application runs.
    pub fn running_node(&self) -> String {
        let stopped = self.stopped.lock().unwrap();
        self.nodes
            .iter()
            .find(|n| !stopped.contains(*n))
            .cloned()
            .expect("every node of the cluster is stopped")
    }

    /// The URI of `node` as lapin writes it (vhost `/` is `%2f`).
    pub fn lapin_url(&self, node: &str) -> String {
        let i = self.nodes.iter().position(|n| n == node).unwrap();
        let celery = &self.uris[i];
        format!("{}/%2f", celery.trim_end_matches('/'))
    }

    /// Stops `node`'s RabbitMQ application (its Erlang VM keeps running, as
    /// after a crash of the broker it is a member of the cluster still).
    pub fn stop_app(&self, node: &str) {
        self.stopped.lock().unwrap().insert(node.to_owned());
        self.ctl(node, &["stop_app"]);
    }

    /// Starts `node`'s application again and waits until it runs.
    pub fn start_app(&self, node: &str) {
        self.ctl(node, &["start_app"]);
        self.ctl(node, &["await_startup", "--timeout", "120"]);
        self.stopped.lock().unwrap().remove(node);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Always, even when the test failed: never leave nodes running.
        match script().arg("stop").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("scripts/cluster.sh stop: {}", text(&out)),
            Err(e) => eprintln!("scripts/cluster.sh stop: {e}"),
        }
    }
}
