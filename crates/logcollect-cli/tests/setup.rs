//! `logcollect setup` against the real RabbitMQ on 127.0.0.1:5672, and the
//! Logstash kit in `deploy/logstash/`, which must be exactly what
//! `setup --print-only` prints.

mod support;

use support::*;

fn setup(args: &[&str]) -> Finished {
    let mut all = vec!["setup"];
    all.extend_from_slice(args);
    let done = run(logcollect(&all), "");
    assert!(
        !done.stdout.contains(SECRET),
        "password leaked: {}",
        done.stdout
    );
    assert!(
        !done.stderr.contains(SECRET),
        "password leaked: {}",
        done.stderr
    );
    done
}

#[test]
fn idempotent_and_prints_the_matching_pipeline() {
    let mut names = Cleanup::default();
    let ex = names.exchange("setup-twice");
    let q = names.queue("setup-twice-q");
    let args = ["--exchange", &ex, "--routing-key", "rk", "--queue", &q];
    let first = setup(&args);
    assert_eq!(first.status.code(), Some(0), "{}", first.stderr);
    assert!(
        first
            .stderr
            .contains(&format!("queue \"{q}\" (durable): declared")),
        "{}",
        first.stderr
    );
    for want in [
        format!("    exchange => \"{ex}\"\n"),
        format!("    queue => \"{q}\"\n"),
        "    key => \"rk.#\"\n".to_owned(),
        "    durable => true\n".to_owned(),
        "    password => \"${RABBITMQ_PASSWORD}\"\n".to_owned(),
        "    document_id => \"%{[record_id]}\"\n".to_owned(),
    ] {
        assert!(
            first.stdout.contains(&want),
            "{want:?} not in\n{}",
            first.stdout
        );
    }
    let second = setup(&args);
    assert_eq!(second.status.code(), Some(0), "{}", second.stderr);
    assert!(second.stderr.contains("already there"), "{}", second.stderr);
    assert_eq!(second.stdout, first.stdout);
    // The binding works: a record sent with the prefix lands in the queue.
    send(&ex, "rk", &["--logger", "app::db", "routed"]);
    assert_eq!(declare_queue(&q, true, true), Some(1));
}

#[test]
fn queue_arguments_are_declared_and_printed() {
    let mut names = Cleanup::default();
    let ex = names.exchange("setup-args");
    let q = names.queue("setup-args-q");
    let args = [
        "--exchange",
        &ex,
        "--queue",
        &q,
        "--max-length",
        "1000",
        "--durable",
    ];
    let first = setup(&args);
    assert_eq!(first.status.code(), Some(0), "{}", first.stderr);
    assert!(
        first.stdout.contains("      \"x-max-length\" => 1000\n"),
        "{}",
        first.stdout
    );
    // A durable exchange: Logstash may declare it too.
    assert!(
        first.stdout.contains("    exchange_type => \"topic\"\n"),
        "{}",
        first.stdout
    );
    let again = setup(&args);
    assert_eq!(again.status.code(), Some(0), "{}", again.stderr);
    // Without the argument, the queue no longer matches.
    let other = setup(&["--exchange", &ex, "--queue", &q, "--durable"]);
    assert_eq!(other.status.code(), Some(1), "{}", other.stderr);
    assert!(
        other.stderr.contains(&format!(
            "queue \"{q}\" already exists with x-max-length 1000 where setup declares none"
        )),
        "{}",
        other.stderr
    );
    assert!(
        other.stderr.contains("pass --max-length 1000"),
        "{}",
        other.stderr
    );
    assert_eq!(other.stdout, "", "no pipeline for a setup that failed");
}

#[test]
fn incompatible_queue_is_reported_not_deleted() {
    let mut names = Cleanup::default();
    let ex = names.exchange("setup-clash");
    let q = names.queue("setup-clash-q");
    // Someone's non-durable queue, holding a message.
    declare_queue(&q, false, false);
    with_channel(async |ch| {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            b"keep me",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    });
    let done = setup(&["--exchange", &ex, "--queue", &q]);
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!(
            "logcollect setup: queue \"{q}\" already exists with durable false where setup declares true; \
             setup changed and deleted nothing"
        )),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("(it holds 1 message)"),
        "{}",
        done.stderr
    );
    // Still there, message and all.
    assert_eq!(declare_queue(&q, false, true), Some(1));
}

#[test]
fn incompatible_exchange_is_reported() {
    let mut names = Cleanup::default();
    let ex = names.exchange("setup-direct");
    let q = names.queue("setup-direct-q");
    declare_exchange(&ex, lapin::ExchangeKind::Direct, false);
    let done = setup(&["--exchange", &ex, "--queue", &q]);
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!(
            "exchange \"{ex}\" already exists with type direct where setup declares topic"
        )),
        "{}",
        done.stderr
    );
    assert_eq!(declare_queue(&q, true, true), None, "no queue declared");
}

#[test]
fn print_only_needs_no_broker() {
    let uri = format!("amqp://logger:{SECRET}@127.0.0.1:1//logs");
    let done = setup(&["--print-only", "--broker-uri", &uri, "--queue", "lq"]);
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert_eq!(done.stderr, "");
    for want in [
        "    host => \"localhost\"\n",
        "    port => 1\n",
        "    vhost => \"/logs\"\n",
        "    user => \"logger\"\n",
        "    queue => \"lq\"\n",
        "    key => \"logstash.#\"\n",
    ] {
        assert!(
            done.stdout.contains(want),
            "{want:?} not in\n{}",
            done.stdout
        );
    }
}

#[test]
fn settings_from_the_environment() {
    let mut cmd = logcollect(&["setup", "--print-only"]);
    cmd.env("LOGCOLLECT_QUEUE", "envq")
        .env("LOGCOLLECT_PROFILE", "ecs")
        .env("LOGCOLLECT_BATCH_FORMAT", "json_lines")
        .env("LOGCOLLECT_EXCHANGE", "envex")
        .env("LOGCOLLECT_ELASTICSEARCH", "http://a:9200,http://b:9200");
    let done = run(cmd, "");
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    for want in [
        "    queue => \"envq\"\n",
        "    exchange => \"envex\"\n",
        "    codec => json_lines {\n",
        "    document_id => \"%{[event][id]}\"\n",
        "    hosts => [\"http://a:9200\", \"http://b:9200\"]\n",
    ] {
        assert!(
            done.stdout.contains(want),
            "{want:?} not in\n{}",
            done.stdout
        );
    }
    let mut bad = logcollect(&["setup", "--print-only"]);
    bad.env("LOGCOLLECT_PROFILE", "python");
    let bad = run(bad, "");
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("LOGCOLLECT_PROFILE"), "{}", bad.stderr);
}

/// The kit and the CLI never drift: each file is what the CLI prints.
#[test]
fn logstash_kit_matches_the_cli() {
    let kit = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/logstash");
    for profile in ["logcollect", "ecs"] {
        for codec in ["json", "json_lines"] {
            let path = format!("{kit}/pipeline-{profile}-{codec}.conf");
            let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let printed = run(
                logcollect(&[
                    "setup",
                    "--print-only",
                    "--profile",
                    profile,
                    "--codec",
                    codec,
                ]),
                "",
            );
            assert!(printed.status.success(), "{}", printed.stderr);
            assert!(
                printed.stdout.as_bytes() == file.as_slice(),
                "{path} differs from `logcollect setup --print-only --profile {profile} \
                 --codec {codec}`; regenerate it:\n{}",
                printed.stdout
            );
        }
    }
}
