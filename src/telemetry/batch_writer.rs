//! The log files' writer: formatted lines are appended to a shared buffer, and one
//! background thread writes whatever gathered, a few milliseconds' worth at a time, in one
//! `write`. Owns the buffering, the writer thread and its shutdown; not the line format
//! (`json_lines`) nor which file (the rolling appender, the audit file).
//!
//! # Why not tracing-appender's `non_blocking`
//! `non_blocking` sends every line through a channel to its worker thread, which wakes for
//! each line and writes it with its own `write`: under load, three lines per DPoP token
//! (the request, the issue and its audit copy) meant tens of thousands of thread wake-ups
//! and `write`s a second, about 9% of a token's server CPU in the profile
//! (docs/performance.md). Here a line costs an uncontended lock and a copy; the thread is
//! woken only when a line lands in an empty buffer, then waits [`GATHER`] for more, so
//! under load it wakes at most a couple of hundred times a second and never when idle.
//!
//! # What can be lost
//! As with `non_blocking`: what is buffered when the process is killed (at most
//! [`GATHER`] plus one write's worth), and lines beyond [`MAX_BUFFERED`] while the file
//! cannot keep up. Dropped lines are counted and reported by a line of their own
//! (`authority.log.dropped`) in the next batch. Dropping the [`BatchGuard`] writes
//! everything buffered before it returns.
//!
//! # Writeback
//! The log files are never synced (a lost line is not a lost token). Left alone, Linux
//! lets their dirty pages gather for 30 s (`vm.dirty_expire_centisecs`) and then writes
//! them all at once: at 5,000 tokens/s that is some 80 MB in one burst, and the store's
//! journal `fdatasync`, which every `/token` answer waits for, waits behind it for
//! 25–50 ms (docs/performance.md, session 14). So every [`WRITEBACK_EVERY`] bytes the
//! thread asks the kernel to start writing the files out now ([`Writeback`]), without
//! waiting for it: the same bytes reach the disk in small steady writes instead.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// How long the writer thread waits, after being woken, for more lines to join the batch.
pub const GATHER: Duration = Duration::from_millis(5);
/// Lines beyond this many buffered bytes are dropped (and counted) until the thread has
/// written the buffer: a stalled disk must not grow the process without bound.
pub const MAX_BUFFERED: usize = 16 << 20;
/// After this many bytes written, the thread starts the files' writeback (module doc).
pub const WRITEBACK_EVERY: usize = 1 << 20;

/// The files whose writeback the writer thread starts: every file in `dir` whose name
/// begins with `prefix` (the rolling appender's current file, and the one it has just
/// rotated away from, whatever their dates).
pub struct Writeback {
    pub dir: PathBuf,
    pub prefix: String,
}

impl Writeback {
    /// Starts writing the files' dirty pages to disk, without waiting, and drops their
    /// pages already on disk from the page cache (nothing reads a log back):
    /// `posix_fadvise(POSIX_FADV_DONTNEED)`, which on Linux begins writeback of the range
    /// (`WB_SYNC_NONE`) before it drops the clean pages. Errors are ignored: this only
    /// smooths the disk's load.
    pub fn start(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(self.prefix.as_bytes())
            {
                continue;
            }
            if let Ok(file) = std::fs::File::open(entry.path()) {
                let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
            }
        }
    }
}

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    dropped: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handle the tracing layers write through (cheap to clone).
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Keeps the writer thread alive; dropping it writes what is buffered and ends the thread.
pub struct BatchGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts a writer thread named `name` over `sink`.
pub fn batching<W: Write + Send + 'static>(
    sink: W,
    name: &str,
) -> io::Result<(BatchWriter, BatchGuard)> {
    batching_with_writeback(sink, name, None)
}

/// [`batching`], starting the writeback of `writeback`'s files as it writes (module doc).
pub fn batching_with_writeback<W: Write + Send + 'static>(
    sink: W,
    name: &str,
    writeback: Option<Writeback>,
) -> io::Result<(BatchWriter, BatchGuard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || write_batches(&shared, sink, writeback))?
    };
    Ok((
        BatchWriter {
            shared: shared.clone(),
        },
        BatchGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The writer thread: sleeps while the buffer is empty, then gathers and writes.
fn write_batches<W: Write>(shared: &Shared, mut sink: W, writeback: Option<Writeback>) {
    let mut spare = Vec::new();
    let mut since_writeback = 0;
    loop {
        let mut state = shared.lock();
        while state.buffer.is_empty() && state.dropped == 0 && !state.closed {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !state.closed {
            // Let the lines of the next few milliseconds join this write.
            drop(state);
            std::thread::sleep(GATHER);
            state = shared.lock();
        }
        let closed = state.closed;
        let dropped = std::mem::take(&mut state.dropped);
        let mut batch = std::mem::replace(&mut state.buffer, std::mem::take(&mut spare));
        drop(state);
        if dropped > 0 {
            batch.extend_from_slice(dropped_line(dropped).as_bytes());
        }
        if !batch.is_empty() {
            // A failing file (disk full) loses this batch, as `non_blocking` would lose
            // its lines; logging must never stop the server.
            let _ = sink.write_all(&batch);
            let _ = sink.flush();
            since_writeback += batch.len();
            if since_writeback >= WRITEBACK_EVERY {
                since_writeback = 0;
                if let Some(writeback) = &writeback {
                    writeback.start();
                }
            }
        }
        batch.clear();
        spare = batch;
        if closed {
            let state = shared.lock();
            if state.buffer.is_empty() && state.dropped == 0 {
                return;
            }
        }
    }
}

/// The line that reports lines dropped because the buffer was full.
fn dropped_line(count: u64) -> String {
    let mut line = String::from("{\"timestamp\":\"");
    super::json_lines::push_timestamp(&mut line, time::OffsetDateTime::now_utc());
    line.push_str(&format!(
        "\",\"level\":\"WARN\",\"event\":\"{}\",\"count\":{count},\
         \"message\":\"log lines were dropped: the log file could not keep up\"}}\n",
        super::events::LOG_DROPPED
    ));
    line
}

impl Write for &BatchWriter {
    /// Appends `bytes` (one whole formatted line: tracing-subscriber writes each event
    /// with one `write_all`) to the buffer; wakes the thread if the buffer was empty.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.lock();
        if state.buffer.len() + bytes.len() > MAX_BUFFERED {
            state.dropped += 1;
            return Ok(bytes.len());
        }
        let was_empty = state.buffer.is_empty();
        state.buffer.extend_from_slice(bytes);
        drop(state);
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = &'a BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records each `write_all` batch.
    #[derive(Clone, Default)]
    struct Batches(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Batches {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_written_together_reach_the_file_in_few_writes_and_in_order() {
        let sink = Batches::default();
        let (writer, guard) = batching(sink.clone(), "test-log-writer").unwrap();
        for i in 0..1000 {
            (&writer)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let batches = sink.0.lock().unwrap();
        let text: Vec<u8> = batches.concat();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(text).unwrap(), expected);
        assert!(
            batches.len() < 20,
            "1000 lines took {} writes",
            batches.len()
        );
    }

    #[test]
    fn a_line_reaches_the_file_without_a_shutdown() {
        let sink = Batches::default();
        let (writer, _guard) = batching(sink.clone(), "test-log-writer").unwrap();
        (&writer).write_all(b"one line\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line never arrived"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.0.lock().unwrap().concat(), b"one line\n");
    }

    /// A sink that blocks until released, so the buffer fills.
    struct Stalled(Arc<(Mutex<bool>, Condvar)>, Batches);

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (released, cv) = &*self.0;
            let mut go = released.lock().unwrap();
            while !*go {
                go = cv.wait(go).unwrap();
            }
            self.1.write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_file_drops_lines_beyond_the_cap_and_says_how_many() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Batches::default();
        let (writer, guard) =
            batching(Stalled(gate.clone(), sink.clone()), "test-log-writer").unwrap();
        (&writer).write_all(b"first\n").unwrap();
        // Let the thread take "first" and block in the stalled write.
        std::thread::sleep(GATHER * 4);
        let line = vec![b'x'; 1 << 20];
        for _ in 0..20 {
            (&writer).write_all(&line).unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = sink.0.lock().unwrap().concat();
        let dropped = 20 - (MAX_BUFFERED / line.len());
        assert!(text.starts_with(b"first\n"));
        let report = format!("\"event\":\"authority.log.dropped\",\"count\":{dropped},");
        assert!(
            String::from_utf8_lossy(&text).contains(&report),
            "no report of {dropped} dropped lines"
        );
        // Every line kept whole: "first", the lines that fitted, the report.
        let kept = MAX_BUFFERED / line.len();
        assert_eq!(
            text.len(),
            6 + kept * line.len() + dropped_line(dropped as u64).len()
        );
    }
}
