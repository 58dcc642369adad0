//! `logcollect send -- COMMAND`: run a command, pass its output through and
//! hand each line to the caller.

use std::io::{self, BufRead as _, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

use anyhow::Context as _;

use crate::CodedError;

/// Lines read but not shipped yet, per command. When the broker is slow the
/// readers wait here, and so does the command's output: a bound, so that a
/// chatty command cannot fill our memory. 1,024 lines is a few hundred KiB.
const LINE_BUFFER: usize = 1024;
/// Exit code when the command exists but cannot be run (shell convention).
const EXIT_CANNOT_RUN: u8 = 126;
/// Exit code when the command is not found (shell convention).
const EXIT_NOT_FOUND: u8 = 127;
/// Added to a signal number for the exit code of a command killed by it
/// (shell convention: 130 for SIGINT).
const SIGNAL_BASE: u8 = 128;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Runs `argv`, with our standard input, copying its standard output and
/// error to ours line by line and calling `ship` with each non-empty line
/// (without its line break). Returns the command's exit code: its status,
/// or 128 + N when signal N killed it.
///
/// Ctrl-C reaches the command (it shares our terminal) and not us: we
/// outlive it to ship its last lines. When our own output is closed, the
/// command's output is still read and shipped.
pub(crate) fn run(argv: &[String], mut ship: impl FnMut(Stream, String)) -> anyhow::Result<u8> {
    let Some((program, args)) = argv.split_first() else {
        anyhow::bail!("no COMMAND given");
    };
    let _ctrl_c = ignore_ctrl_c()?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| cannot_spawn(program, &e))?;
    let (tx, rx) = mpsc::sync_channel(LINE_BUFFER);
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(reader(out, Stream::Stdout, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(reader(err, Stream::Stderr, tx.clone()));
    }
    drop(tx);
    // Ends when both readers have hit the end of their pipe.
    for (stream, line) in rx {
        ship(stream, line);
    }
    for r in readers {
        // A reader only stops early by panicking, which has been reported.
        let _ = r.join();
    }
    let status = child.wait().context("cannot wait for COMMAND")?;
    Ok(exit_code(status))
}

/// A thread copying `pipe` to our matching stream and sending its lines.
fn reader(
    pipe: impl Read + Send + 'static,
    stream: Stream,
    tx: SyncSender<(Stream, String)>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut input = BufReader::new(pipe);
        let mut pass_through = true;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if pass_through {
                let copied = match stream {
                    Stream::Stdout => copy(&mut io::stdout().lock(), &buf),
                    Stream::Stderr => copy(&mut io::stderr().lock(), &buf),
                };
                // Nobody reads our copy any more: ship the lines regardless.
                pass_through = copied.is_ok();
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            if tx.send((stream, line.to_owned())).is_err() {
                return;
            }
        }
    })
}

fn copy(out: &mut impl io::Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(bytes)?;
    out.flush()
}

fn cannot_spawn(program: &str, e: &io::Error) -> anyhow::Error {
    let code = if e.kind() == io::ErrorKind::NotFound {
        EXIT_NOT_FOUND
    } else {
        EXIT_CANNOT_RUN
    };
    CodedError {
        code,
        message: format!("cannot run {program:?}: {e}"),
    }
    .into()
}

/// The shell's exit code for `status`.
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // Exit statuses are 0 to 255 on Unix; anything else is a failure.
        return u8::try_from(code).unwrap_or(crate::EXIT_FAILURE);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return SIGNAL_BASE.saturating_add(u8::try_from(signal).unwrap_or(0));
        }
    }
    crate::EXIT_FAILURE
}

/// While the returned guard lives and beyond, Ctrl-C (SIGINT) no longer
/// kills us: the terminal sends it to the command too, which decides, and
/// we stay to ship what it printed. The command gets the default action
/// back (exec resets caught signals).
#[cfg(unix)]
fn ignore_ctrl_c() -> anyhow::Result<impl Sized> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = crate::runtime()?;
    let listener = {
        let _inside = runtime.enter();
        signal(SignalKind::interrupt()).context("cannot catch Ctrl-C")?
    };
    Ok((runtime, listener))
}

#[cfg(not(unix))]
fn ignore_ctrl_c() -> anyhow::Result<impl Sized> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> (u8, Vec<(Stream, String)>) {
        let mut lines = Vec::new();
        let argv = ["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let code = run(&argv, |s, l| lines.push((s, l))).unwrap();
        (code, lines)
    }

    #[test]
    fn lines_and_status() {
        let (code, lines) = sh("echo out; echo; echo err >&2; printf 'last'; exit 3");
        assert_eq!(code, 3);
        let mut out: Vec<_> = lines
            .iter()
            .filter(|(s, _)| *s == Stream::Stdout)
            .map(|(_, l)| l.as_str())
            .collect();
        out.sort_unstable();
        assert_eq!(out, ["last", "out"]);
        assert!(lines.contains(&(Stream::Stderr, "err".to_owned())));
        assert_eq!(lines.len(), 3, "the empty line is not shipped: {lines:?}");
    }

    #[test]
    fn killed_by_a_signal() {
        let (code, _) = sh("kill -TERM $$");
        assert_eq!(code, 128 + 15);
    }

    #[test]
    fn missing_command() {
        let argv = ["logcollect-no-such-command-xyz".to_owned()];
        let e = run(&argv, |_, _| {}).unwrap_err();
        let coded = e.downcast_ref::<CodedError>().unwrap();
        assert_eq!(coded.code, 127);
        assert!(
            coded.message.contains("logcollect-no-such-command-xyz"),
            "{}",
            coded.message
        );
    }
}
