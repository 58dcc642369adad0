//! Redaction: a field whose name matches a configured pattern, or whose
//! string value does, is written as `"[redacted]"`, on the calling thread
//! while the record is encoded, so the secret never reaches the queue, the
//! spool or the broker.

use super::json::push_json_content;

/// What a redacted value is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// A glob: `*` matches any run of bytes; the parts between stars are kept
/// in the form they are compared in.
#[derive(Debug, Clone)]
struct Glob {
    parts: Vec<Vec<u8>>,
}

impl Glob {
    fn new(pattern: &str, form: impl Fn(&str) -> Vec<u8>) -> Glob {
        Glob {
            parts: pattern.split('*').map(form).collect(),
        }
    }

    fn matches(&self, text: &[u8], eq: impl Fn(&[u8], &[u8]) -> bool) -> bool {
        let n = self.parts.len();
        let first = &self.parts[0];
        if n == 1 {
            return text.len() == first.len() && eq(text, first);
        }
        let last = &self.parts[n - 1];
        if text.len() < first.len() + last.len()
            || !eq(&text[..first.len()], first)
            || !eq(&text[text.len() - last.len()..], last)
        {
            return false;
        }
        let mut rest = &text[first.len()..text.len() - last.len()];
        for part in &self.parts[1..n - 1] {
            match (0..=rest.len().saturating_sub(part.len()))
                .find(|&i| rest.len() >= part.len() && eq(&rest[i..i + part.len()], part))
            {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        true
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a == b
}

/// The configured patterns, compiled once per encoder.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    /// Field-name globs, compared without regard to ASCII case.
    fields: FieldGlobs,
    /// Value globs over a string value's JSON text (between the quotes),
    /// their literal parts escaped the same way: escaping maps each
    /// character on its own, so a value matches exactly when its escaped
    /// text matches (a literal part that could end inside an escape, such
    /// as a lone `n` after a newline, may only redact more, never less).
    values: Vec<Glob>,
}

/// Field-name globs grouped by the last byte (ASCII lowercase) a name
/// must end with to match them: every field of every record is checked, and
/// with the default patterns most names end with a byte no pattern ends
/// with, so they are cleared by one lookup instead of a test per pattern.
#[derive(Debug, Clone, Default)]
struct FieldGlobs {
    /// Globs whose pattern ends with a literal byte, indexed by that byte
    /// lowercased (empty until the first pattern is added).
    by_last: Vec<Vec<Glob>>,
    /// Globs that end with `*` (or are empty): any name may match them.
    any_last: Vec<Glob>,
}

impl FieldGlobs {
    fn new(patterns: &[String]) -> FieldGlobs {
        let mut globs = FieldGlobs::default();
        for p in patterns {
            let glob = Glob::new(p, |s| s.as_bytes().to_vec());
            match p.as_bytes().last() {
                Some(&b) if b != b'*' => {
                    if globs.by_last.is_empty() {
                        globs.by_last = vec![Vec::new(); 256];
                    }
                    globs.by_last[usize::from(b.to_ascii_lowercase())].push(glob);
                }
                _ => globs.any_last.push(glob),
            }
        }
        globs
    }

    fn is_empty(&self) -> bool {
        self.by_last.is_empty() && self.any_last.is_empty()
    }

    /// Whether some glob matches `name`, ASCII case aside.
    fn matches(&self, name: &[u8]) -> bool {
        let ci = |a: &[u8], b: &[u8]| a.eq_ignore_ascii_case(b);
        let same_end = match (name.last(), self.by_last.is_empty()) {
            (Some(&b), false) => &self.by_last[usize::from(b.to_ascii_lowercase())][..],
            _ => &[],
        };
        same_end
            .iter()
            .chain(&self.any_last)
            .any(|g| g.matches(name, ci))
    }
}

impl Redactor {
    pub(crate) fn new(fields: &[String], values: &[String]) -> Redactor {
        Redactor {
            fields: FieldGlobs::new(fields),
            values: values
                .iter()
                .map(|p| {
                    Glob::new(p, |s| {
                        let mut v = Vec::with_capacity(s.len());
                        push_json_content(&mut v, s);
                        v
                    })
                })
                .collect(),
        }
    }

    /// Whether the value of field `key` is redacted: the whole key or its
    /// last `.`-separated part matches a field pattern.
    pub(crate) fn field(&self, key: &str) -> bool {
        if self.fields.is_empty() {
            return false;
        }
        let key = key.as_bytes();
        if self.fields.matches(key) {
            return true;
        }
        match key.iter().rposition(|&b| b == b'.') {
            Some(dot) => self.fields.matches(&key[dot + 1..]),
            None => false,
        }
    }

    /// Whether a value written as JSON (`json`) is redacted: a string whose
    /// text matches a value pattern.
    pub(crate) fn value(&self, json: &[u8]) -> bool {
        if self.values.is_empty() || json.len() < 2 || json[0] != b'"' {
            return false;
        }
        let text = &json[1..json.len() - 1];
        self.values.iter().any(|g| g.matches(text, same))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(fields: &[&str], values: &[&str]) -> Redactor {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Redactor::new(&own(fields), &own(values))
    }

    #[test]
    fn field_names_exact_glob_any_case_and_last_part() {
        let red = r(&["password", "*_token", "api*key", "x*y*z"], &[]);
        for yes in [
            "password",
            "PassWord",
            "csrf_token",
            "ACCESS_TOKEN",
            "apikey",
            "api_key",
            "api-secret-key",
            "http.request.password",
            "xyz",
            "x1y2z",
        ] {
            assert!(red.field(yes), "{yes}");
        }
        for no in [
            "passwords",
            "token",
            "my_password_hint",
            "x_z",
            "",
            "http.password.len",
        ] {
            assert!(!red.field(no), "{no}");
        }
    }

    #[test]
    fn values_whole_string_case_sensitive_escaped() {
        let red = r(&[], &["Bearer *", "*\"secret\"*"]);
        assert!(red.value(br#""Bearer abc.def""#));
        assert!(!red.value(br#""bearer abc""#));
        assert!(!red.value(br#""the Bearer abc""#));
        assert!(red.value(br#""a \"secret\" here""#));
        assert!(!red.value(b"42"), "only strings");
        assert!(
            !red.value(br#""Bearer""#),
            "the space is part of the pattern"
        );
    }

    #[test]
    fn off_when_empty() {
        let red = r(&[], &[]);
        assert!(!red.field("password"));
        assert!(!red.value(br#""Bearer x""#));
    }

    mod property {
        use proptest::prelude::*;

        use crate::config::{DEFAULT_REDACT_FIELDS, DEFAULT_REDACT_VALUES};
        use crate::encode::{Encoder, EncoderSettings, Profile, Stamp};
        use crate::record::{FieldValue, Level, Record};

        fn encoder(profile: Profile) -> Encoder {
            let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
            Encoder::new(&EncoderSettings {
                host: "vm".to_owned(),
                tags: Vec::new(),
                type_name: "Logstash".to_owned(),
                activity_identity: Vec::new(),
                routing_prefix: "logstash".to_owned(),
                max_record_bytes: 1024 * 1024,
                process_id: 1,
                profile,
                ecs_service_key: "application".to_owned(),
                ecs_extra_prefix: "extra".to_owned(),
                redact_fields: own(DEFAULT_REDACT_FIELDS),
                redact_values: own(DEFAULT_REDACT_VALUES),
            })
        }

        /// A secret-bearing key: a default name or one matching a default
        /// glob, in any case, maybe under a dotted prefix.
        fn secret_key() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec![
                    "password",
                    "passwd",
                    "db_password",
                    "secret",
                    "client_secret",
                    "token",
                    "access_token",
                    "api_key",
                    "apikey",
                    "authorization",
                    "cookie",
                    "private_key",
                    "credentials",
                ]),
                any::<bool>(),
                prop::option::of("[a-z]{1,6}"),
            )
                .prop_map(|(name, upper, prefix)| {
                    let name = if upper {
                        name.to_ascii_uppercase()
                    } else {
                        name.to_owned()
                    };
                    match prefix {
                        Some(p) => format!("{p}.{name}"),
                        None => name,
                    }
                })
        }

        proptest! {
            #[test]
            fn no_secret_reaches_the_output(
                secrets in prop::collection::vec((secret_key(), 0u32..1_000_000), 1..6),
                bearer in "[A-Za-z0-9._~+/-]{1,40}",
                plain in prop::collection::vec(("[a-z_]{1,10}", "[a-z ]{0,20}"), 0..6),
                ecs in any::<bool>(),
            ) {
                let enc = encoder(if ecs { Profile::Ecs } else { Profile::Logcollect });
                let mut r = Record::new(Level::Info, "app", "m");
                for (i, (k, n)) in secrets.iter().enumerate() {
                    let marker = format!("S3CR3T{n}X");
                    // Secrets as strings, numbers and nested values.
                    let v = match i % 3 {
                        0 => FieldValue::Str(marker),
                        1 => FieldValue::U64(u64::from(*n) + 1_000_000_007),
                        _ => FieldValue::Array(vec![FieldValue::Str(marker)]),
                    };
                    r = r.field(k.clone(), v);
                }
                r = r.field("header", format!("Bearer {bearer}"));
                for (k, v) in &plain {
                    r = r.field(k.clone(), v.as_str());
                }
                let stamp = Stamp { micros: 1, id: uuid::Uuid::from_u128(1) };
                let out = enc.encode(&r, stamp).expect("not re-entrant");
                let text = String::from_utf8(out.body).expect("UTF-8");
                for (_, n) in &secrets {
                    prop_assert!(!text.contains(&format!("S3CR3T{n}X")), "{text}");
                    prop_assert!(!text.contains(&(u64::from(*n) + 1_000_000_007).to_string()), "{text}");
                }
                prop_assert!(!text.contains(&format!("Bearer {bearer}")), "{text}");
                prop_assert!(text.contains("[redacted]"));
                prop_assert!(enc.redacted() >= secrets.len() as u64);
            }
        }
    }
}
