//! One process of the fleet in `tests/cluster.rs`: a shipper configured from
//! `LOGCOLLECT_*` (the failover list of the cluster), kept connected until
//! its standard input closes. Each input line is shipped as a record and
//! answered, once the broker confirmed it, with `confirmed <line>` on
//! standard output. Exits 0 when every record was confirmed.

use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use logcollect::{Config, Level, Record, Shipper};

/// Bound on one record's confirm, reconnects included; the test fails
/// long before (it waits for every member's answer with its own bound).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let config = Config::builder()
        .reconnect_min(Duration::from_millis(100))
        .reconnect_max(Duration::from_secs(1))
        .env()
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("fleet member configuration: {e}"));
    let shipper = Shipper::new(config).expect("start the shipper");
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let record = Record::new(Level::Info, "fleet", line.as_str())
            .field("member", u64::from(std::process::id()));
        assert!(shipper.submit(&record), "record {line:?} refused");
        shipper
            .flush(CONFIRM_TIMEOUT)
            .unwrap_or_else(|e| panic!("record {line:?} not confirmed: {e}"));
        let mut out = stdout.lock();
        writeln!(out, "confirmed {line}")
            .and_then(|()| out.flush())
            .expect("stdout");
    }
    shipper.shutdown(CONFIRM_TIMEOUT).expect("shutdown");
    let stats = shipper.stats();
    std::process::exit(if stats.lost() == 0 { 0 } else { 1 });
}
