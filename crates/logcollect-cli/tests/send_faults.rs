//! `logcollect send` under broker faults: it exits 0 once every stdin line
//! is confirmed, whatever happened meanwhile. These tests stop the shared
//! broker, so they hold the fault lock and always restore it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use logcollect_tests::faults::{
    ctl, drain_keyed, durable_capture, serial, wait_broker_up, Restore,
};
use logcollect_tests::unique;

fn send(exchange: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_logcollect"))
        .args([
            "send",
            "--logger",
            "cron.job",
            "--durable=true",
            "--field",
            "job=nightly",
        ])
        .env("LOGCOLLECT_EXCHANGE", exchange)
        .env(
            "LOGCOLLECT_BROKER_URI",
            "amqp://guest:guest@127.0.0.1:5672//",
        )
        .env("LOGCOLLECT_SHUTDOWN_TIMEOUT", "60")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn numbered(n: u64) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!("line {i}"))
}

/// Waits for `send` to exit 0, then checks every line arrived (as its own
/// record, level INFO, logger `cron.job`, field `job`) with no loss.
fn check(name: &str, ex: &str, q: &str, n: u64, child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: send failed: {stderr}");
    let number = |v: &serde_json::Value| {
        assert_eq!(v["logger"], "cron.job");
        assert_eq!(v["job"], "nightly");
        v["message"].as_str()?.strip_prefix("line ")?.parse().ok()
    };
    let (by_line, _) = drain_keyed(ex, q, n, number);
    let missing = (0..n).filter(|i| !by_line.contains_key(i)).count();
    println!(
        "fault {name} (logcollect send): sent {n}, received {} distinct, missing {missing}",
        by_line.len()
    );
    assert_eq!(missing, 0, "{name}: lines lost");
}

#[test]
fn send_exits_zero_when_the_broker_comes_up_after_it_started() {
    let _serial = serial();
    let _restore = Restore::ensure();
    let (ex, q) = (unique("send-late"), unique("send-late-q"));
    durable_capture(&ex, &q);
    ctl(&["-q", "stop_app"]);
    let mut child = send(&ex);
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in numbered(200) {
            writeln!(stdin, "{line}").unwrap();
        }
    } // stdin closed: send now waits for confirms
    std::thread::sleep(Duration::from_secs(2));
    ctl(&["-q", "start_app"]);
    wait_broker_up();
    check("broker down at start", &ex, &q, 200, child);
}

#[test]
fn send_exits_zero_after_the_broker_app_stops_mid_stream() {
    let _serial = serial();
    let _restore = Restore::ensure();
    let (ex, q) = (unique("send-stop"), unique("send-stop-q"));
    durable_capture(&ex, &q);
    let mut child = send(&ex);
    {
        let mut stdin = child.stdin.take().unwrap();
        let mut lines = numbered(400);
        for line in lines.by_ref().take(200) {
            writeln!(stdin, "{line}").unwrap();
        }
        stdin.flush().unwrap();
        ctl(&["-q", "stop_app"]);
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
        std::thread::sleep(Duration::from_secs(3));
        ctl(&["-q", "start_app"]);
        wait_broker_up();
    }
    check("broker app stopped mid-stream", &ex, &q, 400, child);
}

#[test]
fn send_exits_zero_after_its_connection_is_cut() {
    let _serial = serial();
    let _restore = Restore::ensure();
    let (ex, q) = (unique("send-cut"), unique("send-cut-q"));
    durable_capture(&ex, &q);
    let mut child = send(&ex);
    {
        let mut stdin = child.stdin.take().unwrap();
        for (k, line) in numbered(3000).enumerate() {
            writeln!(stdin, "{line}").unwrap();
            if k % 1000 == 999 {
                stdin.flush().unwrap();
                std::thread::sleep(Duration::from_millis(200));
                ctl(&["-q", "close_all_connections", "logcollect send fault test"]);
            }
        }
    }
    check("connections cut", &ex, &q, 3000, child);
}
