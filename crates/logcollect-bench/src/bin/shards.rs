//! Records per second into the queues Logstash reads, with 1, 2 and 4
//! shards (`logcollect setup --shards N`), on the local broker:
//!
//! - the layout is the one `setup` declares: for 1 shard a durable queue
//!   bound to the topic exchange with `logstash.#`; for N > 1 a durable
//!   `x-consistent-hash` exchange hashing the message id (plugin
//!   rabbitmq_consistent_hash_exchange), bound to the topic exchange with
//!   `logstash.#`, and N durable queues bound to it with weight 1
//!   (`--quorum`: quorum queues);
//! - `--producers` shippers (default 4), each a `logcollect::Shipper` with its
//!   own connection and 64 loggers, send `N` records in all (default
//!   200,000), one per message;
//! - one consumer per queue, each on its own connection and thread, reads
//!   the queue as Logstash's `rabbitmq` input does (prefetch 256,
//!   acknowledgements of 256 messages at a time, or of what is left after
//!   10 ms without a delivery);
//! - a round is timed from the first record submitted until the consumers
//!   have received every record; the time until every record is confirmed
//!   (all producers' `flush`) is reported too.
//!
//! Each shard count runs `--rounds` times (default 3), alternating, with
//! fresh exchanges and queues, deleted afterwards.
//!
//! ```text
//! cargo run --release -p logcollect-bench --bin shards -- [N] [--shards 1,2,4] [--producers P] [--rounds R] [--quorum]
//! ```
//!
//! The last line reads `shards: 1 → X rec/s, 2 → Y rec/s, 4 → Z rec/s`
//! (medians of the rounds).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use logcollect::{Level, Record, Shipper};
use logcollect_bench::{bench_config, median, unique, BROKER_URI};

/// The consumers' lapin URL (same broker, vhost `/`).
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// What the `rabbitmq` input of Logstash uses: its `prefetch_count`
/// default, and it acknowledges that many messages at a time.
const PREFETCH: u16 = 256;
/// The `rabbitmq` input acknowledges what it holds after this long without
/// a delivery (its internal queue's poll interval).
const IDLE_ACK: Duration = Duration::from_millis(10);
/// Loggers per producer: records of many loggers, as from a real service.
const LOGGERS: usize = 64;
/// Bound on one round; only reached when something is broken.
const ROUND_LIMIT: Duration = Duration::from_secs(600);

const USAGE: &str = "usage: shards [N] [--shards LIST] [--producers P] [--rounds R] [--quorum]
  N              records per round (default 200000)
  --shards LIST  shard counts to compare, comma-separated (default 1,2,4)
  --producers P  shippers sending at once, each with its own connection (default 4)
  --rounds R     rounds of each shard count, alternating (default 3)
  --quorum       quorum queues instead of classic ones";

struct Args {
    n: u64,
    shards: Vec<u16>,
    producers: usize,
    rounds: usize,
    quorum: bool,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        n: 200_000,
        shards: vec![1, 2, 4],
        producers: 4,
        rounds: 3,
        quorum: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().with_context(|| format!("{flag} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--quorum" => args.quorum = true,
            "--shards" => {
                args.shards = value("--shards")?
                    .split(',')
                    .map(|s| s.trim().parse::<u16>())
                    .collect::<Result<_, _>>()
                    .context("--shards: a comma-separated list of numbers")?;
            }
            "--producers" => {
                args.producers = value("--producers")?
                    .parse()
                    .context("--producers: not a number")?;
            }
            "--rounds" => {
                args.rounds = value("--rounds")?
                    .parse()
                    .context("--rounds: not a number")?;
            }
            n => {
                args.n = n
                    .replace('_', "")
                    .parse()
                    .with_context(|| format!("bad argument {n:?}\n{USAGE}"))?;
            }
        }
    }
    ensure!(
        args.n > 0 && args.rounds > 0 && args.producers > 0,
        "N, --rounds and --producers must be positive"
    );
    ensure!(
        !args.shards.is_empty() && args.shards.iter().all(|s| (1..=64).contains(s)),
        "--shards: counts from 1 to 64"
    );
    Ok(Some(args))
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| a.map(run).transpose()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shards: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")
}

/// The exchanges and queues of one round, as `setup --shards` declares them.
struct Layout {
    exchange: String,
    hash: Option<String>,
    queues: Vec<String>,
}

impl Layout {
    fn declare(shards: u16, quorum: bool) -> Result<Layout> {
        let exchange = unique("logcollect-bench-shards");
        let hash = (shards > 1).then(|| format!("{exchange}.shards"));
        let queues: Vec<String> = if shards == 1 {
            vec![format!("{exchange}-q")]
        } else {
            (1..=shards)
                .map(|i| format!("{exchange}-shard-{i}"))
                .collect()
        };
        let layout = Layout {
            exchange,
            hash,
            queues,
        };
        let mut queue_args = FieldTable::default();
        if quorum {
            queue_args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        let mut hash_args = FieldTable::default();
        hash_args.insert(
            "hash-property".into(),
            AMQPValue::LongString("message_id".into()),
        );
        rt()?.block_on(async {
            let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
            let ch = conn.create_channel().await?;
            ch.exchange_declare(
                layout.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
            if let Some(hash) = &layout.hash {
                ch.exchange_declare(
                    hash.as_str().into(),
                    ExchangeKind::Custom("x-consistent-hash".to_owned()),
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    hash_args.clone(),
                )
                .await?;
            }
            for q in &layout.queues {
                ch.queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    queue_args.clone(),
                )
                .await?;
                let (source, key) = match &layout.hash {
                    Some(hash) => (hash.as_str(), "1"),
                    None => (layout.exchange.as_str(), "logstash.#"),
                };
                ch.queue_bind(
                    q.as_str().into(),
                    source.into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
            if let Some(hash) = &layout.hash {
                ch.exchange_bind(
                    hash.as_str().into(),
                    layout.exchange.as_str().into(),
                    "logstash.#".into(),
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
            let _ = conn.close(200, "declared".into()).await;
            Ok::<_, lapin::Error>(())
        })
        .context(
            "cannot declare the layout (for shards: is rabbitmq_consistent_hash_exchange enabled? \
             rabbitmq-plugins enable rabbitmq_consistent_hash_exchange)",
        )?;
        Ok(layout)
    }

    /// Deletes every exchange and queue (errors ignored: this is clean-up).
    fn delete(&self) {
        let Ok(rt) = rt() else { return };
        rt.block_on(async {
            let Ok(conn) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await
            else {
                return;
            };
            if let Ok(ch) = conn.create_channel().await {
                for q in &self.queues {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                for ex in self.hash.iter().chain([&self.exchange]) {
                    let _ = ch
                        .exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
            }
            let _ = conn.close(200, "bench done".into()).await;
        });
    }
}

/// One queue's reader, as Logstash's `rabbitmq` input reads it.
struct Consumer {
    thread: JoinHandle<Result<u64>>,
}

impl Consumer {
    /// Starts reading `queue`; returns once the broker has the consumer.
    /// Every delivery adds one to `received`; stops when `stop` is set.
    fn start(queue: &str, received: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Result<Consumer> {
        let queue = queue.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || -> Result<u64> {
            rt()?.block_on(async move {
                let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
                let ch = conn.create_channel().await?;
                ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
                let mut deliveries = ch
                    .basic_consume(
                        queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                let _ = ready_tx.send(());
                let mut mine = 0u64;
                let mut unacked = 0u16;
                let mut last_tag = None;
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(IDLE_ACK, deliveries.next()).await {
                        Ok(Some(Ok(d))) => {
                            mine += 1;
                            received.fetch_add(1, Ordering::Relaxed);
                            unacked += 1;
                            last_tag = Some(d.acker);
                            if unacked >= PREFETCH {
                                if let Some(acker) = last_tag.take() {
                                    acker.ack(BasicAckOptions { multiple: true }).await?;
                                }
                                unacked = 0;
                            }
                        }
                        Ok(_) => break,
                        Err(_) => {
                            if let Some(acker) = last_tag.take() {
                                acker.ack(BasicAckOptions { multiple: true }).await?;
                                unacked = 0;
                            }
                        }
                    }
                }
                let _ = conn.close(200, "bench done".into()).await;
                Ok(mine)
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .context("consumer did not start")?;
        Ok(Consumer { thread })
    }
}

/// One round's figures.
struct Round {
    /// Records per second, first submit until every record was consumed.
    consumed_rate: f64,
    /// Records per second, first submit until every record was confirmed.
    confirmed_rate: f64,
    /// Records each queue delivered.
    per_queue: Vec<u64>,
}

fn round(args: &Args, shards: u16) -> Result<Round> {
    let layout = Layout::declare(shards, args.quorum)?;
    let result = measure(args, &layout);
    layout.delete();
    result
}

fn measure(args: &Args, layout: &Layout) -> Result<Round> {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let consumers = layout
        .queues
        .iter()
        .map(|q| Consumer::start(q, received.clone(), stop.clone()))
        .collect::<Result<Vec<_>>>()?;
    let shippers = (0..args.producers)
        .map(|_| Shipper::new(bench_config(BROKER_URI, &layout.exchange).build()?))
        .collect::<Result<Vec<_>, _>>()?;
    let per_producer = args.n / args.producers as u64;
    let n = per_producer * args.producers as u64;
    let t0 = Instant::now();
    let confirmed = std::thread::scope(|s| {
        let senders: Vec<_> = shippers
            .iter()
            .enumerate()
            .map(|(p, shipper)| {
                s.spawn(move || -> Result<()> {
                    for i in 0..per_producer {
                        let logger = format!("bench.p{p}.l{}", i as usize % LOGGERS);
                        let record = Record::new(Level::Info, logger, "shard me").field("i", i);
                        // A full queue refuses the record: wait for room,
                        // every record must arrive for the count.
                        while !shipper.submit(&record) {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    shipper.flush(ROUND_LIMIT).context("flush")?;
                    Ok(())
                })
            })
            .collect();
        let mut result = Ok(());
        for sender in senders {
            let r = sender.join().expect("producer thread");
            result = result.and(r);
        }
        result.map(|()| t0.elapsed())
    })?;
    while received.load(Ordering::Relaxed) < n {
        ensure!(
            t0.elapsed() < ROUND_LIMIT,
            "only {} of {n} records consumed",
            received.load(Ordering::Relaxed)
        );
        // Polling resolution of the measurement (0.1 % of a second-long round).
        std::thread::sleep(Duration::from_millis(1));
    }
    let consumed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let per_queue = consumers
        .into_iter()
        .map(|c| c.thread.join().expect("consumer thread"))
        .collect::<Result<Vec<_>>>()?;
    for shipper in &shippers {
        let _ = shipper.shutdown(Duration::from_secs(10));
    }
    Ok(Round {
        consumed_rate: n as f64 / consumed.as_secs_f64(),
        confirmed_rate: n as f64 / confirmed.as_secs_f64(),
        per_queue,
    })
}

fn run(args: Args) -> Result<()> {
    println!(
        "shards: {} records per round, {} producers, {} rounds, {} queues",
        args.n,
        args.producers,
        args.rounds,
        if args.quorum { "quorum" } else { "classic" }
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); args.shards.len()];
    for r in 1..=args.rounds {
        for (k, &shards) in args.shards.iter().enumerate() {
            let round = round(&args, shards)?;
            println!(
                "round {r}, {shards} shard(s): {:.0} rec/s consumed, {:.0} rec/s confirmed; per queue {:?}",
                round.consumed_rate, round.confirmed_rate, round.per_queue
            );
            rates[k].push(round.consumed_rate);
        }
    }
    let summary: Vec<String> = args
        .shards
        .iter()
        .zip(&mut rates)
        .map(|(s, r)| format!("{s} → {:.0} rec/s", median(r)))
        .collect();
    println!("shards: {}", summary.join(", "));
    Ok(())
}
