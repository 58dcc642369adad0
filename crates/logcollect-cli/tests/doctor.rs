//! `logcollect doctor` against the real RabbitMQ on 127.0.0.1:5672: all
//! green on a broker set up for it, and the right ✗ line for each fault
//! (made with unique names; nothing here stops or changes the broker).

mod support;

use support::*;

/// Runs doctor with `args`; the lines it printed by check name.
struct Doctor {
    code: Option<i32>,
    stdout: String,
}

impl Doctor {
    fn run(args: &[&str]) -> Doctor {
        let mut all = vec!["doctor", "--timeout", "5"];
        all.extend_from_slice(args);
        let done = run(logcollect(&all), "");
        assert_eq!(done.stderr, "", "doctor writes to stdout only");
        assert!(
            !done.stdout.contains(SECRET),
            "password leaked: {}",
            done.stdout
        );
        Doctor {
            code: done.status.code(),
            stdout: done.stdout,
        }
    }

    /// The line of `check`, which must start with `mark`.
    fn line(&self, mark: &str, check: &str) -> &str {
        let prefix = format!("{mark} {check}:");
        self.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{}", self.stdout))
    }

    fn failures(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.starts_with('✗')).collect()
    }
}

#[test]
fn all_green_on_a_set_up_broker() {
    let (_names, ex, q) = set_up("doctor-green", "rk");
    // Logstash's part: a consumer on the queue while doctor checks.
    let logstash = Consumer::start(&q);
    let doctor = Doctor::run(&["--exchange", &ex, "--routing-key", "rk", "--queue", &q]);
    assert_eq!(doctor.code, Some(0), "{}", doctor.stdout);
    assert!(doctor.failures().is_empty(), "{}", doctor.stdout);
    doctor.line("✓", "configuration");
    doctor.line("✓", "TCP 127.0.0.1:5672");
    doctor.line("✓", "AMQP login");
    doctor.line("✓", "vhost");
    assert!(doctor
        .line("✓", "exchange")
        .contains("exists (topic, durable=false"));
    assert!(doctor.line("✓", "binding").contains("rk.logcollect.doctor"));
    assert!(doctor.line("✓", "consumer").contains("1 consumer"));
    doctor.line("✓", "round trip");
    assert!(
        doctor.stdout.ends_with("all 8 checks passed\n"),
        "{}",
        doctor.stdout
    );
    // What reached "Logstash" is marked as doctor's.
    let mut seen = Vec::new();
    while !seen.iter().any(|m| m == "logcollect doctor round trip") {
        let record = logstash
            .bodies
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("Logstash's queue got no round trip: {seen:?}"));
        assert_eq!(record["logger"], "logcollect.doctor", "{record}");
        assert_eq!(record["levelname"], "INFO", "{record}");
        assert!(record["record_id"].is_string(), "{record}");
        seen.push(record["message"].as_str().unwrap().to_owned());
    }
}

#[test]
fn wrong_password() {
    let uri = format!("amqp://guest:{SECRET}@127.0.0.1:5672//");
    let doctor = Doctor::run(&["--broker-uri", &uri]);
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    let line = doctor.line("✗", "AMQP login");
    assert!(line.contains("refused user \"guest\""), "{line}");
    assert!(
        line.contains("fix: check the user name and password"),
        "{line}"
    );
    doctor.line("-", "vhost");
    assert_eq!(doctor.failures().len(), 1, "{}", doctor.stdout);
}

#[test]
fn missing_vhost() {
    let vhost = unique("doctor-no-vhost");
    let uri = format!("amqp://guest:guest@127.0.0.1:5672//{vhost}");
    let doctor = Doctor::run(&["--broker-uri", &uri]);
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    doctor.line("✓", "AMQP login");
    let line = doctor.line("✗", "vhost");
    assert!(
        line.contains(&format!("\"/{vhost}\" does not exist")),
        "{line}"
    );
    assert!(
        line.contains(&format!("rabbitmqctl add_vhost /{vhost}")),
        "{line}"
    );
    doctor.line("-", "exchange");
}

#[test]
fn exchange_of_another_type() {
    let mut names = Cleanup::default();
    let ex = names.exchange("doctor-direct");
    declare_exchange(&ex, lapin::ExchangeKind::Direct, false);
    let doctor = Doctor::run(&["--exchange", &ex]);
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    let line = doctor.line("✗", "exchange");
    assert!(
        line.contains("is a direct exchange; logcollect routes by topic"),
        "{line}"
    );
    assert!(line.contains("fix: delete it"), "{line}");
}

#[test]
fn exchange_with_other_durability() {
    let mut names = Cleanup::default();
    let ex = names.exchange("doctor-durable");
    declare_exchange(&ex, lapin::ExchangeKind::Topic, true);
    let doctor = Doctor::run(&["--exchange", &ex]);
    let line = doctor.line("✗", "exchange");
    assert!(
        line.contains("has durable true where the applications declare false"),
        "{line}"
    );
    assert!(line.contains("LOGCOLLECT_DURABLE=true"), "{line}");
}

#[test]
fn no_bound_queue() {
    let mut names = Cleanup::default();
    let ex = names.exchange("doctor-unbound");
    declare_exchange(&ex, lapin::ExchangeKind::Topic, false);
    let q = unique("doctor-no-such-queue");
    let doctor = Doctor::run(&["--exchange", &ex, "--routing-key", "rk", "--queue", &q]);
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    doctor.line("✓", "exchange");
    let line = doctor.line("✗", "binding");
    assert!(
        line.contains(&format!(
            "no queue is bound to exchange \"{ex}\" for routing key rk.logcollect.doctor"
        )),
        "{line}"
    );
    assert!(line.contains("fix: run `logcollect setup`"), "{line}");
    assert!(doctor.line("✗", "consumer").contains("does not exist"));
    // The round trip binds its own queue, so it still works.
    doctor.line("✓", "round trip");
}

#[test]
fn missing_exchange_is_fine_but_nothing_is_bound() {
    let ex = unique("doctor-missing");
    let doctor = Doctor::run(&["--exchange", &ex]);
    let line = doctor.line("✓", "exchange");
    assert!(line.contains("will be declared on first connect"), "{line}");
    doctor.line("✗", "binding");
    doctor.line("-", "round trip");
}

/// An exchange and Logstash's queue as `setup` makes them, with routing
/// keys `<rk>.<logger>`; deleted when the `Cleanup` is dropped.
fn set_up(prefix: &str, rk: &str) -> (Cleanup, String, String) {
    let mut names = Cleanup::default();
    let ex = names.exchange(prefix);
    let q = names.queue(&format!("{prefix}-q"));
    let setup = run(
        logcollect(&[
            "setup",
            "--exchange",
            &ex,
            "--routing-key",
            rk,
            "--queue",
            &q,
        ]),
        "",
    );
    assert!(setup.status.success(), "setup: {}", setup.stderr);
    (names, ex, q)
}

#[test]
fn queue_without_consumer() {
    let (_names, ex, q) = set_up("doctor-idle", "logstash");
    let doctor = Doctor::run(&["--exchange", &ex, "--queue", &q]);
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    let line = doctor.line("✗", "consumer");
    assert!(line.contains("has no consumer"), "{line}");
    assert!(line.contains("is Logstash running?"), "{line}");
    assert_eq!(doctor.failures().len(), 1, "{}", doctor.stdout);
}

#[test]
fn unreachable_broker_in_the_failover_list() {
    let uri = format!("amqp://guest:{SECRET}@127.0.0.1:1//;{BROKER}");
    let doctor = Doctor::run(&["--broker-uri", &uri, "--exchange", &unique("doctor-tcp")]);
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    let line = doctor.line("✗", "TCP 127.0.0.1:1");
    assert!(line.contains("connection refused"), "{line}");
    // The next broker of the list is checked further.
    doctor.line("✓", "TCP 127.0.0.1:5672");
    doctor.line("✓", "AMQP login");
}

#[test]
fn unusable_configuration_is_a_failed_check() {
    let uri = format!("http://guest:{SECRET}@127.0.0.1//");
    let doctor = Doctor::run(&["--broker-uri", &uri]);
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    let line = doctor.line("✗", "configuration");
    assert!(line.contains("invalid broker URI"), "{line}");
    doctor.line("-", "round trip");
}

/// Every leaf of a JSON object by its dotted path.
fn leaves(v: &serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
    fn walk(
        prefix: &str,
        v: &serde_json::Value,
        out: &mut std::collections::BTreeMap<String, serde_json::Value>,
    ) {
        match v {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned(), v.clone());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk("", v, &mut out);
    out
}

/// Doctor's two records, as Logstash's queue got them, against what the
/// library encodes for the same record with the same settings in
/// `profile`: the same fields with the same values, but for the record
/// id, the time and the process id, which only have the same type.
fn probes_are_what_the_library_encodes(profile: &str, volatile: [&str; 3]) {
    use logcollect::{Config, Level, Record};
    let (_names, ex, q) = set_up("doctor-probe", "rk");
    let env = [
        ("LOGCOLLECT_PROFILE", profile),
        (
            "LOGCOLLECT_ACTIVITY_IDENTITY",
            "project=gh,application=api,team=ops",
        ),
        ("LOGCOLLECT_TYPE", "doctored"),
    ];
    let logstash = Consumer::start(&q);
    let mut cmd = logcollect(&[
        "doctor",
        "--timeout",
        "5",
        "--exchange",
        &ex,
        "--routing-key",
        "rk",
        "--queue",
        &q,
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let doctor = run(cmd, "");
    assert_eq!(doctor.status.code(), Some(0), "{}", doctor.stdout);
    let config = Config::builder()
        .exchange(ex.clone())
        .routing_key("rk")
        .env_from(|k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap()
        .build()
        .unwrap();
    for message in [
        "logcollect doctor binding probe",
        "logcollect doctor round trip",
    ] {
        let got = logstash
            .bodies
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("Logstash's queue got no {message:?}"));
        let mut record = Record::new(Level::Info, "logcollect.doctor", message);
        // Doctor runs on its main thread.
        record.thread_name = Some("main".to_owned());
        let want = logcollect::amqp::encode_record(&config, &record).unwrap();
        let want: serde_json::Value = serde_json::from_slice(&want.body).unwrap();
        let (got, want) = (leaves(&got), leaves(&want));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{profile}: fields differ"
        );
        for (key, value) in &want {
            if volatile.contains(&key.as_str()) {
                let kind = |v: &serde_json::Value| std::mem::discriminant(v);
                assert_eq!(kind(&got[key]), kind(value), "{profile}: {key}");
            } else {
                assert_eq!(&got[key], value, "{profile}: {key}");
            }
        }
    }
}

#[test]
fn probes_are_library_records_in_the_logcollect_profile() {
    probes_are_what_the_library_encodes("logcollect", ["@timestamp", "record_id", "process"]);
}

#[test]
fn probes_are_library_records_in_the_ecs_profile() {
    probes_are_what_the_library_encodes("ecs", ["@timestamp", "event.id", "process.pid"]);
}

#[test]
fn no_publish_leaves_the_exchange_alone() {
    let (_names, ex, q) = set_up("doctor-quiet", "logstash");
    let logstash = Consumer::start(&q);
    let doctor = Doctor::run(&["--exchange", &ex, "--queue", &q, "--no-publish"]);
    assert_eq!(doctor.code, Some(0), "{}", doctor.stdout);
    assert!(doctor.line("-", "binding").contains("--no-publish"));
    doctor.line("-", "round trip");
    doctor.line("✓", "consumer");
    assert!(
        doctor.stdout.ends_with("all 6 checks passed\n"),
        "{}",
        doctor.stdout
    );
    assert!(
        logstash
            .bodies
            .recv_timeout(std::time::Duration::from_millis(500))
            .is_err(),
        "doctor --no-publish published a record"
    );
}

#[test]
fn every_broker_of_the_failover_list_is_logged_into() {
    // The same broker twice, the second time with a wrong password: as a
    // failover broker whose users differ.
    let uri = format!("{BROKER};amqp://guest:{SECRET}@127.0.0.1:5672//");
    let doctor = Doctor::run(&["--broker-uri", &uri, "--exchange", &unique("doctor-fo")]);
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    doctor.line("✓", "AMQP login");
    let line = doctor.line("✗", "AMQP login 127.0.0.1:5672");
    assert!(line.contains("refused user \"guest\""), "{line}");
}

#[test]
fn json_output_has_one_object_per_check() {
    let uri = format!("amqp://guest:{SECRET}@127.0.0.1:5672//");
    let doctor = Doctor::run(&["--broker-uri", &uri, "--json"]);
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    let lines: Vec<serde_json::Value> = doctor
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let login = lines
        .iter()
        .find(|l| l["check"] == "AMQP login")
        .expect("a login line");
    assert_eq!(login["status"], "fail", "{login}");
    assert!(
        login["fix"]
            .as_str()
            .unwrap()
            .starts_with("check the user name and password"),
        "{login}"
    );
    let vhost = lines.iter().find(|l| l["check"] == "vhost").unwrap();
    assert_eq!(vhost["status"], "skip", "{vhost}");
    assert_eq!(vhost["fix"], serde_json::Value::Null, "{vhost}");
    assert_eq!(lines.last().unwrap()["failed"], 1, "{}", doctor.stdout);
}
