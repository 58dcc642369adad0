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
    let mut names = Cleanup::default();
    let ex = names.exchange("doctor-green");
    let q = names.queue("doctor-green-q");
    let setup = run(
        logcollect(&[
            "setup",
            "--exchange",
            &ex,
            "--routing-key",
            "rk",
            "--queue",
            &q,
        ]),
        "",
    );
    assert!(setup.status.success(), "setup: {}", setup.stderr);
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

#[test]
fn queue_without_consumer() {
    let mut names = Cleanup::default();
    let ex = names.exchange("doctor-idle");
    let q = names.queue("doctor-idle-q");
    let setup = run(logcollect(&["setup", "--exchange", &ex, "--queue", &q]), "");
    assert!(setup.status.success(), "setup: {}", setup.stderr);
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
