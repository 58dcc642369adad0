//! `setup --shards N` and `doctor --shards N` against the real RabbitMQ on
//! 127.0.0.1:5672, which needs the plugin rabbitmq_consistent_hash_exchange
//! (`.ci/run` enables it; enabling it changes nothing for other users).

mod support;

use std::time::Duration;

use logcollect::{Config, Level, Record, Shipper};
use support::*;

/// Records of the fair-share test, and the loggers they come from.
const RECORDS: u64 = 30_000;
const LOGGERS: u64 = 30;

/// `setup --shards n` for `ex` and queue `q`, asserted to succeed; the
/// hash exchange and shard queues join `names`' clean-up.
fn setup_shards(names: &mut Cleanup, ex: &str, q: &str, n: u16) -> Finished {
    names.exchanges.push(format!("{q}.shards"));
    for i in 1..=n {
        let shard = format!("{q}-shard-{i}");
        if !names.queues.contains(&shard) {
            names.queues.push(shard);
        }
    }
    let n = n.to_string();
    let done = run(
        logcollect(&["setup", "--exchange", ex, "--queue", q, "--shards", &n]),
        "",
    );
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    done
}

#[test]
fn three_shards_share_30000_records_from_many_loggers_fairly() {
    let mut names = Cleanup::default();
    let ex = names.exchange("shards-fair");
    let q = unique("shards-fair-q");
    let setup = setup_shards(&mut names, &ex, &q, 3);
    for i in 1..=3 {
        assert!(
            setup.stderr.contains(&format!(
                "queue \"{q}-shard-{i}\" bound to exchange \"{q}.shards\" with key 1"
            )),
            "{}",
            setup.stderr
        );
    }
    assert!(
        setup.stdout.starts_with("# Logstash pipelines"),
        "{}",
        setup.stdout
    );
    assert_eq!(setup.stdout.matches("\n- pipeline.id: ").count(), 3);

    let config = Config::builder()
        .broker_uri(BROKER)
        .exchange(ex.as_str())
        .build()
        .unwrap();
    let shipper = Shipper::new(config).unwrap();
    // Many loggers, one of them hot: half the records come from one logger.
    // Hashing the routing key (the logger) would put that half on one shard.
    for i in 0..RECORDS {
        let logger = if i % 2 == 0 {
            "app.hot".to_owned()
        } else {
            format!("app.logger{}", i % LOGGERS)
        };
        assert!(shipper.submit(&Record::new(Level::Info, logger, "shard me").field("i", i)));
    }
    shipper
        .flush(Duration::from_secs(120))
        .expect("all confirmed");
    let stats = shipper.stats();
    assert_eq!(stats.unroutable, 0, "{stats:?}");
    shipper.shutdown(Duration::from_secs(10)).unwrap();

    let counts: Vec<u32> = (1..=3)
        .map(|i| declare_queue(&format!("{q}-shard-{i}"), true, true).expect("shard queue"))
        .collect();
    println!("3 shards of {RECORDS} records from {LOGGERS} loggers: {counts:?}");
    assert_eq!(counts.iter().map(|c| u64::from(*c)).sum::<u64>(), RECORDS);
    let fair = RECORDS as f64 / 3.0;
    for c in &counts {
        let off = (f64::from(*c) - fair).abs() / fair;
        assert!(
            off <= 0.25,
            "a shard is {:.0} % off its fair share: {counts:?}",
            off * 100.0
        );
    }
}

#[test]
fn setup_names_queues_of_an_earlier_layout() {
    let mut names = Cleanup::default();
    let ex = names.exchange("shards-left");
    let q = names.queue("shards-left-q");
    // First unsharded, then three shards, then two.
    let plain = run(logcollect(&["setup", "--exchange", &ex, "--queue", &q]), "");
    assert_eq!(plain.status.code(), Some(0), "{}", plain.stderr);
    let three = setup_shards(&mut names, &ex, &q, 3);
    assert!(
        three.stderr.contains(&format!(
            "queue \"{q}\" of an unsharded setup is still there"
        )),
        "{}",
        three.stderr
    );
    let two = setup_shards(&mut names, &ex, &q, 2);
    assert!(
        two.stderr.contains(&format!(
            "queue \"{q}-shard-3\" of a setup with more shards is still there"
        )),
        "{}",
        two.stderr
    );
    assert!(two.stderr.contains("already there"), "{}", two.stderr);
    // Nothing was deleted.
    assert!(declare_queue(&format!("{q}-shard-3"), true, true).is_some());
    assert!(declare_queue(&q, true, true).is_some());
}

#[test]
fn print_only_shards_needs_no_broker() {
    let done = run(
        logcollect(&[
            "setup",
            "--print-only",
            "--broker-uri",
            "amqp://127.0.0.1:1//",
            "--queue",
            "lq",
            "--shards",
            "2",
            "--quorum",
        ]),
        "",
    );
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert_eq!(done.stderr, "");
    for want in [
        "- pipeline.id: \"lq-shard-1\"\n  queue.type: persisted\n  config.string: |\n",
        "- pipeline.id: \"lq-shard-2\"\n",
        "        exchange => \"lq.shards\"\n",
        "        key => \"1\"\n",
        "          \"x-queue-type\" => \"quorum\"\n",
    ] {
        assert!(
            done.stdout.contains(want),
            "{want:?} not in\n{}",
            done.stdout
        );
    }
    // One shard: the plain queue, as a pipelines.yml with a persistent queue.
    let one = run(
        logcollect(&["setup", "--print-only", "--queue", "lq", "--shards", "1"]),
        "",
    );
    assert_eq!(one.status.code(), Some(0), "{}", one.stderr);
    assert!(
        one.stdout
            .contains("- pipeline.id: \"lq\"\n  queue.type: persisted\n"),
        "{}",
        one.stdout
    );
    assert!(
        one.stdout.contains("        key => \"logstash.#\"\n"),
        "{}",
        one.stdout
    );
    for bad in ["0", "65"] {
        let done = run(logcollect(&["setup", "--print-only", "--shards", bad]), "");
        assert_eq!(
            done.status.code(),
            Some(2),
            "--shards {bad}: {}",
            done.stderr
        );
    }
}

#[test]
fn doctor_checks_the_hash_exchange_and_every_shard() {
    let mut names = Cleanup::default();
    let ex = names.exchange("shards-doctor");
    let q = unique("shards-doctor-q");
    let doctor = |args: &[&str]| {
        let mut all = vec!["doctor", "--timeout", "5", "--exchange", &ex, "--queue", &q];
        all.extend_from_slice(args);
        run(logcollect(&all), "")
    };
    // Before setup: no hash exchange.
    names.exchanges.push(format!("{q}.shards"));
    let before = doctor(&["--shards", "3"]);
    assert_eq!(before.status.code(), Some(1), "{}", before.stdout);
    assert!(
        before
            .stdout
            .contains(&format!("✗ shards: exchange \"{q}.shards\" does not exist")),
        "{}",
        before.stdout
    );
    setup_shards(&mut names, &ex, &q, 3);
    // Logstash consumes two shards of three.
    let one = Consumer::start(&format!("{q}-shard-1"));
    let two = Consumer::start(&format!("{q}-shard-2"));
    let partial = doctor(&["--shards", "3"]);
    assert_eq!(partial.status.code(), Some(1), "{}", partial.stdout);
    assert!(
        partial.stdout.contains(&format!(
            "✓ shards: exchange \"{q}.shards\" is a x-consistent-hash exchange (plugin \
             rabbitmq_consistent_hash_exchange enabled)"
        )),
        "{}",
        partial.stdout
    );
    assert!(
        partial
            .stdout
            .contains(&format!("✓ consumer {q}-shard-1: ")),
        "{}",
        partial.stdout
    );
    assert!(
        partial
            .stdout
            .contains(&format!("✓ consumer {q}-shard-2: ")),
        "{}",
        partial.stdout
    );
    assert!(
        partial.stdout.contains(&format!(
            "✗ consumer {q}-shard-3: queue \"{q}-shard-3\" has no consumer"
        )),
        "{}",
        partial.stdout
    );
    let three = Consumer::start(&format!("{q}-shard-3"));
    let green = doctor(&["--shards", "3"]);
    assert_eq!(green.status.code(), Some(0), "{}", green.stdout);
    drop((one, two, three));
    // One shard is the one queue, as without the flag.
    let one_shard = doctor(&["--shards", "1"]);
    assert!(
        one_shard
            .stdout
            .contains(&format!("✗ consumer: queue \"{q}\" does not exist")),
        "{}",
        one_shard.stdout
    );
    assert!(
        !one_shard.stdout.contains("shards:"),
        "{}",
        one_shard.stdout
    );
}
