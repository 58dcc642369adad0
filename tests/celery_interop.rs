//! The correlation helpers against real Python: Celery 5 publishes tasks
//! with `apply_async` (plain, as a subtask, and with asgi-correlation-id's
//! `CORRELATION_ID` header) and `logcollect::correlation::extract_properties`
//! reads the id a Python service means; then kombu reads what
//! `inject_properties` publishes, with someone else's `correlation_id`
//! property and `traceparent` intact.
//!
//! The Python side (`tests/python/celery_interop.py`) runs in a virtual
//! environment under `target/python-interop`, made on first use with
//! Python 3.12 (else 3.11, else `python3`) and
//! `tests/python/requirements-interop.txt` from PyPI;
//! `LOGCOLLECT_INTEROP_PYTHON` names an interpreter that already has them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use logcollect::correlation;
use logcollect_tests::{unique, AMQP_URL};

fn root() -> &'static Path {
    // This crate lives in `tests/` of the workspace.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `python<version>` from PATH when it runs, else from pyenv's versions
/// directory (pyenv's shims refuse a version that is not selected), as
/// `scripts/python_test.sh` finds it.
fn find_python(version: &str) -> Option<PathBuf> {
    let exe = format!("python{version}");
    if runs(Path::new(&exe)) {
        return Some(PathBuf::from(exe));
    }
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(pyenv.join("versions"))
        .ok()?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&format!("{version}.")))
        })
        .map(|e| e.path().join("bin").join(&exe))
        .filter(|p| runs(p))
        .collect();
    found.sort();
    found.pop()
}

fn runs(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import sys; assert sys.version_info >= (3, 9)"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn check(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The interpreter with Celery, kombu and asgi-correlation-id.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(p) = std::env::var_os("LOGCOLLECT_INTEROP_PYTHON") {
            return PathBuf::from(p);
        }
        let requirements = root().join("tests/python/requirements-interop.txt");
        let wanted = std::fs::read_to_string(&requirements).unwrap();
        let venv = root().join("target/python-interop/venv");
        let py = venv.join("bin/python");
        let stamp = venv.join("requirements.stamp");
        if py.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
            return py;
        }
        let base = ["3.12", "3.11"]
            .into_iter()
            .find_map(find_python)
            .or_else(|| runs(Path::new("python3")).then(|| PathBuf::from("python3")))
            .expect("a Python 3 interpreter (3.12, 3.11 or python3) for the Celery interop test");
        check(Command::new(base).arg("-m").arg("venv").arg(&venv));
        check(
            Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "-q",
                    "-r",
                ])
                .arg(&requirements),
        );
        std::fs::write(&stamp, wanted).unwrap();
        py
    })
}

/// Runs the Python side with `args`; its stdout as JSON.
fn py(args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(root().join("tests/python/celery_interop.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "celery_interop.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "celery_interop.py {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// One runtime per test: the AMQP connection lives on it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The next message of `queue` (waits up to 30 s).
async fn get(ch: &lapin::Channel, queue: &str) -> BasicProperties {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            return m.delivery.properties.clone();
        }
        assert!(Instant::now() < deadline, "no message in {queue}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(props: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref()?.inner().get(key)
}

fn header_text(props: &BasicProperties, key: &str) -> Option<String> {
    match header(props, key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[test]
fn celery_published_tasks_yield_the_flows_id() {
    let queue = unique("interop-celery");
    let rt = runtime();
    let conn = rt
        .block_on(Connection::connect(
            AMQP_URL,
            ConnectionProperties::default(),
        ))
        .unwrap();
    let ch = rt.block_on(conn.create_channel()).unwrap();

    // Celery declares the queue (durable) and an exchange of the same name
    // on publish; both are removed at the end.
    let plain = py(&["publish", &queue, "plain"]);
    let task_id = plain["task_id"].as_str().unwrap().to_owned();
    let props = rt.block_on(get(&ch, &queue));
    assert_eq!(
        props.correlation_id().as_ref().map(|s| s.as_str()),
        Some(task_id.as_str()),
        "Celery puts the task id in the property"
    );
    assert_eq!(header_text(&props, "task").as_deref(), Some("interop.add"));
    assert_eq!(
        correlation::extract_properties(&props).as_deref(),
        Some(task_id.as_str()),
        "a task sent outside any flow: its own id ({:?})",
        props.headers()
    );

    // A subtask: the flow's root, not the task's own id in the property.
    let sub = py(&["publish", &queue, "subtask"]);
    let props = rt.block_on(get(&ch, &queue));
    assert_eq!(
        props.correlation_id().as_ref().map(|s| s.as_str()),
        sub["task_id"].as_str()
    );
    assert_eq!(
        header_text(&props, "root_id").as_deref(),
        Some("root-flow-1")
    );
    assert_eq!(
        correlation::extract_properties(&props).as_deref(),
        Some("root-flow-1")
    );

    // asgi-correlation-id's convention: the web request's id wins.
    py(&["publish", &queue, "asgi"]);
    let props = rt.block_on(get(&ch, &queue));
    assert_eq!(
        header_text(&props, correlation::HEADER).as_deref(),
        Some("req-from-asgi-1")
    );
    assert_eq!(
        correlation::extract_properties(&props).as_deref(),
        Some("req-from-asgi-1")
    );

    rt.block_on(async {
        let _ = ch
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = ch
            .exchange_delete(queue.as_str().into(), Default::default())
            .await;
        let _ = conn.close(200, "bye".into()).await;
    });
}

#[test]
fn kombu_reads_what_we_publish_and_their_context_survives() {
    let queue = unique("interop-kombu");
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let rt = runtime();
    let conn = rt
        .block_on(Connection::connect(
            AMQP_URL,
            ConnectionProperties::default(),
        ))
        .unwrap();
    let ch = rt.block_on(conn.create_channel()).unwrap();
    rt.block_on(async {
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        // 1: a message of our own.
        let props = correlation::inject_properties(BasicProperties::default(), "rust-id-1");
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
        // 2: an RPC request that already has a trace context.
        let mut h = FieldTable::default();
        h.insert("traceparent".into(), AMQPValue::LongString(theirs.into()));
        let props = BasicProperties::default()
            .with_headers(h)
            .with_correlation_id("rpc-7".into());
        let props = correlation::inject_properties(props, "rust-id-2");
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    });

    let read = py(&["read", &queue, "2"]);
    let first = &read[0];
    assert_eq!(first["headers"]["CORRELATION_ID"], "rust-id-1", "{read}");
    assert_eq!(first["correlation_id"], "rust-id-1");
    let tp = first["headers"]["traceparent"].as_str().unwrap();
    assert!(correlation::trace_id_from_traceparent(tp).is_some(), "{tp}");
    assert!(tp.ends_with("-00"), "no sampling decision claimed: {tp}");

    let second = &read[1];
    assert_eq!(second["headers"]["CORRELATION_ID"], "rust-id-2", "{read}");
    assert_eq!(second["correlation_id"], "rpc-7", "the RPC id is untouched");
    assert_eq!(
        second["headers"]["traceparent"], theirs,
        "their trace context is untouched"
    );

    rt.block_on(async {
        let _ = ch
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = conn.close(200, "bye".into()).await;
    });
}
