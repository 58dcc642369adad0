//! Level filtering: a default level plus `RUST_LOG`-style per-target directives.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};
use crate::record::{Level, DEFAULT_LEVEL};

/// The least severe level that passes, or `None` for `off`.
type Threshold = Option<Level>;

fn parse_threshold(s: &str) -> Result<Threshold, Error> {
    if s.trim().eq_ignore_ascii_case("off") {
        Ok(None)
    } else {
        s.parse().map(Some)
    }
}

/// Which records pass: a default level and per-target overrides, written as
/// `RUST_LOG` directives (`info`, `info,my_app::db=debug,hyper=off`). Unlike
/// `RUST_LOG`, a bare word must be a level (write `my_app=trace` for a target),
/// so a misspelt level is an error instead of a silent filter.
///
/// A directive applies to a target equal to it or below it in the module path
/// (`my_app` covers `my_app::db`, not `my_apple`); the longest match wins.
#[derive(Clone, PartialEq, Eq)]
pub struct Filter {
    default: Threshold,
    /// Sorted longest first so the first match is the most specific.
    directives: Vec<(String, Threshold)>,
    /// The most verbose level any directive lets through: a cheap first check.
    max: Threshold,
}

impl Filter {
    /// A filter that passes `level` and above for every target.
    pub fn new(level: Level) -> Self {
        Filter {
            default: Some(level),
            directives: Vec::new(),
            max: Some(level),
        }
    }

    /// Parses `RUST_LOG`-style directives.
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let mut default = None::<Threshold>;
        let mut directives = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => {
                    // A bare word must be a level. `RUST_LOG` also reads a bare
                    // word as a target, but then a typo (`lvl=infoo`, `warnign`)
                    // silently changes what is shipped: we ask for `target=level`.
                    default = Some(parse_threshold(part).map_err(|_| {
                        Error::new(
                            ErrorKind::InvalidConfig,
                            format!(
                                "unknown level {part:?}: expected trace, debug, info, warning, error, critical or off \
                                 (for a target, write {part}=trace)"
                            ),
                        )
                    })?);
                }
                Some((target, level)) => {
                    let target = target.trim();
                    if !is_target(target) {
                        return Err(Error::new(
                            ErrorKind::InvalidConfig,
                            format!(
                                "invalid filter directive {part:?}: {target:?} is not a target"
                            ),
                        ));
                    }
                    directives.push((target.to_owned(), parse_threshold(level)?));
                }
            }
        }
        let default = match default {
            Some(t) => t,
            None if directives.is_empty() => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("empty level filter {spec:?}"),
                ))
            }
            // Only targets named: everything else keeps the library default.
            None => Some(DEFAULT_LEVEL),
        };
        directives.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        let max = directives
            .iter()
            .map(|(_, t)| *t)
            .chain(std::iter::once(default))
            .flatten()
            .min();
        Ok(Filter {
            default,
            directives,
            max,
        })
    }

    /// Whether a record of `level` from `target` passes.
    #[inline]
    pub fn enabled(&self, target: &str, level: Level) -> bool {
        match self.max {
            Some(max) if level >= max => {}
            _ => return false,
        }
        if self.directives.is_empty() {
            return true; // default == max
        }
        let threshold = self
            .directives
            .iter()
            .find(|(t, _)| target_matches(t, target))
            .map_or(self.default, |(_, th)| *th);
        matches!(threshold, Some(th) if level >= th)
    }

    /// The most verbose level any target lets through (`None`: nothing passes).
    pub fn max_level(&self) -> Option<Level> {
        self.max
    }
}

fn is_target(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
}

/// `prefix` matches `target` when equal or a parent module (`a` matches `a::b`).
/// Python-style dotted logger names (`a.b`) are treated the same way.
#[inline]
pub(crate) fn target_matches(prefix: &str, target: &str) -> bool {
    // Most targets differ from a prefix in its first or last byte: those are
    // told apart here without a memcmp (every record is checked against every
    // ignored target, 13 by default).
    let (p, t) = (prefix.as_bytes(), target.as_bytes());
    if let (Some(first), Some(last)) = (p.first(), p.last()) {
        if p.len() > t.len() || t[0] != *first || t[p.len() - 1] != *last {
            return false;
        }
    }
    match target.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => rest.starts_with("::") || rest.starts_with('.'),
        None => false,
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |t: Threshold| t.map_or("off".to_owned(), |l| l.name().to_ascii_lowercase());
        f.write_str(&name(self.default))?;
        for (target, t) in &self.directives {
            write!(f, ",{target}={}", name(*t))?;
        }
        Ok(())
    }
}

impl FromStr for Filter {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Filter::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_level() {
        let f = Filter::parse("warning").unwrap();
        assert!(f.enabled("x", Level::Error));
        assert!(f.enabled("x", Level::Warning));
        assert!(!f.enabled("x", Level::Info));
    }

    #[test]
    fn directives_longest_match_wins() {
        let f = Filter::parse("info, app::db=debug, app=warn, hyper=off").unwrap();
        assert!(f.enabled("app::db", Level::Debug));
        assert!(f.enabled("app::db::pool", Level::Debug));
        assert!(!f.enabled("app::http", Level::Info));
        assert!(f.enabled("app::http", Level::Warning));
        assert!(!f.enabled("hyper", Level::Error));
        assert!(!f.enabled("hyper::proto", Level::Error));
        assert!(
            f.enabled("hyperx", Level::Info),
            "prefix must stop at a module boundary"
        );
        assert!(!f.enabled("other", Level::Debug));
        assert_eq!(f.max_level(), Some(Level::Debug));
    }

    #[test]
    fn bare_word_must_be_a_level() {
        let e = Filter::parse("my_app").unwrap_err();
        assert!(e.to_string().contains("my_app=trace"), "{e}");
        let f = Filter::parse("my_app=trace").unwrap();
        assert!(f.enabled("my_app", Level::Trace));
        assert!(f.enabled("other", DEFAULT_LEVEL));
        assert!(!f.enabled("other", Level::Trace));
    }

    #[test]
    fn off_and_python_names() {
        assert_eq!(Filter::parse("off").unwrap().max_level(), None);
        assert!(!Filter::parse("OFF").unwrap().enabled("x", Level::Critical));
        assert_eq!("WARNING".parse::<Level>().unwrap(), Level::Warning);
        assert_eq!("critical".parse::<Level>().unwrap(), Level::Critical);
        assert_eq!("Fatal".parse::<Level>().unwrap(), Level::Critical);
    }

    #[test]
    fn dotted_python_logger_names_match() {
        let f = Filter::parse("error,app=debug").unwrap();
        assert!(f.enabled("app.db", Level::Debug));
    }

    #[test]
    fn bad_directives_are_clear_errors() {
        for bad in ["", " , ", "verbose=debug=1", "app=loud", "lots of words"] {
            let e = Filter::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad:?}");
        }
        let e = Filter::parse("app=loud").unwrap_err();
        assert!(e.to_string().contains("loud"), "{e}");
    }

    #[test]
    fn display_round_trips() {
        let f = Filter::parse("info,a::b=debug,c=off").unwrap();
        assert_eq!(Filter::parse(&f.to_string()).unwrap(), f);
    }
}
