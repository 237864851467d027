//! Standard output and standard error for the command line, without the panic.
//!
//! `println!` panics when the reader of stdout has gone away ("failed printing to stdout:
//! Broken pipe", e.g. `sealkit ca list --json | head -1`). Rust starts every program with
//! SIGPIPE ignored, so such a write fails with `EPIPE` instead of killing the process. We
//! keep it that way rather than restore `SIG_DFL`: that needs unsafe code, and it would let a
//! `writev` on a socket kill `serve`, `guard` or a client command without a word (std sends
//! with `MSG_NOSIGNAL` only in `TcpStream::write`; the vectored writes hyper makes through
//! mio, and writes on Unix sockets, do not).
//!
//! So every line the CLI prints goes through here ([`outln!`], [`out!`], [`errln!`],
//! [`Stdout`]). When the reader has gone away the rest of the output is dropped and the
//! command finishes what it was doing — a mutating command (`bundle import`, `ca revoke`) is
//! never cut in half by `| head` — and exits with its own status: 0 when it succeeded
//! (ripgrep's choice, and what a `set -o pipefail` script expects of a reader that stops
//! early; the exit table in `cli::exit` says so). Any other write error (a full disk behind
//! `>`) is kept, and [`finish`] hands it to `cli::run`, which reports it in one line and
//! exits [`super::exit::COULD_NOT_RUN`]: output that was lost is never a silent success.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The reader of stdout has gone away: further output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// The first write error other than a closed reader (reported at the end by `cli::run`).
static STDOUT_FAILED: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// `println!` for the CLI: never panics (see the module documentation).
macro_rules! outln {
    () => {
        $crate::cli::output::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the CLI: never panics.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::print(format_args!($($arg)*))
    };
}

/// `eprintln!` for the CLI: a closed or broken stderr loses the line instead of panicking
/// (there is nowhere left to report it).
macro_rules! errln {
    () => {
        $crate::cli::output::eprint(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::eprint(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout; a closed reader or an error is noted, never a panic.
pub fn print(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let result = std::io::stdout().lock().write_fmt(args);
    note(result);
}

/// Writes to stderr, ignoring failure.
pub fn eprint(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Stdout as an `io::Write` for bytes (a resource's answer): the same rules as [`print`],
/// so its writes never fail.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !STDOUT_CLOSED.load(Ordering::Relaxed) {
            note(std::io::stdout().lock().write_all(buf));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !STDOUT_CLOSED.load(Ordering::Relaxed) {
            note(std::io::stdout().lock().flush());
        }
        Ok(())
    }
}

fn note(result: std::io::Result<()>) {
    let Err(error) = result else { return };
    // Stop writing after any failure: a second error says nothing new.
    STDOUT_CLOSED.store(true, Ordering::Relaxed);
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        return;
    }
    if let Ok(mut failed) = STDOUT_FAILED.lock() {
        failed.get_or_insert(error);
    }
}

/// Flushes stdout and returns the write error that lost output, if any (a reader that went
/// away is not one).
pub fn finish() -> Option<std::io::Error> {
    Stdout.flush().ok()?;
    STDOUT_FAILED.lock().ok()?.take()
}
