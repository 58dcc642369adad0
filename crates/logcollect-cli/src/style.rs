//! Colour on the terminal: when to use it, and the ANSI codes.

use std::io::IsTerminal as _;

use clap::ValueEnum;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    /// Colour when standard output is a terminal and `NO_COLOR` is not set.
    Auto,
    /// Always colour, even into a pipe or with `NO_COLOR`.
    Always,
    /// Never colour.
    Never,
}

impl ColorChoice {
    /// `auto` looks at standard output and at `NO_COLOR`, which counts when
    /// it is set to anything but the empty string (<https://no-color.org>).
    pub(crate) fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
                !no_color && std::io::stdout().is_terminal()
            }
        }
    }
}

/// One SGR sequence, e.g. `"1;31"` for bold red.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paint(&'static str);

pub(crate) const DIM: Paint = Paint("2");
pub(crate) const BOLD: Paint = Paint("1");
pub(crate) const RED: Paint = Paint("31");
pub(crate) const BOLD_RED: Paint = Paint("1;31");
pub(crate) const GREEN: Paint = Paint("32");
pub(crate) const YELLOW: Paint = Paint("33");
pub(crate) const BLUE: Paint = Paint("34");
pub(crate) const CYAN: Paint = Paint("36");

/// Paints text, or leaves it alone when colour is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    on: bool,
}

impl Style {
    pub(crate) fn new(on: bool) -> Style {
        Style { on }
    }

    /// `text` in `paint`, reset after it.
    pub(crate) fn paint(self, paint: Paint, text: &str) -> String {
        if self.on && !text.is_empty() {
            format!("\x1b[{}m{text}\x1b[0m", paint.0)
        } else {
            text.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_only_when_on() {
        assert_eq!(Style::new(false).paint(RED, "x"), "x");
        assert_eq!(Style::new(true).paint(RED, "x"), "\x1b[31mx\x1b[0m");
        assert_eq!(Style::new(true).paint(BOLD_RED, ""), "");
    }

    #[test]
    fn explicit_choices() {
        assert!(ColorChoice::Always.enabled());
        assert!(!ColorChoice::Never.enabled());
    }
}
