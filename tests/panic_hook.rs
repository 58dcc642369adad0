//! Boot's panic hook ships every panic as a `CRITICAL` record: a panicking
//! thread and a panicking `main`, each in a child process
//! (`bin/panicker.rs`), each record counted at the broker.

use std::process::Command;
use std::time::Duration;

use logcollect_tests::{unique, Capture, Msg};

fn run(exchange: &str, mode: &str, hook: bool) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_panicker"))
        .args([exchange, mode])
        .env("LOGCOLLECT_PANIC_HOOK", if hook { "true" } else { "false" })
        .output()
        .expect("run the panicker")
}

fn critical(msgs: &[Msg]) -> Vec<&Msg> {
    msgs.iter()
        .filter(|m| m.str("levelname") == "CRITICAL")
        .collect()
}

#[test]
fn a_panicking_thread_is_shipped_as_one_critical_record() {
    let ex = unique("panic-thread");
    let cap = Capture::topic(&ex, "logstash.#");
    let out = run(&ex, "thread", true);
    assert!(out.status.success(), "{out:?}");
    let msgs = cap.drain(Duration::from_secs(3));
    let crit = critical(&msgs);
    assert_eq!(crit.len(), 1, "{msgs:?}");
    let m = crit[0];
    assert_eq!(m.str("message"), "boom in a thread");
    assert_eq!(m.str("logger"), "panic");
    assert_eq!(m.str("threadName"), "worker-7");
    assert!(m.str("pathname").ends_with("panicker.rs"), "{}", m.body);
    assert!(m.field("lineno").as_u64().is_some());
    assert!(
        m.str("exc_info").contains("thread 'worker-7' panicked at"),
        "{}",
        m.body
    );
    assert_eq!(m.routing_key, "logstash.panic");
    // The process went on after the thread's panic.
    assert!(msgs
        .iter()
        .any(|m| m.str("message") == "after the thread's panic"));
    // The default hook still printed the panic.
    assert!(String::from_utf8_lossy(&out.stderr).contains("boom in a thread"));
}

#[test]
fn a_panicking_main_is_shipped_as_one_critical_record() {
    let ex = unique("panic-main");
    let cap = Capture::topic(&ex, "logstash.#");
    let out = run(&ex, "main", true);
    assert_eq!(out.status.code(), Some(101), "{out:?}");
    let msgs = cap.drain(Duration::from_secs(3));
    let crit = critical(&msgs);
    assert_eq!(crit.len(), 1, "{msgs:?}");
    assert_eq!(crit[0].str("message"), "boom in main");
    assert_eq!(crit[0].str("threadName"), "main");
}

#[test]
fn without_the_hook_nothing_is_shipped() {
    let ex = unique("panic-off");
    let cap = Capture::topic(&ex, "logstash.#");
    let out = run(&ex, "main", false);
    assert_eq!(out.status.code(), Some(101), "{out:?}");
    assert!(critical(&cap.drain(Duration::from_secs(3))).is_empty());
}
