//! Connecting to the broker a [`Shipper`](crate::Shipper) uses and
//! publishing what it would, for tools that open their own AMQP connection
//! (the `logcollect` CLI's `tail`, `send` and `doctor`, for instance).
//!
//! [`encode_record`] and [`routing_key`] are always here. The functions over
//! lapin's types (`connect`, `connect_within`, `confirm_channel`,
//! `declare_exchange`, `check_exchange`, `message_properties`,
//! `is_soft_error`, `reply_code`, `reply_text`, `describe_connect_error`)
//! need the `lapin-api` feature: exposing lapin is their point, so they
//! follow lapin's major versions rather than ours.

use std::fmt;

use crate::config::Config;
use crate::encode::{Encoder, Stamp};
use crate::record::Record;

mod client;

#[cfg(feature = "lapin-api")]
pub use client::{
    check_exchange, confirm_channel, connect, connect_within, declare_exchange,
    describe_connect_error, is_soft_error, message_properties, reply_code, reply_text,
};
#[cfg(not(feature = "lapin-api"))]
pub(crate) use client::{connect, declare_exchange, message_properties, reply_code};

/// What kind of failure a [`ConnectError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// Nothing accepts TCP connections at the broker's address.
    Refused,
    /// No AMQP answer within the time allowed (a silent listener, a
    /// firewall dropping packets, or not a RabbitMQ port).
    Timeout,
    /// The user name or password was refused.
    LoginRefused,
    /// Logged in, but the vhost does not exist or the user may not use it.
    VhostNotAllowed,
    /// The TLS handshake failed (certificate not trusted, client
    /// certificate required or refused).
    Tls,
    /// Anything else (I/O errors, protocol errors).
    Other,
}

/// Why a connection attempt failed: a [`ConnectErrorKind`] and a message in
/// words with the fix where we know it. Never contains the password.
#[derive(Debug, Clone)]
pub struct ConnectError {
    kind: ConnectErrorKind,
    message: String,
    broker_said: Option<String>,
}

impl ConnectError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ConnectErrorKind {
        self.kind
    }
    /// The broker's own words, when it refused the login or the vhost
    /// (`ACCESS_REFUSED - Login was refused …`).
    pub fn broker_said(&self) -> Option<&str> {
        self.broker_said.as_deref()
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {}

/// One record as the shipper would publish it: [`encode_record`]'s result.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EncodedRecord {
    /// The record id (UUIDv7), also the message's `message_id` (as the
    /// shipper publishes it).
    pub id: uuid::Uuid,
    /// `<routing_key>.<logger>` as [`routing_key`] makes it.
    pub routing_key: String,
    /// The JSON object, in the configuration's profile.
    pub body: Vec<u8>,
    /// Whether the record was cut to `max_record_bytes` (the body then
    /// carries the truncation marker).
    pub truncated: bool,
}

/// Encodes `record` exactly as a [`Shipper`](crate::Shipper) with `config`
/// would: the same profile (`logcollect` or ECS), identity, host, size cap
/// and key rewrites. For a tool that publishes a record itself (the CLI's
/// `doctor`); each call prepares the configuration's encoder anew, so a
/// program with many records submits them to a `Shipper` instead. `None`
/// only when called from inside another record's encoding on this thread
/// (a `Display` impl that logs), as for the front-ends.
pub fn encode_record(config: &Config, record: &Record) -> Option<EncodedRecord> {
    let encoded = Encoder::new(&config.encoder_settings()).encode(record, Stamp::now())?;
    Some(EncodedRecord {
        id: encoded.id,
        routing_key: encoded.routing_key,
        body: encoded.body,
        truncated: encoded.truncated,
    })
}

/// The routing key of `logger`'s records: `<routing_key>.<logger>`, `::` as
/// `.`, `root` for an empty logger, cut to AMQP's 255 bytes on a character
/// boundary: the key the shipper publishes with.
pub fn routing_key(config: &Config, logger: &str) -> String {
    Encoder::new(&config.encoder_settings()).routing_key(logger)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Level;
    use crate::Profile;

    fn config(profile: Profile) -> Config {
        Config::builder()
            .routing_key("rk")
            .profile(profile)
            .build()
            .expect("valid test config")
    }

    #[test]
    fn encoded_records_are_the_configured_profile() {
        let record = Record::new(Level::Warning, "app::db", "m").field("user", "ann");
        let flat = encode_record(&config(Profile::Logcollect), &record).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&flat.body).unwrap();
        assert_eq!(v["@version"], 1);
        assert_eq!(v["levelname"], "WARNING");
        assert_eq!(v["record_id"], flat.id.hyphenated().to_string());
        assert_eq!(flat.routing_key, "rk.app.db");
        let ecs = encode_record(&config(Profile::Ecs), &record).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&ecs.body).unwrap();
        assert_eq!(v["log"]["level"], "warn");
        assert_eq!(v["event"]["id"], ecs.id.hyphenated().to_string());
        assert!(v.get("@version").is_none(), "{v}");
    }

    #[test]
    fn routing_keys_are_cut_to_255_bytes() {
        let c = config(Profile::Logcollect);
        assert_eq!(routing_key(&c, "a::b"), "rk.a.b");
        assert_eq!(routing_key(&c, ""), "rk.root");
        let long = "é".repeat(200);
        let key = routing_key(&c, &long);
        assert!(key.len() <= 255 && key.len() >= 254, "{}", key.len());
        assert!(key.starts_with("rk.é"));
    }
}
