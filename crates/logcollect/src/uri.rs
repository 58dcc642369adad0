//! Celery/kombu-style AMQP broker URIs and failover lists (DESIGN §6).
//!
//! The parser is written by hand rather than on top of
//! `lapin::uri::AMQPUri::from_str`, because kombu's rules differ from lapin's:
//! `amqp://host/` means vhost `/` (lapin reads the empty vhost), `pyamqp://`
//! is accepted, unknown query keys are rejected instead of ignored, a bad
//! percent-escape is an error instead of passing through, and no error
//! message may ever echo a password (lapin's are plain strings that may).

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// The broker used when none is configured: a local RabbitMQ with its
/// default `guest` account and the default vhost `/`.
pub const DEFAULT_BROKER_URI: &str = "amqp://guest:guest@127.0.0.1:5672//";

/// Port of plain AMQP (IANA).
const AMQP_PORT: u16 = 5672;
/// Port of AMQP over TLS (IANA).
const AMQPS_PORT: u16 = 5671;
/// What py-amqp uses when kombu passes no user name or password.
const DEFAULT_CREDENTIAL: &str = "guest";
/// What kombu uses when the URI has no host.
const DEFAULT_HOST: &str = "localhost";
/// RabbitMQ's default virtual host.
const DEFAULT_VHOST: &str = "/";
/// Query keys we understand; anything else is a typo we report.
const ACCEPTED_QUERY_KEYS: &str = "heartbeat, connection_timeout";
/// Shown in place of every password.
const REDACTED: &str = "***";

/// One broker of the failover list: a parsed, validated AMQP URI.
///
/// The syntax is Celery/kombu's, `scheme://user:password@host:port/vhost?query`,
/// every part optional:
///
/// | URI | TLS | host | port | user | password | vhost |
/// |---|---|---|---|---|---|---|
/// | `amqp://` | no | `localhost` | 5672 | `guest` | `guest` | `/` |
/// | `amqp://h` | no | `h` | 5672 | `guest` | `guest` | `/` |
/// | `amqp://h/` | no | `h` | 5672 | `guest` | `guest` | `/` |
/// | `amqp://h//` | no | `h` | 5672 | `guest` | `guest` | `/` |
/// | `amqp://h/%2F` | no | `h` | 5672 | `guest` | `guest` | `/` |
/// | `amqp://h//prod` | no | `h` | 5672 | `guest` | `guest` | `/prod` |
/// | `amqp://h/%2Fprod` | no | `h` | 5672 | `guest` | `guest` | `/prod` |
/// | `amqp://h/prod` | no | `h` | 5672 | `guest` | `guest` | `prod` |
/// | `amqp://u@h:5673//` | no | `h` | 5673 | `u` | `guest` | `/` |
/// | `amqp://u:p%40ss@h/` | no | `h` | 5672 | `u` | `p@ss` | `/` |
/// | `amqps://u:p@h//` | yes | `h` | 5671 | `u` | `p` | `/` |
/// | `pyamqp://h//` | no | `h` | 5672 | `guest` | `guest` | `/` |
/// | `amqp://[::1]:5672/` | no | `::1` | 5672 | `guest` | `guest` | `/` |
///
/// In words:
///
/// - **Scheme**: `amqp`, `amqps` (TLS, with certificate verification) or
///   `pyamqp` (Celery's name for `amqp`), in any case.
/// - **User and password**: an empty or missing one means `guest`, as with
///   kombu and py-amqp. They are split at the *last* `@` before the host and
///   at the first `:`; write `/`, `?`, `#` and `;` in them as `%2F`, `%3F`,
///   `%23` and `%3B`.
/// - **Host**: a name, an IPv4 address or a bracketed IPv6 address; empty
///   means `localhost`. Host names are compared in lower case.
/// - **Port**: 1 to 65535; missing means 5672 (`amqp`) or 5671 (`amqps`).
/// - **Vhost**: the path with exactly one leading `/` removed, then
///   percent-decoded; empty means `/`.
/// - **Query**: `heartbeat=N` (whole seconds, 0 to 65535; absent or 0 lets
///   the broker choose) and `connection_timeout=SECS` (seconds, fractions
///   allowed, above 0). Any other key is an error, so a typo is not silently
///   ignored.
/// - A fragment (`#...`), spaces, and an unescaped `@` or `;` after the host
///   are errors.
///
/// Percent-escapes (`%40`) are decoded in the user, password, vhost and query.
///
/// [`Display`](fmt::Display) and [`Debug`](fmt::Debug) show the URI with the
/// password replaced by `***` and the vhost written kombu-style
/// (`amqp://guest:***@localhost:5672//` for vhost `/`). No error message ever
/// contains the password either.
///
/// ```
/// use logcollect::BrokerUri;
///
/// let uri = BrokerUri::parse("amqps://app:s%40cret@rabbit.example:5671//logs?heartbeat=30")?;
/// assert!(uri.is_tls());
/// assert_eq!(uri.user(), "app");
/// assert_eq!(uri.vhost(), "/logs");
/// assert_eq!(uri.heartbeat(), Some(30));
/// assert_eq!(uri.to_string(), "amqps://app:***@rabbit.example:5671//logs?heartbeat=30");
/// # Ok::<(), logcollect::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUri {
    tls: bool,
    user: String,
    password: String,
    /// Lower case; an IPv6 address without its brackets, so that it can be
    /// handed to the resolver as is.
    host: String,
    port: u16,
    vhost: String,
    heartbeat: Option<u16>,
    connection_timeout: Option<Duration>,
}

impl BrokerUri {
    /// Parses one broker URI; surrounding whitespace is ignored.
    ///
    /// See the [type documentation](BrokerUri) for the accepted forms.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidUri`] error that quotes the URI with its password
    /// replaced by `***` and says what is wrong.
    pub fn parse(s: &str) -> Result<BrokerUri, Error> {
        let s = s.trim();
        parse_one(s).map_err(|reason| invalid(format!("{:?}: {reason}", redact_raw(s))))
    }

    /// Whether the connection uses TLS (`amqps://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host name or address, lower case; an IPv6 address comes without
    /// brackets (`::1`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name, decoded; `guest` when the URI has none.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The virtual host, decoded (`/` for `amqp://host//`).
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The heartbeat interval in seconds from `?heartbeat=N`, if given.
    pub fn heartbeat(&self) -> Option<u16> {
        self.heartbeat
    }

    /// The TCP connect timeout from `?connection_timeout=SECS`, if given.
    pub fn connection_timeout(&self) -> Option<Duration> {
        self.connection_timeout
    }

    /// The password, decoded; `guest` when the URI has none. Crate-private so
    /// that it can only reach the AMQP client.
    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// `host:port` (`[::1]:5672` for IPv6), for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", HostDisplay(&self.host), self.port)
    }

    /// The same broker as lapin's URI type (password included), built field by
    /// field: re-parsing a formatted string would go through lapin's rules,
    /// which read the vhost differently. For tools that open their own
    /// connection; see `amqp::connect`. Follows lapin's major versions.
    #[cfg(feature = "lapin-api")]
    #[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
    pub fn to_lapin(&self) -> lapin::uri::AMQPUri {
        self.lapin_uri()
    }

    /// The lapin URI for the crate's own connections, whatever the features
    /// (`to_lapin` is its public face with `lapin-api`).
    pub(crate) fn lapin_uri(&self) -> lapin::uri::AMQPUri {
        use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};

        AMQPUri {
            scheme: if self.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.user.clone(),
                    password: self.password().to_owned(),
                },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: self.heartbeat,
                connection_timeout: self.connection_timeout.map(timeout_millis),
                ..AMQPQueryString::default()
            },
        }
    }
}

/// lapin takes whole milliseconds. Round up, so that a tiny positive timeout
/// never becomes 0 ms, which would fail every connection attempt at once.
fn timeout_millis(timeout: Duration) -> u64 {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

impl fmt::Display for BrokerUri {
    /// `scheme://user:***@host:port/vhost?query`, never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        write!(f, "{scheme}://")?;
        write_escaped(f, &self.user, is_userinfo_special)?;
        write!(f, ":{REDACTED}@{}:{}/", HostDisplay(&self.host), self.port)?;
        // Kombu style: one `/` separates the vhost, which is written with its
        // own slashes as they are, so vhost `/` shows as `//`.
        write_escaped(f, &self.vhost, is_vhost_special)?;
        let mut sep = '?';
        if let Some(heartbeat) = self.heartbeat {
            write!(f, "{sep}heartbeat={heartbeat}")?;
            sep = '&';
        }
        if let Some(timeout) = self.connection_timeout {
            write!(f, "{sep}connection_timeout={}", timeout.as_secs_f64())?;
        }
        Ok(())
    }
}

impl fmt::Debug for BrokerUri {
    /// `BrokerUri("amqp://guest:***@host:5672//")`, never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BrokerUri").field(&self.to_string()).finish()
    }
}

impl FromStr for BrokerUri {
    type Err = Error;

    /// Same as [`BrokerUri::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BrokerUri::parse(s)
    }
}

/// A non-empty failover list of brokers, tried in order.
///
/// Written as broker URIs (see [`BrokerUri`]) separated by `;`, as in Celery's
/// `broker_url`: `amqp://rabbit-a//;amqp://rabbit-b:5673//`. Whitespace around
/// each URI is ignored; an empty entry (`a;;b`, a trailing `;`) is an error.
///
/// [`Display`](fmt::Display) and [`Debug`](fmt::Debug) join the redacted URIs
/// with `;`.
///
/// ```
/// use logcollect::BrokerList;
///
/// let brokers = BrokerList::parse("amqp://rabbit-a//; amqp://rabbit-b:5673//")?;
/// assert_eq!(brokers.len(), 2);
/// assert_eq!(brokers.get(3).address(), "rabbit-b:5673");
/// # Ok::<(), logcollect::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerList {
    /// Never empty.
    brokers: Vec<BrokerUri>,
}

impl BrokerList {
    /// Parses a `;`-separated list of broker URIs.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidUri`] error when the list is empty, has an empty
    /// entry, or one of its URIs is invalid; it says which one, with every
    /// password replaced by `***`.
    pub fn parse(s: &str) -> Result<BrokerList, Error> {
        let s = s.trim();
        if s.is_empty() {
            return Err(invalid(
                "the broker list is empty: expected one or more URIs separated by ';', \
                 e.g. amqp://guest:guest@localhost:5672//",
            ));
        }
        let entries: Vec<&str> = s.split(';').map(str::trim).collect();
        let count = entries.len();
        if count == 1 {
            return BrokerUri::parse(s).map(BrokerList::from);
        }
        // A `;` inside a password splits it into a URI without its `@` and a
        // piece without a scheme. Look for such a piece before anything else
        // quotes the pieces: the first one could end with half the password.
        for (i, entry) in entries.iter().enumerate() {
            if !entry.is_empty() && split_scheme(entry).is_none() {
                return Err(invalid(format!(
                    "broker {} of {count} ({:?}) has no scheme: expected amqp://, amqps:// \
                     or pyamqp://; if a password contains ';', write it as %3B",
                    i + 1,
                    redact_raw(entry),
                )));
            }
        }
        if let Some(i) = entries.iter().position(|entry| entry.is_empty()) {
            let redacted: Vec<String> = entries.iter().map(|entry| redact_raw(entry)).collect();
            return Err(invalid(format!(
                "{:?}: broker {} of {count} is empty; remove the extra ';'",
                redacted.join(";"),
                i + 1,
            )));
        }
        let brokers = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                parse_one(entry).map_err(|reason| {
                    invalid(format!(
                        "{:?} (broker {} of {count}): {reason}",
                        redact_raw(entry),
                        i + 1,
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BrokerList { brokers })
    }

    /// The brokers, in failover order.
    pub fn iter(&self) -> impl Iterator<Item = &BrokerUri> {
        self.brokers.iter()
    }

    /// How many brokers the list has; at least one.
    #[allow(
        clippy::len_without_is_empty,
        reason = "a BrokerList is never empty, so is_empty would always be false"
    )]
    pub fn len(&self) -> usize {
        self.brokers.len()
    }

    /// The broker for connection attempt `i`, wrapping around: `get(len())`
    /// is the first broker again, so a reconnect loop can count attempts.
    pub fn get(&self, i: usize) -> &BrokerUri {
        &self.brokers[i % self.brokers.len()]
    }

    /// The first broker.
    pub fn first(&self) -> &BrokerUri {
        &self.brokers[0]
    }
}

impl From<BrokerUri> for BrokerList {
    /// A list of one broker.
    fn from(uri: BrokerUri) -> Self {
        BrokerList { brokers: vec![uri] }
    }
}

impl fmt::Display for BrokerList {
    /// The redacted URIs joined with `;`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, broker) in self.brokers.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            fmt::Display::fmt(broker, f)?;
        }
        Ok(())
    }
}

impl fmt::Debug for BrokerList {
    /// `BrokerList("amqp://a//;amqp://b//")`, never a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BrokerList")
            .field(&self.to_string())
            .finish()
    }
}

impl FromStr for BrokerList {
    type Err = Error;

    /// Same as [`BrokerList::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BrokerList::parse(s)
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidUri, message)
}

/// Parses one trimmed URI. The error is the reason only; the caller prefixes
/// the redacted URI. No reason may quote the password, so reasons about the
/// password never show its text.
fn parse_one(s: &str) -> Result<BrokerUri, String> {
    if s.is_empty() {
        return Err(
            "the URI is empty: expected e.g. amqp://guest:guest@localhost:5672//".to_owned(),
        );
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "the URI contains a space or control character; percent-encode it (a space is %20)"
                .to_owned(),
        );
    }
    let Some((scheme, rest)) = split_scheme(s) else {
        return Err(
            "no scheme: expected the URI to start with amqp://, amqps:// or pyamqp://, \
             e.g. amqp://guest:guest@localhost:5672//"
                .to_owned(),
        );
    };
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "amqp" | "pyamqp" => false,
        "amqps" => true,
        _ => {
            return Err(format!(
                "unsupported scheme {scheme:?}: expected amqp, amqps (TLS) or pyamqp"
            ));
        }
    };

    // As in urllib, which kombu uses: the authority ends at the first `/`,
    // `?` or `#`.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // Checked before the authority is looked at: a password with a raw `/`,
    // `?` or `#` puts its first half where the host or port should be, and
    // an error about that "port" would quote it.
    if tail.contains('@') {
        return Err(
            "'@' after the host: write '/', '?', '#' in a user name or password \
                    as %2F, %3F, %23, and '@' in a vhost as %40"
                .to_owned(),
        );
    }
    if tail.contains('#') {
        return Err("a fragment ('#...') is not allowed; write '#' in a vhost as %23".to_owned());
    }
    if tail.contains(';') {
        return Err("';' after the host: several brokers form a failover list \
                    (BrokerList); write ';' in a vhost as %3B"
            .to_owned());
    }

    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (String::new(), String::new()),
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, password)) => (decode(user, "user name")?, decode(password, "password")?),
            None => (decode(userinfo, "user name")?, String::new()),
        },
    };
    let (host, port) = parse_host_port(hostport)?;

    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    // Exactly one leading slash separates the vhost (kombu), so `//` is `/`.
    let vhost = decode(path.strip_prefix('/').unwrap_or(path), "vhost")?;

    let mut uri = BrokerUri {
        tls,
        user: or_default(user, DEFAULT_CREDENTIAL),
        password: or_default(password, DEFAULT_CREDENTIAL),
        host: or_default(host, DEFAULT_HOST),
        port: port.unwrap_or(if tls { AMQPS_PORT } else { AMQP_PORT }),
        vhost: or_default(vhost, DEFAULT_VHOST),
        heartbeat: None,
        connection_timeout: None,
    };
    if let Some(query) = query {
        parse_query(query, &mut uri)?;
    }
    Ok(uri)
}

/// Kombu treats an empty user, password or vhost as a missing one.
fn or_default(value: String, default: &str) -> String {
    if value.is_empty() {
        default.to_owned()
    } else {
        value
    }
}

/// Splits `scheme://rest` when the part before `://` is a valid scheme
/// (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`). Anything else
/// (`guest:pw@host`) has no scheme, and the text before a later `://` must not
/// be quoted as one: it may hold a password.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port`; the host comes back
/// lower case and possibly empty.
fn parse_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    if let Some(bracketed) = hostport.strip_prefix('[') {
        let Some((literal, after)) = bracketed.split_once(']') else {
            return Err(format!(
                "host {hostport:?} has '[' without ']': write an IPv6 address as [::1]"
            ));
        };
        let addr: Ipv6Addr = literal
            .parse()
            .map_err(|_| format!("[{literal}] is not a valid IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => parse_port(port)?,
                None => {
                    return Err(format!(
                        "unexpected {after:?} after the IPv6 address: expected :port"
                    ));
                }
            },
        };
        // Canonical form, so that `[::1]` and `[0:0::1]` compare equal.
        return Ok((addr.to_string(), port));
    }
    let (host, port) = match hostport.split_once(':') {
        Some((host, port)) => {
            if port.contains(':') {
                return Err(format!(
                    "host {hostport:?} has several ':': write an IPv6 address in brackets, \
                     e.g. amqp://[::1]:5672//"
                ));
            }
            (host, parse_port(port)?)
        }
        None => (hostport, None),
    };
    if let Some(bad) = host
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "host {host:?} contains {bad:?}: expected a host name, an IPv4 address \
             or a bracketed IPv6 address"
        ));
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// An empty port (`host:`) means the default, as in RFC 3986 and urllib.
fn parse_port(port: &str) -> Result<Option<u16>, String> {
    if port.is_empty() {
        return Ok(None);
    }
    // Digits only: `u16::from_str` would also take `+5672`.
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(Some(port)),
        _ => Err(format!("port {port} is out of range 1-65535")),
    }
}

/// Reads `key=value&...` into `uri`. Keys and values are percent-decoded;
/// empty pieces (`a=1&&b=2`, a trailing `&`) are skipped, as urllib does.
fn parse_query(query: &str, uri: &mut BrokerUri) -> Result<(), String> {
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!(
                "query parameter {:?} has no value: expected key=value",
                decode(pair, "query")?
            ));
        };
        let key = decode(key, "query")?;
        let value = decode(value, "query")?;
        match key.as_str() {
            "heartbeat" => {
                if uri.heartbeat.is_some() {
                    return Err(given_twice(&key));
                }
                uri.heartbeat = Some(parse_heartbeat(&value)?);
            }
            "connection_timeout" => {
                if uri.connection_timeout.is_some() {
                    return Err(given_twice(&key));
                }
                uri.connection_timeout = Some(parse_timeout(&value)?);
            }
            _ => {
                return Err(format!(
                    "unknown query parameter {key:?}: accepted parameters are \
                     {ACCEPTED_QUERY_KEYS}"
                ));
            }
        }
    }
    Ok(())
}

fn given_twice(key: &str) -> String {
    format!("query parameter {key:?} is given twice")
}

fn parse_heartbeat(value: &str) -> Result<u16, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "heartbeat {value:?} is not a whole number of seconds (0-65535)"
        ));
    }
    value
        .parse()
        .map_err(|_| format!("heartbeat {value} is out of range 0-65535 seconds"))
}

fn parse_timeout(value: &str) -> Result<Duration, String> {
    let not_positive = || {
        format!("connection_timeout {value:?} is not a positive number of seconds (e.g. 5 or 2.5)")
    };
    // `f64::from_str` also takes `inf` and `NaN`; the checks below reject them.
    let secs: f64 = value.parse().map_err(|_| not_positive())?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(not_positive());
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("connection_timeout {value:?} is too large"))
}

/// Percent-decodes `raw`, strictly: a `%` not followed by two hex digits is
/// an error (the `percent-encoding` crate would pass it through), and so is
/// invalid UTF-8. `what` names the part; the value itself is never quoted,
/// since it may be the password.
fn decode(raw: &str, what: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Err(format!(
                    "invalid percent-escape in the {what}: '%' must be followed by two hex \
                     digits (write a literal '%' as %25)"
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| format!("the {what} is not valid UTF-8 after percent-decoding"))
}

/// The raw text of a URI that may not parse, safe to quote in an error.
///
/// With a scheme, the text between the first `:` and the last `@` after
/// `://` becomes `***`. The last `@` anywhere, not only in the authority: a
/// password with a raw `/` or `#` ends the authority early. Without a scheme
/// the structure is unknown, so everything before the last `@` goes.
/// This over-redacts odd input (`@` in a vhost), which is the safe side.
fn redact_raw(s: &str) -> String {
    match split_scheme(s) {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => match rest[..at].find(':') {
                Some(colon) => format!("{scheme}://{}{REDACTED}{}", &rest[..=colon], &rest[at..]),
                None => s.to_owned(),
            },
            None => s.to_owned(),
        },
        None => match s.rfind('@') {
            Some(at) => format!("{REDACTED}{}", &s[at..]),
            None => s.to_owned(),
        },
    }
}

/// Writes a host, in brackets when it is an IPv6 address.
struct HostDisplay<'a>(&'a str);

impl fmt::Display for HostDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains(':') {
            write!(f, "[{}]", self.0)
        } else {
            f.write_str(self.0)
        }
    }
}

/// Characters that must be escaped in a user name to parse back the same.
/// `;` too, so that a joined failover list splits back the same.
fn is_userinfo_special(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(c, '%' | ':' | '@' | '/' | '?' | '#' | ';' | '[' | ']')
}

/// Characters that must be escaped in a vhost; `/` stays readable.
fn is_vhost_special(c: char) -> bool {
    c.is_control() || c.is_whitespace() || matches!(c, '%' | '@' | '?' | '#' | ';')
}

/// Writes `s` with the characters `special` picks percent-encoded (as UTF-8
/// bytes) and everything else, non-ASCII included, as it is, for reading.
fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str, special: fn(char) -> bool) -> fmt::Result {
    for c in s.chars() {
        if special(c) {
            let mut buf = [0; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                write!(f, "%{byte:02X}")?;
            }
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinctive, so that a leak cannot be a coincidence.
    const SECRET: &str = "Xyzzy7Plugh";

    fn parse(s: &str) -> BrokerUri {
        match BrokerUri::parse(s) {
            Ok(uri) => uri,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn parse_err(s: &str) -> Error {
        match BrokerUri::parse(s) {
            Ok(uri) => panic!("{s:?} should not parse, got {uri}"),
            Err(e) => e,
        }
    }

    fn list_err(s: &str) -> Error {
        match BrokerList::parse(s) {
            Ok(list) => panic!("{s:?} should not parse, got {list}"),
            Err(e) => e,
        }
    }

    /// Checks kind, wording and that no fragment of the secret leaks.
    fn assert_invalid(err: &Error, expected_fragment: &str, secret_parts: &[&str]) {
        assert_eq!(err.kind(), ErrorKind::InvalidUri);
        let display = err.to_string();
        let debug = format!("{err:?}");
        assert!(
            display.contains(expected_fragment),
            "{display:?} should contain {expected_fragment:?}"
        );
        for part in secret_parts {
            assert!(!display.contains(part), "{display:?} leaks {part:?}");
            assert!(!debug.contains(part), "{debug:?} leaks {part:?}");
        }
    }

    #[test]
    fn scheme_amqp_has_port_5672_without_tls() {
        let uri = parse("amqp://rabbit");
        assert!(!uri.is_tls());
        assert_eq!(uri.port(), 5672);
    }

    #[test]
    fn scheme_amqps_has_port_5671_with_tls() {
        let uri = parse("amqps://rabbit");
        assert!(uri.is_tls());
        assert_eq!(uri.port(), 5671);
    }

    #[test]
    fn scheme_pyamqp_is_an_alias_of_amqp() {
        assert_eq!(parse("pyamqp://u:p@rabbit//"), parse("amqp://u:p@rabbit//"));
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(parse("AMQPS://rabbit"), parse("amqps://rabbit"));
    }

    #[test]
    fn unsupported_scheme_is_named() {
        for (uri, scheme) in [
            ("http://rabbit/", "unsupported scheme \"http\""),
            ("redis://localhost:6379/0", "unsupported scheme \"redis\""),
        ] {
            assert_invalid(&parse_err(uri), scheme, &[]);
        }
    }

    #[test]
    fn missing_scheme_is_error() {
        for uri in ["localhost:5672", "amqp:/rabbit", "//rabbit"] {
            assert_invalid(&parse_err(uri), "no scheme", &[]);
        }
    }

    #[test]
    fn empty_uri_is_error() {
        assert_invalid(&parse_err("  "), "empty", &[]);
    }

    #[test]
    fn missing_user_and_password_are_guest() {
        let uri = parse("amqp://rabbit//");
        assert_eq!(uri.user(), "guest");
        assert_eq!(uri.password(), "guest");
    }

    #[test]
    fn missing_password_is_guest() {
        // The Python library's README example, on which it crashed.
        let uri = parse("amqp://guest@localhost//vhost");
        assert_eq!(uri.user(), "guest");
        assert_eq!(uri.password(), "guest");
        assert_eq!(uri.vhost(), "/vhost");
        let uri = parse("amqp://app@rabbit//");
        assert_eq!((uri.user(), uri.password()), ("app", "guest"));
    }

    #[test]
    fn empty_user_and_password_are_guest() {
        let uri = parse("amqp://:@rabbit//");
        assert_eq!((uri.user(), uri.password()), ("guest", "guest"));
        let uri = parse("amqp://:pw@rabbit//");
        assert_eq!((uri.user(), uri.password()), ("guest", "pw"));
        let uri = parse("amqp://app:@rabbit//");
        assert_eq!((uri.user(), uri.password()), ("app", "guest"));
    }

    #[test]
    fn empty_host_is_localhost() {
        for s in ["amqp://", "amqp:///", "amqp://u:p@/", "amqp://:5673//"] {
            assert_eq!(parse(s).host(), "localhost", "{s}");
        }
        assert_eq!(parse("amqp://:5673//").port(), 5673);
    }

    #[test]
    fn host_is_lower_case() {
        assert_eq!(
            parse("amqp://Rabbit.Example.COM//").host(),
            "rabbit.example.com"
        );
    }

    #[test]
    fn host_with_bad_character_is_error() {
        assert_invalid(&parse_err("amqp://rab%62it//"), "contains '%'", &[]);
    }

    #[test]
    fn explicit_port_is_used() {
        assert_eq!(parse("amqp://rabbit:5673//").port(), 5673);
        assert_eq!(parse("amqps://rabbit:5673//").port(), 5673);
        assert_eq!(parse("amqp://rabbit:1//").port(), 1);
        assert_eq!(parse("amqp://rabbit:65535//").port(), 65535);
    }

    #[test]
    fn empty_port_is_default() {
        assert_eq!(parse("amqp://rabbit://").port(), 5672);
        assert_eq!(parse("amqps://rabbit:").port(), 5671);
    }

    #[test]
    fn port_out_of_range_is_error() {
        for (uri, port) in [
            ("amqp://rabbit:0//", "port 0 "),
            ("amqp://rabbit:65536//", "port 65536 "),
            (
                "amqp://rabbit:99999999999999999999//",
                "port 99999999999999999999 ",
            ),
        ] {
            assert_invalid(&parse_err(uri), port, &[]);
            assert_invalid(&parse_err(uri), "out of range 1-65535", &[]);
        }
    }

    #[test]
    fn port_not_a_number_is_error() {
        for uri in [
            "amqp://rabbit:abc//",
            "amqp://rabbit:+5672//",
            "amqp://rabbit:-1//",
        ] {
            assert_invalid(&parse_err(uri), "is not a number", &[]);
        }
    }

    #[test]
    fn error_message_quotes_redacted_uri() {
        let err = parse_err(&format!("amqp://guest:{SECRET}@h:99999//"));
        assert_eq!(
            err.to_string(),
            "invalid broker URI: \"amqp://guest:***@h:99999//\": port 99999 is out of range 1-65535"
        );
    }

    #[test]
    fn vhost_forms() {
        for (uri, vhost) in [
            ("amqp://h//", "/"),
            ("amqp://h/", "/"),
            ("amqp://h", "/"),
            ("amqp://h//vhost", "/vhost"),
            ("amqp://h/vhost", "vhost"),
            ("amqp://h/%2F", "/"),
            ("amqp://h/%2f", "/"),
            ("amqp://h/%2Fprod", "/prod"),
            ("amqp://h/a/b", "a/b"),
            ("amqp://h///", "//"),
            ("amqp://h/?heartbeat=1", "/"),
            ("amqp://h?heartbeat=1", "/"),
            ("amqp://h/caf%C3%A9", "café"),
        ] {
            assert_eq!(parse(uri).vhost(), vhost, "{uri}");
        }
    }

    #[test]
    fn percent_escapes_decode_in_user_password_and_vhost() {
        let uri = parse("amqp://us%3Aer:p%40ss%3A%2F%3B@rabbit/v%20h");
        assert_eq!(uri.user(), "us:er");
        assert_eq!(uri.password(), "p@ss:/;");
        assert_eq!(uri.vhost(), "v h");
    }

    #[test]
    fn userinfo_is_split_at_last_at() {
        let uri = parse("amqp://app:p@ss@rabbit:5673//");
        assert_eq!(uri.user(), "app");
        assert_eq!(uri.password(), "p@ss");
        assert_eq!(uri.host(), "rabbit");
        assert_eq!(uri.port(), 5673);
    }

    #[test]
    fn password_may_contain_colon() {
        assert_eq!(parse("amqp://app:a:b@rabbit//").password(), "a:b");
    }

    #[test]
    fn invalid_percent_escape_is_error() {
        assert_invalid(&parse_err("amqp://us%zz:pw@h//"), "in the user name", &[]);
        assert_invalid(&parse_err("amqp://h/v%2"), "in the vhost", &[]);
        assert_invalid(&parse_err("amqp://h/v%"), "in the vhost", &[]);
        assert_invalid(&parse_err("amqp://h//?heartbeat=%x1"), "in the query", &[]);
        let err = parse_err(&format!("amqp://app:{SECRET}%G1{SECRET}@h//"));
        assert_invalid(
            &err,
            "invalid percent-escape in the password",
            &[SECRET, "%G1"],
        );
    }

    #[test]
    fn invalid_utf8_after_decoding_is_error() {
        assert_invalid(
            &parse_err("amqp://u%FF@h//"),
            "user name is not valid UTF-8",
            &[],
        );
        assert_invalid(
            &parse_err("amqp://h/%C3%28"),
            "vhost is not valid UTF-8",
            &[],
        );
        let err = parse_err(&format!("amqp://app:{SECRET}%FF@h//"));
        assert_invalid(&err, "password is not valid UTF-8", &[SECRET]);
    }

    #[test]
    fn ipv6_literal_host() {
        let uri = parse("amqp://[::1]:5672/");
        assert_eq!(uri.host(), "::1");
        assert_eq!(uri.port(), 5672);
        assert_eq!(uri.address(), "[::1]:5672");
        assert_eq!(uri.to_string(), "amqp://guest:***@[::1]:5672//");
        assert_eq!(parse("amqps://u:p@[0:0::1]//").host(), "::1");
        assert_eq!(parse("amqps://u:p@[0:0::1]//").port(), 5671);
        assert_eq!(parse("amqp://[FE80::1]").host(), "fe80::1");
    }

    #[test]
    fn bad_ipv6_literal_is_error() {
        assert_invalid(&parse_err("amqp://::1:5672/"), "in brackets", &[]);
        assert_invalid(&parse_err("amqp://[::1/"), "without ']'", &[]);
        assert_invalid(&parse_err("amqp://[::zz]:5672/"), "not a valid IPv6", &[]);
        assert_invalid(&parse_err("amqp://[::1]x/"), "after the IPv6 address", &[]);
        assert_invalid(&parse_err("amqp://[::1]:70000/"), "out of range", &[]);
    }

    #[test]
    fn query_heartbeat() {
        assert_eq!(parse("amqp://h//?heartbeat=30").heartbeat(), Some(30));
        assert_eq!(parse("amqp://h//?heartbeat=0").heartbeat(), Some(0));
        assert_eq!(parse("amqp://h//").heartbeat(), None);
        assert_invalid(&parse_err("amqp://h//?heartbeat=abc"), "whole number", &[]);
        assert_invalid(&parse_err("amqp://h//?heartbeat=-1"), "whole number", &[]);
        assert_invalid(&parse_err("amqp://h//?heartbeat="), "whole number", &[]);
        assert_invalid(
            &parse_err("amqp://h//?heartbeat=65536"),
            "out of range",
            &[],
        );
    }

    #[test]
    fn query_connection_timeout_accepts_fractions() {
        let timeout = |s: &str| parse(s).connection_timeout();
        assert_eq!(
            timeout("amqp://h//?connection_timeout=5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            timeout("amqp://h//?connection_timeout=2.5"),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(timeout("amqp://h//"), None);
        for bad in ["0", "-1", "abc", "inf", "NaN", ""] {
            let err = parse_err(&format!("amqp://h//?connection_timeout={bad}"));
            assert_invalid(&err, "not a positive number of seconds", &[]);
        }
        assert_invalid(
            &parse_err("amqp://h//?connection_timeout=1e300"),
            "too large",
            &[],
        );
    }

    #[test]
    fn query_with_both_keys_and_empty_pieces() {
        let uri = parse("amqp://h//?heartbeat=10&&connection_timeout=3&");
        assert_eq!(uri.heartbeat(), Some(10));
        assert_eq!(uri.connection_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(parse("amqp://h//?").heartbeat(), None);
    }

    #[test]
    fn query_unknown_key_is_named_with_accepted_keys() {
        let err = parse_err("amqp://h//?hearbeat=10");
        assert_invalid(&err, "unknown query parameter \"hearbeat\"", &[]);
        assert_invalid(&err, "heartbeat, connection_timeout", &[]);
        // kombu's name for it is not lapin's; still an error, with the hint.
        assert_invalid(
            &parse_err("amqp://h//?connect_timeout=1"),
            "connection_timeout",
            &[],
        );
    }

    #[test]
    fn query_key_without_value_is_error() {
        assert_invalid(&parse_err("amqp://h//?heartbeat"), "has no value", &[]);
    }

    #[test]
    fn query_key_given_twice_is_error() {
        assert_invalid(
            &parse_err("amqp://h//?heartbeat=1&heartbeat=2"),
            "given twice",
            &[],
        );
    }

    #[test]
    fn fragment_is_error() {
        assert_invalid(&parse_err("amqp://h//#frag"), "fragment", &[]);
        assert_invalid(&parse_err("amqp://h#frag"), "fragment", &[]);
        assert_invalid(&parse_err("amqp://h//?heartbeat=1#x"), "fragment", &[]);
    }

    #[test]
    fn at_after_host_is_error() {
        assert_invalid(&parse_err("amqp://h/v@x"), "'@' after the host", &[]);
    }

    #[test]
    fn semicolon_after_host_is_error() {
        assert_invalid(&parse_err("amqp://a//;amqp://b//"), "failover list", &[]);
    }

    #[test]
    fn whitespace_inside_is_error() {
        assert_invalid(
            &parse_err("amqp://h/v h"),
            "space or control character",
            &[],
        );
        assert_invalid(
            &parse_err("amqp://h/v\th"),
            "space or control character",
            &[],
        );
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(parse("  amqp://h//\n"), parse("amqp://h//"));
    }

    #[test]
    fn from_str_is_parse() {
        let uri: BrokerUri = "amqp://u:p@h:5673//v".parse().unwrap();
        assert_eq!(uri, parse("amqp://u:p@h:5673//v"));
        assert!("http://h".parse::<BrokerUri>().is_err());
        let list: BrokerList = "amqp://a//;amqp://b//".parse().unwrap();
        assert_eq!(list, BrokerList::parse("amqp://a//;amqp://b//").unwrap());
    }

    #[test]
    fn default_broker_uri() {
        let uri = parse(DEFAULT_BROKER_URI);
        assert!(!uri.is_tls());
        assert_eq!(uri.host(), "127.0.0.1");
        assert_eq!(uri.port(), 5672);
        assert_eq!((uri.user(), uri.password()), ("guest", "guest"));
        assert_eq!(uri.vhost(), "/");
        assert_eq!(uri.to_string(), "amqp://guest:***@127.0.0.1:5672//");
    }

    /// Every row of the table in the `BrokerUri` docs, in the same order.
    #[test]
    fn documented_forms() {
        type Row = (
            &'static str,
            bool,
            &'static str,
            u16,
            &'static str,
            &'static str,
            &'static str,
        );
        let rows: [Row; 13] = [
            ("amqp://", false, "localhost", 5672, "guest", "guest", "/"),
            ("amqp://h", false, "h", 5672, "guest", "guest", "/"),
            ("amqp://h/", false, "h", 5672, "guest", "guest", "/"),
            ("amqp://h//", false, "h", 5672, "guest", "guest", "/"),
            ("amqp://h/%2F", false, "h", 5672, "guest", "guest", "/"),
            (
                "amqp://h//prod",
                false,
                "h",
                5672,
                "guest",
                "guest",
                "/prod",
            ),
            (
                "amqp://h/%2Fprod",
                false,
                "h",
                5672,
                "guest",
                "guest",
                "/prod",
            ),
            ("amqp://h/prod", false, "h", 5672, "guest", "guest", "prod"),
            ("amqp://u@h:5673//", false, "h", 5673, "u", "guest", "/"),
            ("amqp://u:p%40ss@h/", false, "h", 5672, "u", "p@ss", "/"),
            ("amqps://u:p@h//", true, "h", 5671, "u", "p", "/"),
            ("pyamqp://h//", false, "h", 5672, "guest", "guest", "/"),
            (
                "amqp://[::1]:5672/",
                false,
                "::1",
                5672,
                "guest",
                "guest",
                "/",
            ),
        ];
        for (s, tls, host, port, user, password, vhost) in rows {
            let uri = parse(s);
            assert_eq!(
                (
                    uri.is_tls(),
                    uri.host(),
                    uri.port(),
                    uri.user(),
                    uri.password(),
                    uri.vhost()
                ),
                (tls, host, port, user, password, vhost),
                "{s}"
            );
        }
    }

    #[test]
    fn display_redacts_password_and_writes_vhost_kombu_style() {
        for (s, shown) in [
            ("amqp://guest:guest@h:5672//", "amqp://guest:***@h:5672//"),
            ("amqp://h", "amqp://guest:***@h:5672//"),
            ("pyamqp://h/prod", "amqp://guest:***@h:5672/prod"),
            ("amqp://h/%2Fprod", "amqp://guest:***@h:5672//prod"),
            ("amqps://h/a/b", "amqps://guest:***@h:5671/a/b"),
            (
                "amqp://u%40x:p@h/v%3Fw%25",
                "amqp://u%40x:***@h:5672/v%3Fw%25",
            ),
            (
                "amqp://h//?connection_timeout=2.5&heartbeat=10",
                "amqp://guest:***@h:5672//?heartbeat=10&connection_timeout=2.5",
            ),
        ] {
            assert_eq!(parse(s).to_string(), shown, "{s}");
        }
    }

    #[test]
    fn display_parses_back_to_the_same_broker_but_password() {
        let uri = parse(
            "amqps://us%3Ber%40:pw@[::1]:5673/%2Fv%3B%20%23?heartbeat=7&connection_timeout=0.25",
        );
        let back = parse(&uri.to_string());
        assert_eq!(back.password(), "***");
        assert_eq!(
            (
                back.is_tls(),
                back.user(),
                back.host(),
                back.port(),
                back.vhost()
            ),
            (true, "us;er@", "::1", 5673, "/v; #")
        );
        assert_eq!(back.heartbeat(), Some(7));
        assert_eq!(back.connection_timeout(), uri.connection_timeout());
    }

    #[test]
    fn display_and_debug_never_show_the_password() {
        let uri = parse(&format!("amqp://app:{SECRET}@h//"));
        let list =
            BrokerList::parse(&format!("amqp://app:{SECRET}@a//;amqps://b:{SECRET}@b//")).unwrap();
        for shown in [
            uri.to_string(),
            format!("{uri:?}"),
            format!("{uri:#?}"),
            list.to_string(),
            format!("{list:?}"),
            format!("{list:#?}"),
        ] {
            assert!(!shown.contains(SECRET), "{shown:?} leaks the password");
            assert!(shown.contains("***"), "{shown:?}");
        }
        assert_eq!(format!("{uri:?}"), "BrokerUri(\"amqp://app:***@h:5672//\")");
        assert_eq!(
            format!("{list:?}"),
            "BrokerList(\"amqp://app:***@a:5672//;amqps://b:***@b:5671//\")"
        );
    }

    #[test]
    fn errors_never_show_the_password() {
        let cases = [
            (format!("amqp://app:{SECRET}@h:99999//"), "out of range"),
            (format!("amqp://app:{SECRET}@h:0//"), "out of range"),
            (format!("amqp://app:{SECRET}@h:port//"), "not a number"),
            (
                format!("redis://app:{SECRET}@h:6379/0"),
                "unsupported scheme",
            ),
            (format!("app:{SECRET}@h//"), "no scheme"),
            (format!("amqp:/app:{SECRET}@h//"), "no scheme"),
            (
                format!("amqp://app:{SECRET}@h//?frame_max=1"),
                "unknown query",
            ),
            (
                format!("amqp://app:{SECRET}@h//?heartbeat=x"),
                "whole number",
            ),
            (
                format!("amqp://app:{SECRET}@h//?connection_timeout=-1"),
                "positive",
            ),
            (
                format!("amqp://app:{SECRET}@h//?heartbeat=1&heartbeat=1"),
                "twice",
            ),
            (format!("amqp://app:{SECRET}@h//?heartbeat"), "no value"),
            (
                format!("amqp://app:{SECRET}@h/v%zz"),
                "percent-escape in the vhost",
            ),
            (
                format!("amqp://a%zz:{SECRET}@h//"),
                "percent-escape in the user",
            ),
            (
                format!("amqp://app:{SECRET}%@h//"),
                "percent-escape in the password",
            ),
            (format!("amqp://app:{SECRET}@h//#frag"), "fragment"),
            (format!("amqp://app:{SECRET}@h/ v"), "space"),
            (format!("amqp://app:{SECRET}@h:1:2//"), "in brackets"),
            (format!("amqp://app:{SECRET}@[::zz]//"), "IPv6"),
            (format!("amqp://app:{SECRET}@h$//"), "contains '$'"),
        ];
        for (uri, fragment) in &cases {
            assert_invalid(&parse_err(uri), fragment, &[SECRET]);
            // The same through a failover list, in first and second place.
            assert_invalid(&list_err(uri), fragment, &[SECRET]);
            assert_invalid(&list_err(&format!("amqp://b//;{uri}")), fragment, &[SECRET]);
        }
        // Valid as a list, so only as a single URI.
        let err = parse_err(&format!("amqp://app:{SECRET}@h//;amqp://b//"));
        assert_invalid(&err, "failover list", &[SECRET]);
    }

    #[test]
    fn errors_never_show_a_password_with_raw_delimiters() {
        // A raw `/`, `?` or `#` ends the authority inside the password, so
        // its first half lands where the host or port should be.
        for sep in ['/', '?', '#'] {
            let uri = format!("amqp://app:Xyzzy{sep}7Plugh@h:5672//");
            assert_invalid(&parse_err(&uri), "'@' after the host", &["Xyzzy", "7Plugh"]);
            assert_invalid(&list_err(&uri), "'@' after the host", &["Xyzzy", "7Plugh"]);
        }
    }

    #[test]
    fn failover_list_of_two() {
        let list = BrokerList::parse("amqp://a//;amqp://b:5673//").unwrap();
        assert_eq!(list.len(), 2);
        let addresses: Vec<String> = list.iter().map(BrokerUri::address).collect();
        assert_eq!(addresses, ["a:5672", "b:5673"]);
        assert_eq!(list.first().host(), "a");
        assert_eq!(
            list.to_string(),
            "amqp://guest:***@a:5672//;amqp://guest:***@b:5673//"
        );
    }

    #[test]
    fn failover_list_of_one() {
        let list = BrokerList::parse("amqps://a//").unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list, BrokerList::from(parse("amqps://a//")));
    }

    #[test]
    fn failover_get_wraps_around() {
        let list = BrokerList::parse("amqp://a;amqp://b;amqp://c").unwrap();
        let hosts: Vec<&str> = (0..7).map(|i| list.get(i).host()).collect();
        assert_eq!(hosts, ["a", "b", "c", "a", "b", "c", "a"]);
    }

    #[test]
    fn failover_trims_whitespace() {
        let list = BrokerList::parse("  amqp://a// ;\n amqp://b//  ").unwrap();
        assert_eq!(list, BrokerList::parse("amqp://a//;amqp://b//").unwrap());
    }

    #[test]
    fn failover_empty_entries_are_errors() {
        assert_invalid(
            &list_err("amqp://a//;;amqp://b//"),
            "broker 2 of 3 is empty",
            &[],
        );
        assert_invalid(&list_err("amqp://a//;"), "broker 2 of 2 is empty", &[]);
        assert_invalid(&list_err(";amqp://a//"), "broker 1 of 2 is empty", &[]);
        assert_invalid(
            &list_err("amqp://a//; ;amqp://b//"),
            "broker 2 of 3 is empty",
            &[],
        );
        let err = list_err(&format!("amqp://u:{SECRET}@a//;"));
        assert_invalid(&err, "\"amqp://u:***@a//;\"", &[SECRET]);
    }

    #[test]
    fn empty_list_is_error() {
        assert_invalid(&list_err(""), "the broker list is empty", &[]);
        assert_invalid(&list_err(" \n "), "the broker list is empty", &[]);
    }

    #[test]
    fn failover_bad_entry_is_named() {
        let err = list_err("amqp://a//;amqp://b:x//");
        assert_invalid(&err, "(broker 2 of 2): port \"x\" is not a number", &[]);
        assert_invalid(&list_err("amqp://a//;redis://b"), "unsupported scheme", &[]);
    }

    #[test]
    fn semicolon_in_password_is_error_in_list_without_leak() {
        // Accepted in a single URI (userinfo may hold `;`), but a list splits
        // there, which must not quote either half of the password.
        assert_eq!(
            parse("amqp://app:Xyzzy;7Plugh@h//").password(),
            "Xyzzy;7Plugh"
        );
        for list in [
            "amqp://app:Xyzzy;7Plugh@h//",
            "amqp://app:Xyzzy;7Plugh@h:5672//;amqp://b//",
            "amqp://b//;amqp://app:Xyzzy;;7Plugh@h//",
        ] {
            assert_invalid(&list_err(list), "write it as %3B", &["Xyzzy", "7Plugh"]);
        }
        let list = BrokerList::parse("amqp://app:Xyzzy%3B7Plugh@h//").unwrap();
        assert_eq!(list.first().password(), "Xyzzy;7Plugh");
    }

    #[test]
    fn redact_raw_forms() {
        for (raw, redacted) in [
            ("amqp://u:pw@h//", "amqp://u:***@h//"),
            ("amqp://u@h//", "amqp://u@h//"),
            ("amqp://h:5672//", "amqp://h:5672//"),
            ("amqp://u:p@w@h//", "amqp://u:***@h//"),
            ("amqp://u:p/w@h//", "amqp://u:***@h//"),
            ("u:pw@h//", "***@h//"),
            ("pw@h//", "***@h//"),
            ("x/y://u:pw@h", "***@h"),
        ] {
            assert_eq!(redact_raw(raw), redacted, "{raw}");
        }
    }

    #[test]
    fn to_lapin_carries_every_field() {
        use lapin::uri::AMQPScheme;

        let uri = parse("amqps://app:p%40ss@rabbit:5673//logs?heartbeat=15&connection_timeout=2.5");
        let lapin = uri.lapin_uri();
        assert_eq!(lapin.scheme, AMQPScheme::AMQPS);
        assert_eq!(lapin.authority.host, "rabbit");
        assert_eq!(lapin.authority.port, 5673);
        assert_eq!(lapin.authority.userinfo.username, "app");
        assert_eq!(lapin.authority.userinfo.password, "p@ss");
        assert_eq!(lapin.vhost, "/logs");
        assert_eq!(lapin.query.heartbeat, Some(15));
        assert_eq!(lapin.query.connection_timeout, Some(2500));
        assert_eq!(lapin.query.frame_max, None);
        assert_eq!(lapin.query.channel_max, None);
    }

    #[test]
    fn to_lapin_defaults() {
        use lapin::uri::AMQPScheme;

        let lapin = parse("pyamqp://[::1]").lapin_uri();
        assert_eq!(lapin.scheme, AMQPScheme::AMQP);
        assert_eq!(lapin.authority.host, "::1");
        assert_eq!(lapin.authority.port, 5672);
        assert_eq!(lapin.authority.userinfo.username, "guest");
        assert_eq!(lapin.authority.userinfo.password, "guest");
        assert_eq!(lapin.vhost, "/");
        assert_eq!(lapin.query.heartbeat, None);
        assert_eq!(lapin.query.connection_timeout, None);
    }

    #[test]
    fn to_lapin_rounds_timeout_up_to_whole_millis() {
        let millis = |s: &str| parse(s).lapin_uri().query.connection_timeout;
        assert_eq!(millis("amqp://h//?connection_timeout=0.0001"), Some(1));
        assert_eq!(millis("amqp://h//?connection_timeout=0.0015"), Some(2));
        assert_eq!(millis("amqp://h//?connection_timeout=3"), Some(3000));
    }
}
