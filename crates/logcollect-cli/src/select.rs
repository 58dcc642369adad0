//! Which records `tail` shows: `--level`, `--logger` and `--where`, and the
//! binding keys a logger glob can narrow the subscription to.

use serde_json::{Map, Value};

use logcollect::Level;

/// A logger name pattern: `*` any run of characters (dots included), `?`
/// one character, anything else itself. `::` and `.` are the same
/// separator, so `app::db*` matches the Rust logger `app::db::pool` and the
/// Python logger `app.db.pool` alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    /// As given, for messages.
    text: String,
    /// With `::` as `.`.
    chars: Vec<char>,
}

impl Glob {
    pub(crate) fn new(text: &str) -> Glob {
        Glob {
            text: text.to_owned(),
            chars: dotted(text).chars().collect(),
        }
    }

    /// Whether the logger `name` matches, `::` read as `.`.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = dotted(name).chars().collect();
        wildmatch(&self.chars, &name)
    }

    /// The AMQP topic binding key that receives at least every record whose
    /// logger matches, for routing-key prefix `prefix`: exactly
    /// `<prefix>.<logger>` when the glob has no wildcard, else `<prefix>.`
    /// plus the glob's leading whole words without wildcards, then `#`
    /// (`app.db*` gives `<prefix>.app.#`). AMQP's `*` is one whole word and a
    /// glob's `*` is any text, so a wider key plus the client-side match is
    /// the only exact translation.
    pub(crate) fn binding(&self, prefix: &str) -> String {
        let dotted: String = self.chars.iter().collect();
        if !dotted.contains(['*', '?']) {
            // The core routes an empty logger as `root`.
            let logger = if dotted.is_empty() { "root" } else { &dotted };
            return format!("{prefix}.{logger}");
        }
        let literal: Vec<&str> = dotted
            .split('.')
            .take_while(|w| !w.contains(['*', '?']))
            .collect();
        if literal.is_empty() {
            format!("{prefix}.#")
        } else {
            format!("{prefix}.{}.#", literal.join("."))
        }
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn dotted(name: &str) -> String {
    name.replace("::", ".")
}

/// Glob matching with backtracking to the last `*` only: linear in practice,
/// quadratic at worst, never exponential.
fn wildmatch(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some('?') => {
                p += 1;
                t += 1;
            }
            Some(c) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// The filters of one `tail`. A record passes when it passes all of them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    /// Records below it are skipped; a record whose level is missing or not
    /// one of the six is kept, since it cannot be compared.
    pub(crate) min_level: Option<Level>,
    /// The logger must match one of them (none: any logger).
    pub(crate) loggers: Vec<Glob>,
    /// Every `key=value` must hold.
    pub(crate) wheres: Vec<(String, String)>,
}

impl Selection {
    /// Whether any filter is set; a body that is not a JSON record passes
    /// only when none is.
    pub(crate) fn is_active(&self) -> bool {
        self.min_level.is_some() || !self.loggers.is_empty() || !self.wheres.is_empty()
    }

    pub(crate) fn matches(&self, record: &Map<String, Value>) -> bool {
        if let (Some(min), Some(level)) = (self.min_level, level_of(record)) {
            if level < min {
                return false;
            }
        }
        if !self.loggers.is_empty() {
            let logger = text_of(record, &["logger", "log.logger"]).unwrap_or_default();
            if !self.loggers.iter().any(|g| g.matches(&logger)) {
                return false;
            }
        }
        self.wheres
            .iter()
            .all(|(key, want)| lookup(record, key).is_some_and(|v| value_text(v) == want.as_str()))
    }
}

/// The record's level: `levelname` (our profile, Python), or `log.level`
/// (ECS), in any case, `warn`/`fatal` included.
pub(crate) fn level_of(record: &Map<String, Value>) -> Option<Level> {
    text_of(record, &["levelname", "log.level"])?.parse().ok()
}

/// The first of `keys` the record has, as text.
pub(crate) fn text_of(record: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| lookup(record, k))
        .map(|v| value_text(v).into_owned())
}

/// `key` at the top level, else as a dotted path into nested objects
/// (`log.level` in `{"log":{"level":"info"}}`).
pub(crate) fn lookup<'a>(record: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(v) = record.get(key) {
        return Some(v);
    }
    let (first, rest) = key.split_once('.')?;
    match record.get(first)? {
        Value::Object(inner) => lookup(inner, rest),
        _ => None,
    }
}

/// A JSON value as `--where` compares it: a string's text, anything else
/// as compact JSON (`42`, `true`, `null`, `[1,2]`).
pub(crate) fn value_text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => s.as_str().into(),
        other => other.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn globs() {
        let g = Glob::new("app::db*");
        assert!(g.matches("app::db"));
        assert!(g.matches("app::db::pool"));
        assert!(g.matches("app.db.pool"));
        assert!(g.matches("app::dbx"));
        assert!(!g.matches("app::web"));
        assert!(!g.matches("xapp::db"));
        let g = Glob::new("app.*");
        assert!(g.matches("app.db"));
        assert!(g.matches("app::db::pool"));
        assert!(!g.matches("app"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("a?c").matches("abc"));
        assert!(!Glob::new("a?c").matches("ac"));
        assert!(Glob::new("*.db.*").matches("x.y.db.z"));
        assert!(!Glob::new("*.db.*").matches("x.y.dbz"));
        assert!(Glob::new("exact").matches("exact"));
        assert!(!Glob::new("exact").matches("exactly"));
    }

    #[test]
    fn bindings() {
        assert_eq!(Glob::new("app::db").binding("rk"), "rk.app.db");
        assert_eq!(Glob::new("app::db*").binding("rk"), "rk.app.#");
        assert_eq!(Glob::new("app.*").binding("rk"), "rk.app.#");
        assert_eq!(Glob::new("app::*::sql").binding("rk"), "rk.app.#");
        assert_eq!(Glob::new("*").binding("rk"), "rk.#");
        assert_eq!(Glob::new("a?p.db").binding("rk"), "rk.#");
        assert_eq!(Glob::new("").binding("rk"), "rk.root");
    }

    #[test]
    fn level_filter() {
        let s = Selection {
            min_level: Some(Level::Warning),
            ..Selection::default()
        };
        assert!(!s.matches(&obj(json!({"levelname": "INFO"}))));
        assert!(s.matches(&obj(json!({"levelname": "WARNING"}))));
        assert!(s.matches(&obj(json!({"levelname": "CRITICAL"}))));
        assert!(!s.matches(&obj(json!({"log": {"level": "debug"}}))));
        assert!(s.matches(&obj(json!({"log.level": "error"}))));
        // Unknown or missing levels cannot be compared: kept.
        assert!(s.matches(&obj(json!({"levelname": "NOTICE"}))));
        assert!(s.matches(&obj(json!({"message": "x"}))));
        assert!(s.is_active());
        assert!(!Selection::default().is_active());
    }

    #[test]
    fn logger_and_where_filters() {
        let s = Selection {
            loggers: vec![Glob::new("app::db*"), Glob::new("jobs")],
            wheres: vec![("user".into(), "ann".into()), ("n".into(), "3".into())],
            ..Selection::default()
        };
        assert!(s.matches(&obj(json!({"logger": "app::db", "user": "ann", "n": 3}))));
        assert!(s.matches(&obj(json!({"logger": "jobs", "user": "ann", "n": "3"}))));
        assert!(!s.matches(&obj(json!({"logger": "app::web", "user": "ann", "n": 3}))));
        assert!(!s.matches(&obj(json!({"logger": "jobs", "user": "bob", "n": 3}))));
        assert!(!s.matches(&obj(json!({"logger": "jobs", "user": "ann"}))));
        assert!(!s.matches(&obj(json!({"user": "ann", "n": 3}))));
        let ecs = Selection {
            loggers: vec![Glob::new("app.*")],
            wheres: vec![("service.name".into(), "api".into())],
            ..Selection::default()
        };
        assert!(ecs.matches(&obj(
            json!({"log": {"logger": "app.db"}, "service": {"name": "api"}})
        )));
    }

    #[test]
    fn value_texts() {
        assert_eq!(value_text(&json!("a b")), "a b");
        assert_eq!(value_text(&json!(1.5)), "1.5");
        assert_eq!(value_text(&json!(null)), "null");
        assert_eq!(value_text(&json!(true)), "true");
        assert_eq!(value_text(&json!([1, "x"])), r#"[1,"x"]"#);
    }
}
