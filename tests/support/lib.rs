//! Support for the integration tests: unique names, a capture queue on the
//! real broker, and a TCP proxy that can be started late or cut.
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod cluster;
pub mod faults;
pub mod guards;
pub mod proxy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

pub const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672//";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A name no other test (or run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A config for `exchange` on the local broker with a short shutdown deadline.
pub fn config(exchange: &str) -> logcollect::ConfigBuilder {
    logcollect::Config::builder()
        .broker_uri(BROKER)
        .exchange(exchange)
        .level("trace")
        .activity_identity([("project", "demo"), ("application", "backend")])
        .shutdown_timeout(Duration::from_secs(10))
}

/// One message as the consumer saw it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub routing_key: String,
    pub exchange: String,
    pub properties: BasicProperties,
    pub raw: Vec<u8>,
    pub body: serde_json::Value,
}

impl Msg {
    pub fn field(&self, k: &str) -> &serde_json::Value {
        &self.body[k]
    }
    pub fn str(&self, k: &str) -> &str {
        self.body[k]
            .as_str()
            .unwrap_or_else(|| panic!("field {k} not a string in {}", self.body))
    }
}

/// An exclusive queue bound to a topic exchange, consumed on a private
/// runtime thread; messages arrive on a channel.
pub struct Capture {
    rx: std::sync::mpsc::Receiver<Msg>,
    _rt: std::thread::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Capture {
    /// Declares `exchange` as a topic exchange with the flags the shipper
    /// uses by default (not durable, not auto-delete) and binds a queue with `binding`.
    pub fn topic(exchange: &str, binding: &str) -> Capture {
        Capture::start(exchange, ExchangeKind::Topic, false, binding)
    }

    pub fn start(exchange: &str, kind: ExchangeKind, durable: bool, binding: &str) -> Capture {
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let exchange = exchange.to_owned();
        let binding = binding.to_owned();
        let rt = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
                    .await
                    .expect("capture: connect to the local broker");
                let ch = conn.create_channel().await.unwrap();
                ch.exchange_declare(
                    exchange.as_str().into(),
                    kind,
                    ExchangeDeclareOptions {
                        durable,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("capture: declare exchange");
                let q = ch
                    .queue_declare(
                        "".into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                ch.queue_bind(
                    q.name().clone(),
                    exchange.as_str().into(),
                    binding.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
                let mut consumer = ch
                    .basic_consume(
                        q.name().clone(),
                        "capture".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut stop_rx = stop_rx;
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        d = consumer.next() => {
                            let Some(Ok(d)) = d else { break };
                            let _ = d.acker.ack(BasicAckOptions::default()).await;
                            let body = parse_body(&d.data);
                            let _ = tx.send(Msg {
                                routing_key: d.routing_key.to_string(),
                                exchange: d.exchange.to_string(),
                                properties: d.properties.clone(),
                                raw: d.data.clone(),
                                body,
                            });
                        }
                    }
                }
                let _ = conn.close(200, "bye".into()).await;
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("capture queue ready");
        Capture {
            rx,
            _rt: rt,
            stop: Some(stop_tx),
        }
    }

    /// Waits for `n` messages; panics with what came if they do not within `timeout`.
    pub fn take(&self, n: usize, timeout: Duration) -> Vec<Msg> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => out.push(m),
                Err(_) => panic!(
                    "expected {n} messages, got {} within {timeout:?}",
                    out.len()
                ),
            }
        }
        out
    }

    /// Whatever arrives within `quiet` of silence.
    pub fn drain(&self, quiet: Duration) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.recv_timeout(quiet) {
            out.push(m);
        }
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A body as JSON: one object, an array (batch), or newline-delimited
/// objects (a `json_lines` batch, returned as an array). Panics otherwise.
pub fn parse_body(data: &[u8]) -> serde_json::Value {
    if let Ok(v) = serde_json::from_slice(data) {
        return v;
    }
    let text = std::str::from_utf8(data).expect("body is UTF-8");
    let lines: Result<Vec<serde_json::Value>, _> = text
        .split_terminator('\n')
        .map(serde_json::from_str)
        .collect();
    match lines {
        Ok(v) if text.ends_with('\n') => serde_json::Value::Array(v),
        _ => panic!("body is not JSON nor JSON lines: {text}"),
    }
}

/// Declares an exchange of any kind up front (to provoke conflicts).
pub fn declare_exchange(exchange: &str, kind: ExchangeKind, durable: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            exchange.into(),
            kind,
            ExchangeDeclareOptions {
                durable,
                auto_delete: false,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
    });
}

/// Deletes an exchange (clean-up for exchanges a test declared).
pub fn delete_exchange(exchange: &str) {
    delete_exchange_at(AMQP_URL, exchange);
}

/// [`delete_exchange`] on the broker at `url` (a lapin URL).
pub fn delete_exchange_at(url: &str, exchange: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if let Ok(conn) = Connection::connect(url, ConnectionProperties::default()).await {
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch
                    .exchange_delete(exchange.into(), Default::default())
                    .await;
            }
            let _ = conn.close(200, "bye".into()).await;
        }
    });
}

/// A TCP proxy to the broker on a free local port. It accepts nothing until
/// [`Proxy::open`]; [`Proxy::cut`] drops every live connection.
pub struct Proxy {
    pub port: u16,
    open_tx: tokio::sync::watch::Sender<u64>,
    _thread: std::thread::JoinHandle<()>,
}

impl Proxy {
    /// Reserves a port; nothing listens on it until `open`.
    pub fn closed() -> Proxy {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        // watch value: 0 = closed, odd = open generation, even>0 = cut request.
        let (open_tx, mut open_rx) = tokio::sync::watch::channel(0u64);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                while *open_rx.borrow() == 0 {
                    if open_rx.changed().await.is_err() {
                        return;
                    }
                }
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("proxy bind");
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            let Ok((mut inbound, _)) = r else { continue };
                            let mut cut = open_rx.clone();
                            let gen = *cut.borrow();
                            tokio::spawn(async move {
                                let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else { return };
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                    _ = async { while *cut.borrow() == gen { if cut.changed().await.is_err() { std::future::pending::<()>().await } } } => {}
                                }
                            });
                        }
                        r = open_rx.changed() => if r.is_err() { return },
                    }
                }
            });
        });
        Proxy {
            port,
            open_tx,
            _thread: thread,
        }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}//", self.port)
    }

    /// Starts listening and forwarding.
    pub fn open(&self) {
        self.open_tx.send_modify(|g| *g = 1);
    }

    /// Drops every connection forwarded so far (new ones are accepted).
    pub fn cut(&self) {
        self.open_tx.send_modify(|g| *g += 2);
    }
}

/// Field names and JSON types of a reference message body: `file` of the
/// recorded Python 0.14 messages in `tests/fixtures/python-0.14/`.
pub fn reference_body(file: &str) -> serde_json::Map<String, serde_json::Value> {
    let path = format!("{}/fixtures/python-0.14/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["body"].as_object().unwrap().clone()
}

pub fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(n) if n.is_f64() => "float",
        serde_json::Value::Number(_) => "int",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Makes sure the local broker has a TLS listener on 127.0.0.1:5671 with a
/// CA generated for the tests (and one on 5674 that demands a client
/// certificate from that CA: `client.pem`/`client.key` beside it), and
/// returns the CA's PEM path. The listeners are added at run time
/// (`rabbitmqctl eval`), so the broker's configuration is never changed; a
/// broker restart drops them and the next call adds them again.
pub fn ensure_tls_listener() -> std::path::PathBuf {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let _once = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join("logcollect-test-tls");
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !dir.join("server.pem").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 -subj '/CN=logcollect test CA'");
        sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=localhost'");
        sh("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf");
        sh("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 3650 -extfile ext.cnf");
        // A second, unrelated CA: the "wrong CA" of the tests.
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.pem -days 3650 -subj '/CN=some other CA'");
        sh("chmod 755 . && chmod 644 *");
    }
    if !dir.join("client.pem").exists() {
        // A client certificate from the same CA, key in PKCS#8 PEM.
        sh("openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj '/CN=logcollect-test-client'");
        sh("printf 'extendedKeyUsage=clientAuth\\n' > client-ext.cnf");
        sh("openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 3650 -extfile client-ext.cnf");
        sh("chmod 644 *");
    }
    // Listeners left by an earlier run may serve other certificates: start
    // ours afresh once per test process, and again whenever one is gone.
    let first = !STARTED.swap(true, Ordering::SeqCst);
    for (port, demand_client_cert) in [(5671, false), (5674, true)] {
        let open = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if first || !open {
            start_tls_listener(&dir, port, demand_client_cert);
        }
    }
    dir.join("ca.pem")
}

/// (Re)starts a TLS listener of the local broker on `port` with the test
/// certificates in `dir`, and waits until it accepts connections.
fn start_tls_listener(dir: &std::path::Path, port: u16, demand_client_cert: bool) {
    let eval = |expr: &str| {
        std::process::Command::new("rabbitmqctl")
            .args(["eval", expr])
            .output()
            .expect("rabbitmqctl")
    };
    let port_open = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let wait = |want_open: bool, what: &str| {
        let t0 = Instant::now();
        while port_open() != want_open {
            assert!(t0.elapsed() < Duration::from_secs(30), "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let _ = eval(&format!(
        "rabbit_networking:stop_tcp_listener({{\"127.0.0.1\", {port}}})."
    ));
    wait(false, &format!("old TLS listener on {port} did not close"));
    // Erlang caches PEM files by path: certificates regenerated under the
    // same names would otherwise still be served from the cache.
    let _ = eval("ssl:clear_pem_cache().");
    let d = dir.display();
    let (verify, fail_if_no_peer_cert) = if demand_client_cert {
        ("verify_peer", "true")
    } else {
        ("verify_none", "false")
    };
    let out = eval(&format!(
        "rabbit_networking:start_ssl_listener({{\"127.0.0.1\", {port}}}, [{{cacertfile,\"{d}/ca.pem\"}},{{certfile,\"{d}/server.pem\"}},{{keyfile,\"{d}/server.key\"}},{{verify,{verify}}},{{fail_if_no_peer_cert,{fail_if_no_peer_cert}}}], 1)."
    ));
    assert!(
        out.status.success(),
        "TLS listener on {port}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait(true, &format!("TLS listener on {port} did not open"));
}
