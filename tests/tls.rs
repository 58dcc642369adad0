//! `amqps://` against the local broker's TLS listener (CA generated for the
//! tests): verified connections deliver; an untrusted certificate is a clear
//! error and never a fallback to plain text.

use std::time::{Duration, Instant};

use logcollect::{ErrorKind, Level, Record, Shipper};
use logcollect_tests::{config, ensure_tls_listener, unique, Capture};

const WAIT: Duration = Duration::from_secs(30);
const TLS_URI: &str = "amqps://guest:guest@localhost:5671//";

#[test]
fn amqps_with_the_ca_file_delivers() {
    let ca = ensure_tls_listener();
    let ex = unique("tls-ok");
    let cap = Capture::topic(&ex, "logstash.#");
    let shipper = Shipper::new(
        config(&ex)
            .broker_uri(TLS_URI)
            .tls_ca_file(&ca)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert!(shipper.config().has_tls_ca());
    shipper.submit(&Record::new(Level::Info, "tls", "over TLS"));
    shipper.flush(WAIT).expect("delivered over TLS");
    assert_eq!(cap.take(1, WAIT)[0].str("message"), "over TLS");
    shipper.shutdown(WAIT).unwrap();
}

fn assert_refused(shipper: &Shipper) {
    let t0 = Instant::now();
    loop {
        let s = shipper.stats();
        if s.connect_failures > 0 {
            let e = s.last_error.clone().unwrap();
            assert!(e.contains("TLS") && e.contains("not trusted"), "{e}");
            assert!(!s.connected && s.connects == 0, "{s:?}");
            return;
        }
        assert!(t0.elapsed() < WAIT, "no TLS failure reported");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn untrusted_certificate_is_refused_with_a_clear_error() {
    ensure_tls_listener();
    let shipper = Shipper::new(
        config(&unique("tls-noca"))
            .broker_uri(TLS_URI)
            .build()
            .unwrap(),
    )
    .unwrap();
    shipper.submit(&Record::new(Level::Info, "tls", "never in clear"));
    assert_refused(&shipper);
    let _ = shipper.shutdown(Duration::from_millis(100));
}

#[test]
fn wrong_ca_is_refused() {
    let ca = ensure_tls_listener();
    let other = ca.with_file_name("other-ca.pem");
    let shipper = Shipper::new(
        config(&unique("tls-wrongca"))
            .broker_uri(TLS_URI)
            .tls_ca_file(other)
            .build()
            .unwrap(),
    )
    .unwrap();
    shipper.submit(&Record::new(Level::Info, "tls", "x"));
    assert_refused(&shipper);
    let _ = shipper.shutdown(Duration::from_millis(100));
}

#[test]
fn missing_or_bad_tls_files_are_boot_errors() {
    let e = config("x")
        .tls_ca_file("/nonexistent/ca.pem")
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    let e = config("x").tls_cert_file("/tmp/c.pem").build().unwrap_err();
    assert!(e.to_string().contains("both"), "{e}");
    let not_pem = std::env::temp_dir().join(unique("not-pem"));
    std::fs::write(&not_pem, "hello").unwrap();
    let e = config("x").tls_ca_file(&not_pem).build().unwrap_err();
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
    let _ = std::fs::remove_file(not_pem);
}

const MTLS_URI: &str = "amqps://guest:guest@localhost:5674//";

fn wait_tls(shipper: &Shipper, what: &str) -> logcollect::Stats {
    let t0 = Instant::now();
    loop {
        let s = shipper.stats();
        if s.connects > 0 || s.connect_failures > 0 {
            return s;
        }
        assert!(t0.elapsed() < WAIT, "{what}: no connection outcome");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn client_certificate_is_presented_when_configured() {
    let ca = ensure_tls_listener();
    let dir = ca.parent().unwrap().to_owned();
    let ex = unique("tls-mtls");
    let cap = Capture::topic(&ex, "logstash.#");
    let shipper = Shipper::new(
        config(&ex)
            .broker_uri(MTLS_URI)
            .tls_ca_file(&ca)
            .tls_cert_file(dir.join("client.pem"))
            .tls_key_file(dir.join("client.key"))
            .build()
            .unwrap(),
    )
    .unwrap();
    assert!(shipper.config().has_tls_client_cert());
    shipper.submit(&Record::new(
        Level::Info,
        "tls",
        "with a client certificate",
    ));
    shipper
        .flush(WAIT)
        .expect("delivered with a client certificate");
    assert_eq!(
        cap.take(1, WAIT)[0].str("message"),
        "with a client certificate"
    );
    shipper.shutdown(WAIT).unwrap();
}

#[test]
fn a_broker_that_demands_a_client_certificate_refuses_us_without_one() {
    let ca = ensure_tls_listener();
    let shipper = Shipper::new(
        config(&unique("tls-nocert"))
            .broker_uri(MTLS_URI)
            .tls_ca_file(&ca)
            .build()
            .unwrap(),
    )
    .unwrap();
    shipper.submit(&Record::new(Level::Info, "tls", "x"));
    let s = wait_tls(&shipper, "no client certificate");
    assert_eq!(s.connects, 0, "{s:?}");
    // Under TLS 1.3 the broker's refusal reaches us either as the
    // `certificate_required` alert (then we say what to set) or, depending on
    // timing, as a reset connection; either way nothing is sent in clear.
    let e = s.last_error.unwrap();
    assert!(
        (e.contains("requires a client certificate") && e.contains("tls_cert_file"))
            || e.contains("reset"),
        "{e}"
    );
    let _ = shipper.shutdown(Duration::from_millis(100));
}
