//! The example as a user runs it: a real socket, the real broker.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use logcollect_tests::{unique, Capture};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn serves_one_request_and_ships_its_records() {
    let ex = unique("example-actix");
    let cap = Capture::topic(&ex, "logstash.#");
    let mut child = Command::new(env!("CARGO_BIN_EXE_web_actix"))
        .arg("--once")
        .env("LOGCOLLECT_EXCHANGE", &ex)
        .env("LOGCOLLECT_EXAMPLE_ADDR", "127.0.0.1:0")
        .env_remove("LOGCOLLECT_BROKER_URI")
        .env_remove("LOGCOLLECT_ACTIVITY_IDENTITY")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("web_actix: listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();

    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        conn,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nX-Request-ID: example-1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("x-request-id: example-1\r\n"),
        "{response}"
    );
    assert!(
        response.ends_with("hello, your request id is example-1\n"),
        "{response}"
    );

    let status = child.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status}: {rest}");

    // actix-server's own records (`starting 1 workers`, …) come too.
    let mut msgs = cap.take(2, WAIT);
    msgs.extend(cap.drain(Duration::from_secs(1)));
    let handler = msgs
        .iter()
        .find(|m| m.str("logger") == "web_actix")
        .unwrap();
    let access = msgs
        .iter()
        .find(|m| m.str("logger") == "logcollect_actix::access")
        .unwrap();
    assert_eq!(handler.str("message"), "saying hello");
    assert_eq!(handler.str("greeting"), "hello");
    // actix matches routes inside the app: the route is on the access record.
    assert_eq!(access.str("route"), "/");
    assert!(
        access.str("message").starts_with("GET / 200 "),
        "{}",
        access.body
    );
    for m in [handler, access] {
        assert_eq!(m.str("request_id"), "example-1", "{}", m.body);
        assert_eq!(m.str("correlation_id"), "example-1");
        assert_eq!(m.str("path"), "/");
        assert_eq!(m.str("method"), "GET");
        assert_eq!(m.str("subsystem"), "web_actix");
    }
}
