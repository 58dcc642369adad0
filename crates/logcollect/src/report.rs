//! Internal problems go to stderr with a `[logcollect]` prefix, rate-limited
//! per cause (DESIGN §4). Never stdout, never through `log`/`tracing`.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The same cause is printed at most once per this interval; repeats in
/// between are counted and mentioned with the next print.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct Reporter {
    last: Mutex<HashMap<String, (Instant, u64, String)>>,
    /// Causes already said by [`once`](Self::once), until cleared.
    said: Mutex<std::collections::HashSet<String>>,
    /// Tests that provoke thousands of problems keep stderr readable.
    quiet: bool,
}

impl Reporter {
    /// Prints `msg` unless the same `cause` printed the same text within
    /// [`REPORT_INTERVAL`]. A new text for a cause prints at once.
    pub(crate) fn report(&self, cause: &str, msg: &str) {
        let Ok(mut map) = self.last.lock() else {
            return;
        };
        let now = Instant::now();
        let line = match map.get_mut(cause) {
            Some((at, skipped, text))
                if text == msg && now.duration_since(*at) < REPORT_INTERVAL =>
            {
                *skipped += 1;
                return;
            }
            Some((at, skipped, text)) => {
                let line = if *skipped > 0 && text == msg {
                    format!("{msg} (repeated {} times)", *skipped + 1)
                } else {
                    msg.to_owned()
                };
                *at = now;
                *skipped = 0;
                *text = msg.to_owned();
                line
            }
            None => {
                map.insert(cause.to_owned(), (now, 0, msg.to_owned()));
                msg.to_owned()
            }
        };
        drop(map);
        self.print(&line);
    }

    /// Prints `msg` the first time `cause` happens, and not again until the
    /// cause is cleared: for a state that lasts (a refusal, a full disk),
    /// which one clear line describes better than a line every interval.
    pub(crate) fn once(&self, cause: &str, msg: &str) {
        let first = self
            .said
            .lock()
            .map(|mut said| said.insert(cause.to_owned()))
            .unwrap_or(false);
        if first {
            self.print(msg);
        }
    }

    /// Forgets a cause (it was fixed), so a recurrence prints at once.
    pub(crate) fn clear(&self, cause: &str) {
        if let Ok(mut map) = self.last.lock() {
            map.remove(cause);
        }
        if let Ok(mut said) = self.said.lock() {
            said.remove(cause);
        }
    }

    /// A reporter that prints nothing (simulation tests).
    #[cfg(test)]
    pub(crate) fn quiet() -> Reporter {
        Reporter {
            quiet: true,
            ..Reporter::default()
        }
    }

    fn print(&self, line: &str) {
        if !self.quiet {
            eprint_line(line);
        }
    }
}

/// Writes one `[logcollect] …` line to stderr, ignoring a closed stderr.
///
/// The line goes out in one `write` on a duplicate of the stderr descriptor,
/// not through `std::io::stderr()`'s lock: a process forked while another
/// thread held that lock (Celery's and gunicorn's workers fork) would block
/// on it for ever in the child, and our shipper thread with it.
pub(crate) fn eprint_line(msg: &str) {
    let line = format!("[logcollect] {msg}\n");
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            let _ = std::fs::File::from(fd).write_all(line.as_bytes());
            return;
        }
    }
    let _ = std::io::stderr().write_all(line.as_bytes());
}
