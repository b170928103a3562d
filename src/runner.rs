//! Runs one step of a pipeline run as a child process and streams its output into the run's log.
//!
//! The scheduler calls [`run_step`] once per step, in order, with the run's shared [`RunLog`].
//!
//! Invariants:
//! - Every step runs in its own process group (pgid = pid of the child). A step is terminal only
//!   once that group is empty (or after a bounded wait, with a warning): leftovers of a step never
//!   outlive it, whatever way it ended.
//! - The end of a step is the exit of its child, not EOF on its pipes: a background grandchild
//!   holding stdout open does not keep the step alive (it is killed with the group).
//! - Timeout, run deadline and stop token all terminate the group the same way: SIGTERM, then
//!   SIGKILL once the grace period passes without the group being gone.
//! - Memory stays bounded whatever a step prints: lines are capped at [`MAX_LINE_BYTES`], the log
//!   file at its byte cap, live followers at a fixed backlog; the pipes are always drained, so a
//!   child never blocks on a full pipe.
//! - Known secrets are redacted before a line is written or broadcast.
//!
//! Why this module does not use `tokio_process_stream::ProcessChunkStream`: its stream yields the
//! exit status only after both pipes reached EOF, so a background grandchild holding stdout would
//! keep the step alive, and it panics (`unwrap`) on a pipe read error. A small pump on
//! `tokio::process` (two capped, lossy line framers merged) waits for the child and reads the
//! pipes concurrently instead.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::broadcast;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

/// Longest line written to the log, in bytes; a longer line is written in pieces of this size.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Secrets shorter than this many characters are not redacted: redacting every `a` or `42`
/// would make the log unreadable while protecting nothing.
pub const MIN_SECRET_CHARS: usize = 4;

/// How many lines a live follower may lag behind before it starts losing lines.
pub const FOLLOWER_BACKLOG: usize = 256;

const REDACTED: &str = "[REDACTED]";
const READ_CHUNK: usize = 64 * 1024;
const WRITE_BUFFER: usize = 64 * 1024;
/// Longest time buffered step output waits before it reaches the log file.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Longest time spent reading output that is left in the pipes once the group is gone.
const DRAIN_LIMIT: Duration = Duration::from_millis(200);
/// Longest wait for a SIGKILLed group to disappear.
const GROUP_GONE_LIMIT: Duration = Duration::from_secs(5);
const GROUP_POLL: Duration = Duration::from_millis(10);
const TIMESTAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// What a step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepCommand {
    /// A script run as `/bin/sh -c <script>`.
    Shell(String),
    /// A program and its arguments, executed directly without a shell; `argv[0]` is looked up
    /// in the `PATH` of the step's environment.
    Argv(Vec<String>),
}

impl StepCommand {
    fn program(&self) -> &str {
        match self {
            Self::Shell(_) => "/bin/sh",
            Self::Argv(argv) => argv.first().map_or("", String::as_str),
        }
    }

    /// A description for the log that never shows the script or the arguments, which may
    /// carry secrets.
    fn describe(&self) -> String {
        match self {
            Self::Shell(script) => format!("sh -c <script of {} bytes>", script.len()),
            Self::Argv(argv) => format!(
                "{} with {} arguments",
                self.program(),
                argv.len().saturating_sub(1)
            ),
        }
    }
}

/// One step to run. Deliberately not `Debug`: its script and environment may carry secrets.
#[derive(Clone)]
pub struct StepSpec {
    /// The step's name, as shown in the log.
    pub name: String,
    /// What to run.
    pub command: StepCommand,
    /// The working directory; it must exist.
    pub dir: PathBuf,
    /// The complete environment of the child: nothing of hookd's own environment is inherited.
    pub env: Vec<(String, String)>,
    /// The step's own time limit.
    pub timeout: Option<Duration>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEnd {
    /// The child exited with this code.
    Exited(i32),
    /// The child was killed by this signal (not sent by hookd).
    Signaled(i32),
    /// The step timeout or the run deadline passed; the process group was terminated.
    TimedOut,
    /// The stop token fired; the process group was terminated.
    Stopped,
}

/// The result of a step that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// How the step ended.
    pub end: StepEnd,
    /// When the child was started.
    pub started_at: OffsetDateTime,
    /// When the step became terminal: its process group gone and its output logged.
    pub finished_at: OffsetDateTime,
    /// The step's process group id (= the pid of its child); the group is gone by now.
    pub pgid: i32,
}

impl StepOutcome {
    /// The exit code, if the child exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self.end {
            StepEnd::Exited(code) => Some(code),
            _ => None,
        }
    }

    /// Whether the child exited with code 0.
    pub fn succeeded(&self) -> bool {
        self.end == StepEnd::Exited(0)
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The run log could not be created, opened or inspected.
    #[error("cannot open run log {}", .path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The step's working directory is missing or not a directory.
    #[error("working directory {} of step {step} is not usable", .dir.display())]
    WorkDir {
        /// The step.
        step: String,
        /// The working directory.
        dir: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: io::Error,
    },
    /// The step's argv is empty.
    #[error("step {step} has an empty argv")]
    EmptyArgv {
        /// The step.
        step: String,
    },
    /// The child could not be started (e.g. the program does not exist).
    #[error("cannot start {program} for step {step} in {}", .dir.display())]
    Spawn {
        /// The step.
        step: String,
        /// The program that was executed.
        program: String,
        /// The working directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Waiting for the child failed; its process group was killed all the same.
    #[error("cannot wait for the process of step {step}")]
    Wait {
        /// The step.
        step: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// [`adopt_orphans`] failed.
    #[error("cannot make hookd a child subreaper")]
    Subreaper(#[source] Errno),
}

/// Makes hookd adopt the orphaned descendants of its steps (Linux `PR_SET_CHILD_SUBREAPER`).
///
/// Call it once at startup. A killed grandchild of a step becomes a zombie that keeps the
/// step's process group alive until its new parent reaps it; [`run_step`] reaps the zombies
/// of its own group that hookd adopted, but if hookd is neither PID 1 nor a subreaper they are
/// adopted by an init that may never reap them, and every such step waits out its 5 s bound.
pub fn adopt_orphans() -> Result<(), RunnerError> {
    nix::sys::prctl::set_child_subreaper(true).map_err(RunnerError::Subreaper)
}

/// The stream a log line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The step's stdout.
    Out,
    /// The step's stderr.
    Err,
    /// hookd's own messages about the run.
    Hookd,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Self::Out => "out",
            Self::Err => "err",
            Self::Hookd => "hookd",
        }
    }
}

/// The log file of one run, shared by its steps; clones share the same file.
///
/// Lines read `<RFC 3339 UTC time, ms> <step> <out|err|hookd> | <text>`. Every secret given at
/// creation that has at least [`MIN_SECRET_CHARS`] characters is replaced by `[REDACTED]` in
/// the text before it is written or broadcast (a secret split over two pieces of an overlong
/// line is not recognised). Once a line would take the file past its byte cap, one marker line
/// is written and every later line is only counted. Write failures are reported once with
/// `tracing::warn!` and otherwise ignored.
#[derive(Clone)]
pub struct RunLog {
    inner: Arc<LogInner>,
}

struct LogInner {
    path: PathBuf,
    max_bytes: u64,
    /// Longest first, so that a secret containing another is redacted whole.
    secrets: Vec<String>,
    followers: broadcast::Sender<String>,
    state: Mutex<LogState>,
}

struct LogState {
    file: BufWriter<File>,
    /// Bytes in the file, counting those whose write failed.
    written: u64,
    truncated: bool,
    dropped_lines: u64,
    write_failed: bool,
}

impl RunLog {
    /// Creates (or truncates) the log file at `path`, creating its parent directories.
    pub fn create(path: &Path, max_bytes: u64, secrets: Vec<String>) -> Result<Self, RunnerError> {
        Self::open(path, max_bytes, secrets, false)
    }

    /// Opens the log file at `path` to continue it (retry, restart), creating it if needed;
    /// its existing size counts toward `max_bytes`.
    pub fn open_append(
        path: &Path,
        max_bytes: u64,
        secrets: Vec<String>,
    ) -> Result<Self, RunnerError> {
        Self::open(path, max_bytes, secrets, true)
    }

    fn open(
        path: &Path,
        max_bytes: u64,
        secrets: Vec<String>,
        append: bool,
    ) -> Result<Self, RunnerError> {
        let log_error = |source| RunnerError::Log {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(log_error)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(log_error)?;
        let written = if append {
            file.metadata().map_err(log_error)?.len()
        } else {
            0
        };
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|secret| secret.chars().count() >= MIN_SECRET_CHARS)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Ok(Self {
            inner: Arc::new(LogInner {
                path: path.to_path_buf(),
                max_bytes,
                secrets,
                followers: broadcast::channel(FOLLOWER_BACKLOG).0,
                state: Mutex::new(LogState {
                    file: BufWriter::with_capacity(WRITE_BUFFER, file),
                    written,
                    truncated: false,
                    dropped_lines: 0,
                    write_failed: false,
                }),
            }),
        })
    }

    /// Appends one line and flushes it to the file; meant for occasional messages.
    pub fn line(&self, step: &str, stream: Stream, text: &str) {
        let mut batch = self.inner.batch(step, stream);
        batch.push(text);
        batch.flush();
    }

    /// Writes buffered lines to the file.
    pub fn flush(&self) {
        self.inner.lock().flush(&self.inner.path);
    }

    /// Follows the log: the receiver gets every line written from now on, formatted as in the
    /// file but without the newline. A receiver lagging more than [`FOLLOWER_BACKLOG`] lines
    /// behind loses the oldest ones (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.inner.followers.subscribe()
    }

    /// The size of the log file, including what it held before [`RunLog::open_append`].
    pub fn bytes_written(&self) -> u64 {
        self.inner.lock().written
    }

    /// Whether the cap was reached and later lines are discarded.
    pub fn truncated(&self) -> bool {
        self.inner.lock().truncated
    }

    /// How many lines were discarded because of the cap (once it is reached, step output is
    /// no longer framed: its newlines are counted).
    pub fn dropped_lines(&self) -> u64 {
        self.inner.lock().dropped_lines
    }
}

impl fmt::Debug for RunLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunLog")
            .field("path", &self.inner.path)
            .field("max_bytes", &self.inner.max_bytes)
            .finish_non_exhaustive()
    }
}

impl LogInner {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts writing lines that share one timestamp, step and stream, under one lock.
    fn batch(&self, step: &str, stream: Stream) -> Batch<'_> {
        let mut line = OffsetDateTime::now_utc()
            .format(TIMESTAMP)
            .unwrap_or_default();
        line.push(' ');
        line.push_str(step);
        line.push(' ');
        Batch {
            prefix_len: line.len(),
            line,
            tag: stream.tag(),
            state: self.lock(),
            log: self,
        }
    }

    fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut text = Cow::Borrowed(text);
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = Cow::Owned(text.replace(secret.as_str(), REDACTED));
            }
        }
        text
    }
}

impl LogState {
    fn write(&mut self, path: &Path, bytes: &[u8]) {
        self.written += bytes.len() as u64;
        let result = self.file.write_all(bytes);
        self.check(path, result);
    }

    fn flush(&mut self, path: &Path) {
        let result = self.file.flush();
        self.check(path, result);
    }

    fn check(&mut self, path: &Path, result: io::Result<()>) {
        if let Err(error) = result {
            if !self.write_failed {
                self.write_failed = true;
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "cannot write the run log; step output is still drained but may be lost"
                );
            }
        }
    }
}

/// Lines written under one lock, sharing one timestamp, step and stream.
struct Batch<'a> {
    log: &'a LogInner,
    state: MutexGuard<'a, LogState>,
    /// `<time> <step> ` followed by the line being written.
    line: String,
    prefix_len: usize,
    tag: &'static str,
}

impl Batch<'_> {
    fn discarding(&self) -> bool {
        self.state.truncated
    }

    fn count_dropped(&mut self, lines: u64) {
        self.state.dropped_lines += lines;
    }

    fn push(&mut self, text: &str) {
        if self.discarding() {
            self.count_dropped(1);
            return;
        }
        let text = self.log.redact(text);
        self.start_line(self.tag);
        self.line.push_str(&text);
        if self.state.written + self.line.len() as u64 + 1 > self.log.max_bytes {
            self.state.truncated = true;
            self.count_dropped(1);
            self.start_line(Stream::Hookd.tag());
            // Writing to a String cannot fail.
            let _ = write!(
                self.line,
                "… log truncated: reached the cap of {} bytes; further output is discarded",
                self.log.max_bytes
            );
        }
        self.line.push('\n');
        self.state.write(&self.log.path, self.line.as_bytes());
        if self.log.followers.receiver_count() > 0 {
            let line = self.line.trim_end_matches('\n').to_owned();
            // Fails only when every follower has gone in the meantime.
            let _ = self.log.followers.send(line);
        }
    }

    /// Pushes raw output, invalid UTF-8 replaced by U+FFFD.
    fn push_bytes(&mut self, text: &[u8]) {
        self.push(&String::from_utf8_lossy(text));
    }

    fn start_line(&mut self, tag: &str) {
        self.line.truncate(self.prefix_len);
        self.line.push_str(tag);
        self.line.push_str(" | ");
    }

    fn flush(&mut self) {
        self.state.flush(&self.log.path);
    }
}

/// Runs one step to its end and returns how it ended.
///
/// The step ends when its child exits, when `spec.timeout` or `deadline` (whichever is
/// earlier) passes ([`StepEnd::TimedOut`]), or when `stop` fires ([`StepEnd::Stopped`]). In the
/// last two cases the process group gets SIGTERM, then SIGKILL if it is not gone after
/// `grace`; after a normal exit it gets SIGKILL right away, to remove leftovers. Either way
/// this returns only once the group is gone (or after a 5 s bound, with a warning), so the
/// step never outlives its outcome. Start, end and failures to start are logged as `hookd`
/// lines. Dropping the future kills the whole group too, without waiting.
pub async fn run_step(
    spec: &StepSpec,
    log: &RunLog,
    deadline: Option<Instant>,
    stop: &CancellationToken,
    grace: Duration,
) -> Result<StepOutcome, RunnerError> {
    run_step_with(spec, log, deadline, stop, grace, |_| {}).await
}

/// [`run_step`], calling `on_spawn` with the step's process group id as soon
/// as the child exists (the scheduler records it, so that a restart after a
/// crash can find and kill what was left running).
pub async fn run_step_with(
    spec: &StepSpec,
    log: &RunLog,
    deadline: Option<Instant>,
    stop: &CancellationToken,
    grace: Duration,
    on_spawn: impl FnOnce(i32),
) -> Result<StepOutcome, RunnerError> {
    let name = spec.name.as_str();
    let started = Instant::now();
    let started_at = OffsetDateTime::now_utc();
    let mut process = match StepProcess::start(spec, log).await {
        Ok(process) => process,
        Err(error) => {
            let message = format!("step {name} failed to start: {}", error_chain(&error));
            log.line(name, Stream::Hookd, &message);
            return Err(error);
        }
    };
    on_spawn(process.pgid.as_raw());
    log.line(
        name,
        Stream::Hookd,
        &format!(
            "step {name} started: {} in {}",
            spec.command.describe(),
            spec.dir.display()
        ),
    );

    let limit = [spec.timeout.map(|t| started + t), deadline]
        .into_iter()
        .flatten()
        .min();
    let end = process.run(limit, stop).await;
    let elapsed = format!("{:.2}s", started.elapsed().as_secs_f64());
    let grace = matches!(end, Ok(StepEnd::TimedOut | StepEnd::Stopped)).then_some(grace);
    process.terminate_group(grace).await;
    process.drain().await;
    let finished_at = OffsetDateTime::now_utc();

    let end = match end {
        Ok(end) => end,
        Err(source) => {
            log.line(
                name,
                Stream::Hookd,
                &format!(
                    "step {name}: cannot wait for its process: {source}; process group terminated"
                ),
            );
            return Err(RunnerError::Wait {
                step: name.to_owned(),
                source,
            });
        }
    };
    let message = match end {
        StepEnd::Exited(code) => format!("step {name} exited with code {code} after {elapsed}"),
        StepEnd::Signaled(signal) => {
            format!("step {name} killed by signal {signal} after {elapsed}")
        }
        StepEnd::TimedOut => {
            format!("step {name} timed out after {elapsed}; process group terminated")
        }
        StepEnd::Stopped => {
            format!("step {name} stopped after {elapsed}; process group terminated")
        }
    };
    log.line(name, Stream::Hookd, &message);
    Ok(StepOutcome {
        end,
        started_at,
        finished_at,
        pgid: process.pgid.as_raw(),
    })
}

/// `error: its source: its source's source…`
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

fn step_end(status: ExitStatus) -> StepEnd {
    match status.code() {
        Some(code) => StepEnd::Exited(code),
        None => StepEnd::Signaled(status.signal().unwrap_or_default()),
    }
}

async fn sleep_opt(until: Option<Instant>) {
    match until {
        Some(until) => sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// A running step: its child, its process group and its output.
struct StepProcess<'a> {
    log: &'a RunLog,
    step: &'a str,
    child: Child,
    pgid: Pid,
    /// Whether the child itself has been waited for.
    reaped: bool,
    /// Whether the group is known to be empty.
    gone: bool,
    output: Output,
}

impl<'a> StepProcess<'a> {
    async fn start(spec: &'a StepSpec, log: &'a RunLog) -> Result<Self, RunnerError> {
        let step = spec.name.as_str();
        let dir_error = |source| RunnerError::WorkDir {
            step: step.to_owned(),
            dir: spec.dir.clone(),
            source,
        };
        let metadata = tokio::fs::metadata(&spec.dir).await.map_err(dir_error)?;
        if !metadata.is_dir() {
            return Err(dir_error(io::ErrorKind::NotADirectory.into()));
        }
        let mut command = match &spec.command {
            StepCommand::Shell(script) => {
                let mut command = Command::new("/bin/sh");
                command.arg("-c").arg(script);
                command
            }
            StepCommand::Argv(argv) => {
                let (program, args) = argv.split_first().ok_or_else(|| RunnerError::EmptyArgv {
                    step: step.to_owned(),
                })?;
                let mut command = Command::new(program);
                command.args(args);
                command
            }
        };
        command
            .env_clear()
            .envs(spec.env.iter().map(|(key, value)| (key, value)))
            .current_dir(&spec.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let spawn_error = |source| RunnerError::Spawn {
            step: step.to_owned(),
            program: spec.command.program().to_owned(),
            dir: spec.dir.clone(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        // A child that was never waited for always has its pid.
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| spawn_error(io::Error::other("the child has no process id")))?;
        Ok(Self {
            log,
            step,
            output: Output {
                out: OutputPump::new(child.stdout.take(), Stream::Out),
                err: OutputPump::new(child.stderr.take(), Stream::Err),
            },
            child,
            pgid: Pid::from_raw(pid),
            reaped: false,
            gone: false,
        })
    }

    /// Logs the output until the child exits, `limit` passes or `stop` fires.
    async fn run(
        &mut self,
        limit: Option<Instant>,
        stop: &CancellationToken,
    ) -> io::Result<StepEnd> {
        let exited = self.child.wait();
        let expired = sleep_opt(limit);
        let stopped = stop.cancelled();
        tokio::pin!(exited, expired, stopped);
        let mut flush_at = None;
        let end = loop {
            tokio::select! {
                status = &mut exited => break status.map(step_end),
                () = &mut expired => break Ok(StepEnd::TimedOut),
                () = &mut stopped => break Ok(StepEnd::Stopped),
                () = self.output.pump(self.log, self.step) => {
                    flush_at.get_or_insert_with(|| Instant::now() + FLUSH_INTERVAL);
                }
                () = sleep_opt(flush_at) => {
                    self.log.flush();
                    flush_at = None;
                }
            }
        };
        // A failed wait cannot be retried usefully either.
        self.reaped = !matches!(end, Ok(StepEnd::TimedOut | StepEnd::Stopped));
        end
    }

    /// Empties the process group: first `grace` after a SIGTERM if given, then SIGKILL.
    async fn terminate_group(&mut self, grace: Option<Duration>) {
        if let Some(grace) = grace {
            self.signal(Signal::SIGTERM);
            if self.settle(Instant::now() + grace).await {
                return;
            }
        }
        self.signal(Signal::SIGKILL);
        if !self.settle(Instant::now() + GROUP_GONE_LIMIT).await {
            let pgid = self.pgid.as_raw();
            tracing::warn!(
                step = self.step,
                pgid,
                "process group still exists {GROUP_GONE_LIMIT:?} after SIGKILL"
            );
            self.log.line(
                self.step,
                Stream::Hookd,
                &format!(
                    "process group {pgid} still exists {GROUP_GONE_LIMIT:?} after SIGKILL; \
                     giving up waiting"
                ),
            );
        }
    }

    fn signal(&self, signal: Signal) {
        // After the child was reaped, an empty group's id could in theory be reused before
        // this SIGKILL; that needs the pid space to wrap around in between.
        match killpg(self.pgid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => tracing::warn!(
                step = self.step,
                pgid = self.pgid.as_raw(),
                %error,
                "cannot send {signal} to the process group"
            ),
        }
    }

    /// Keeps reaping and draining until the group is gone (true) or `until` passes (false).
    async fn settle(&mut self, until: Instant) -> bool {
        loop {
            if self.reaped {
                self.reap_adopted();
            }
            self.gone = matches!(killpg(self.pgid, None), Err(Errno::ESRCH));
            let now = Instant::now();
            if self.gone || now >= until {
                return self.gone;
            }
            tokio::select! {
                // The status no longer matters: the step was timed out or stopped.
                _ = self.child.wait(), if !self.reaped => self.reaped = true,
                () = self.output.pump(self.log, self.step) => {}
                () = sleep_until((now + GROUP_POLL).min(until)) => self.log.flush(),
            }
        }
    }

    /// Reaps exited members of the group that hookd adopted (as PID 1 or subreaper); they
    /// would otherwise keep the group alive as zombies. Only once the child itself was
    /// reaped, so as not to take its status from tokio.
    fn reap_adopted(&self) {
        let group = Pid::from_raw(-self.pgid.as_raw());
        while let Ok(status) = waitpid(group, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }

    /// Logs what is left in the pipes, for a bounded time, including unterminated last lines.
    async fn drain(&mut self) {
        let (log, step, output) = (self.log, self.step, &mut self.output);
        let _ = timeout(DRAIN_LIMIT, async {
            while output.is_open() {
                output.pump(log, step).await;
            }
        })
        .await;
        output.out.finish(log, step);
        output.err.finish(log, step);
    }
}

impl Drop for StepProcess<'_> {
    /// Kills the group if `run_step` was cancelled before the group was gone.
    fn drop(&mut self) {
        if !self.gone {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// The child's stdout and stderr.
struct Output {
    out: OutputPump<ChildStdout>,
    err: OutputPump<ChildStderr>,
}

impl Output {
    fn is_open(&self) -> bool {
        self.out.reader.is_some() || self.err.reader.is_some()
    }

    /// Reads and logs the next chunk from either pipe; never completes once both are closed.
    /// Cancel safe: a chunk is logged in the same poll that reads it.
    async fn pump(&mut self, log: &RunLog, step: &str) {
        tokio::select! {
            () = self.out.pump(log, step), if self.out.reader.is_some() => {}
            () = self.err.pump(log, step), if self.err.reader.is_some() => {}
            else => std::future::pending().await,
        }
    }
}

/// One pipe of the child and the line it is in the middle of.
struct OutputPump<R> {
    reader: Option<R>,
    stream: Stream,
    buf: Box<[u8]>,
    framer: LineFramer,
}

impl<R: AsyncRead + Unpin> OutputPump<R> {
    fn new(reader: Option<R>, stream: Stream) -> Self {
        Self {
            reader,
            stream,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            framer: LineFramer::default(),
        }
    }

    /// Reads one chunk and logs the lines it completes; closes the pipe on EOF or error.
    async fn pump(&mut self, log: &RunLog, step: &str) {
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        let read = match reader.read(&mut self.buf).await {
            Ok(0) => None,
            Ok(read) => Some(read),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return,
            Err(error) => {
                tracing::warn!(step, stream = self.stream.tag(), %error, "cannot read step output");
                None
            }
        };
        let Some(read) = read else {
            self.reader = None;
            self.finish(log, step);
            return;
        };
        let chunk = &self.buf[..read];
        let mut batch = log.inner.batch(step, self.stream);
        if batch.discarding() {
            // Past the cap lines are only counted: no framing, no decoding.
            batch.count_dropped(chunk.iter().filter(|&&b| b == b'\n').count() as u64);
        } else {
            self.framer.push(chunk, &mut |line| batch.push_bytes(line));
        }
    }

    /// Logs the unterminated last line, if any.
    fn finish(&mut self, log: &RunLog, step: &str) {
        if self.framer.pending() {
            let mut batch = log.inner.batch(step, self.stream);
            self.framer.finish(&mut |line| batch.push_bytes(line));
        }
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`] bytes.
#[derive(Default)]
struct LineFramer {
    /// The unterminated start of the current line; never longer than `MAX_LINE_BYTES`.
    partial: Vec<u8>,
}

impl LineFramer {
    /// Emits every line that `data` completes, and every full piece of an overlong line.
    fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            let room = MAX_LINE_BYTES - self.partial.len();
            let window = &data[..data.len().min(room + 1)];
            if let Some(end) = window.iter().position(|&b| b == b'\n') {
                self.emit(&data[..end], true, emit);
                data = &data[end + 1..];
            } else if window.len() > room {
                self.emit(&data[..room], false, emit);
                data = &data[room..];
            } else {
                self.partial.extend_from_slice(data);
                return;
            }
        }
    }

    /// Whether an unterminated line is pending.
    fn pending(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Emits the unterminated last line, if any.
    fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if self.pending() {
            self.emit(&[], true, emit);
        }
    }

    /// Emits the pending part followed by `tail` as one line, without a trailing `\r` if the
    /// line is `complete` (not a piece of an overlong one).
    fn emit(&mut self, tail: &[u8], complete: bool, emit: &mut impl FnMut(&[u8])) {
        let strip = |line: &[u8]| -> usize {
            if complete && line.ends_with(b"\r") {
                line.len() - 1
            } else {
                line.len()
            }
        };
        if self.partial.is_empty() {
            emit(&tail[..strip(tail)]);
        } else {
            self.partial.extend_from_slice(tail);
            emit(&self.partial[..strip(&self.partial)]);
            self.partial.clear();
        }
    }
}

/// Kills what a previous hookd process left of run `run_id`'s step in
/// process group `pgid` (after a crash the steps' processes outlive hookd).
/// Only processes of that group whose environment says `HOOKD_RUN_ID=<run_id>`
/// count, so a recycled group id never hits an unrelated process. Blocking
/// (reads `/proc`): call it from a blocking context. Returns how many
/// processes were found.
pub fn kill_leftover_group(pgid: i32, run_id: i64) -> usize {
    let marker = format!("HOOKD_RUN_ID={run_id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut found = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // Field 5 of /proc/PID/stat is the process group; the command name
        // (field 2) is in parentheses and may contain spaces.
        let in_group = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after = stat.rsplit_once(')')?.1;
                after.split_whitespace().nth(2)?.parse::<i32>().ok()
            })
            == Some(pgid);
        if !in_group {
            continue;
        }
        let ours = std::fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
            .unwrap_or(false);
        if ours {
            found += 1;
        }
    }
    if found > 0 {
        if let Err(e) = killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
            tracing::warn!(pgid, run = run_id, error = %e, "cannot kill a leftover process group");
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;
    use time::format_description::well_known::Rfc3339;

    const PATH: &str = "/usr/bin:/bin";
    const GRACE: Duration = Duration::from_millis(300);
    /// Slack for timing assertions on a loaded 2-core machine.
    const MARGIN: Duration = Duration::from_secs(2);

    struct Fixture {
        dir: TempDir,
        log_path: PathBuf,
        log: RunLog,
    }

    fn fixture(max_bytes: u64, secrets: &[&str]) -> Fixture {
        adopt_orphans().expect("become a child subreaper");
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("logs/run.log");
        let secrets = secrets.iter().map(|s| s.to_string()).collect();
        let log = RunLog::create(&log_path, max_bytes, secrets).expect("create log");
        Fixture { dir, log_path, log }
    }

    impl Fixture {
        fn spec(&self, name: &str, command: StepCommand) -> StepSpec {
            StepSpec {
                name: name.to_owned(),
                command,
                dir: self.dir.path().to_path_buf(),
                env: vec![("PATH".to_owned(), PATH.to_owned())],
                timeout: Some(Duration::from_secs(30)),
            }
        }

        fn shell(&self, script: &str) -> StepSpec {
            self.spec("build", StepCommand::Shell(script.to_owned()))
        }

        async fn run(&self, spec: &StepSpec) -> StepOutcome {
            run_step(spec, &self.log, None, &CancellationToken::new(), GRACE)
                .await
                .expect("step runs")
        }

        fn contents(&self) -> String {
            let bytes = std::fs::read(&self.log_path).expect("read log");
            String::from_utf8(bytes).expect("log is UTF-8")
        }

        /// The texts of the lines of `step` tagged `tag`, checking the format of every line.
        fn texts(&self, step: &str, tag: &str) -> Vec<String> {
            self.contents()
                .lines()
                .filter_map(|line| {
                    let (head, text) = line.split_once(" | ").expect("separator");
                    let mut fields = head.split(' ');
                    let stamp = fields.next().expect("timestamp");
                    assert_eq!(stamp.len(), "2026-11-27T13:55:15.123Z".len(), "{line}");
                    assert!(stamp.ends_with('Z'), "{line}");
                    OffsetDateTime::parse(stamp, &Rfc3339).expect("RFC 3339 timestamp");
                    let (line_step, line_tag) = (fields.next(), fields.next());
                    assert!(matches!(line_tag, Some("out" | "err" | "hookd")), "{line}");
                    assert_eq!(fields.next(), None, "{line}");
                    (line_step == Some(step) && line_tag == Some(tag)).then(|| text.to_owned())
                })
                .collect()
        }
    }

    fn group_gone(pgid: i32) -> bool {
        killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH)
    }

    /// Polls `condition` every 10 ms for up to 5 s.
    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn types_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: T) {}
        send_sync::<RunLog>();
        let f = fixture(1024, &[]);
        let (spec, stop) = (f.shell("true"), CancellationToken::new());
        // Never polled: only proves that `run_step` can be spawned on a multi-thread runtime.
        send(run_step(&spec, &f.log, None, &stop, GRACE));
    }

    #[tokio::test]
    async fn exit_codes_and_tagged_output() {
        let f = fixture(1 << 20, &[]);
        let ok = f.run(&f.shell("echo out1; echo err1 >&2; echo out2")).await;
        assert_eq!(ok.end, StepEnd::Exited(0));
        assert!(ok.succeeded());
        assert_eq!(ok.exit_code(), Some(0));
        assert!(ok.started_at <= ok.finished_at);
        let failed = f
            .run(&f.spec("test", StepCommand::Shell("echo bad >&2; exit 3".into())))
            .await;
        assert_eq!(failed.end, StepEnd::Exited(3));
        assert!(!failed.succeeded());
        assert_eq!(failed.exit_code(), Some(3));

        assert_eq!(f.texts("build", "out"), ["out1", "out2"]);
        assert_eq!(f.texts("build", "err"), ["err1"]);
        assert_eq!(f.texts("test", "err"), ["bad"]);
        let hookd = f.texts("test", "hookd");
        assert_eq!(hookd.len(), 2, "{hookd:?}");
        assert!(
            hookd[0].starts_with("step test started: sh -c <script of 20 bytes> in /"),
            "{hookd:?}"
        );
        assert!(hookd[1].starts_with("step test exited with code 3 after "));
        assert_eq!(f.log.bytes_written(), f.contents().len() as u64);
    }

    #[tokio::test]
    async fn signaled_child_is_reported() {
        let f = fixture(1 << 20, &[]);
        let outcome = f.run(&f.shell("kill -USR1 $$")).await;
        assert_eq!(outcome.end, StepEnd::Signaled(Signal::SIGUSR1 as i32));
        assert_eq!(outcome.exit_code(), None);
        let hookd = f.texts("build", "hookd");
        assert!(hookd[1].starts_with("step build killed by signal 10 after "));
    }

    #[tokio::test]
    async fn env_is_exactly_the_given_one() {
        std::env::set_var("HOOKD_RUNNER_TEST_LEAK", "leaked");
        let f = fixture(1 << 20, &[]);
        let mut spec = f.spec("env", StepCommand::Argv(vec!["env".into()]));
        spec.env.push(("ONLY".into(), "this one".into()));
        assert!(f.run(&spec).await.succeeded());
        let mut vars = f.texts("env", "out");
        vars.sort();
        assert_eq!(vars, ["ONLY=this one".to_owned(), format!("PATH={PATH}")]);
    }

    #[tokio::test]
    async fn working_dir_is_honoured() {
        let f = fixture(1 << 20, &[]);
        let sub = f.dir.path().join("sub dir");
        std::fs::create_dir(&sub).expect("mkdir");
        let mut spec = f.spec("pwd", StepCommand::Argv(vec!["pwd".into(), "-P".into()]));
        spec.dir = sub.clone();
        assert!(f.run(&spec).await.succeeded());
        let real = sub.canonicalize().expect("canonical dir");
        assert_eq!(f.texts("pwd", "out"), [real.display().to_string()]);
    }

    #[tokio::test]
    async fn stdin_is_dev_null() {
        let f = fixture(1 << 20, &[]);
        let mut spec = f.spec("cat", StepCommand::Argv(vec!["cat".into()]));
        spec.timeout = Some(Duration::from_secs(5));
        assert_eq!(f.run(&spec).await.end, StepEnd::Exited(0));
    }

    #[tokio::test]
    async fn bytes_are_framed_into_lossy_lines() {
        let f = fixture(1 << 20, &[]);
        let script = r"printf 'a\377b\ncrlf\r\n\nlast'; printf 'partial' >&2";
        assert!(f.run(&f.shell(script)).await.succeeded());
        assert_eq!(f.texts("build", "out"), ["a\u{FFFD}b", "crlf", "", "last"]);
        assert_eq!(f.texts("build", "err"), ["partial"]);
    }

    #[tokio::test]
    async fn long_line_is_split_into_pieces() {
        let f = fixture(1 << 20, &[]);
        let script = "head -c 204800 /dev/zero | tr '\\0' a; echo; echo next";
        assert!(f.run(&f.shell(script)).await.succeeded());
        let lengths: Vec<usize> = f.texts("build", "out").iter().map(String::len).collect();
        assert_eq!(lengths, [65536, 65536, 65536, 8192, 4]);
    }

    #[test]
    fn framer_handles_any_chunking() {
        let input = [
            &b"ab\r\ncd"[..],
            b"\n",
            b"",
            &[b'x'; MAX_LINE_BYTES],
            b"\ny\r",
        ]
        .concat();
        for chunk in [1, 3, 4096, MAX_LINE_BYTES, input.len()] {
            let mut framer = LineFramer::default();
            let mut lines = Vec::new();
            let mut emit = |line: &[u8]| lines.push(line.to_vec());
            input
                .chunks(chunk)
                .for_each(|data| framer.push(data, &mut emit));
            framer.finish(&mut emit);
            let expected: [&[u8]; 4] = [b"ab", b"cd", &[b'x'; MAX_LINE_BYTES], b"y"];
            assert_eq!(lines, expected, "chunks of {chunk}");
        }
    }

    #[tokio::test]
    async fn log_is_capped_with_one_marker() {
        let cap = 1_000_000;
        let f = fixture(cap, &[]);
        let script = "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 20000000; echo after";
        let outcome = f.run(&f.shell(script)).await;
        assert!(outcome.succeeded());
        assert!(f.log.truncated());
        assert!(f.log.dropped_lines() > 400_000, "{}", f.log.dropped_lines());
        let contents = f.contents();
        let (kept, marker) = contents
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .expect("several lines");
        let kept_bytes = kept.len() as u64 + 1; // with its last newline
        assert!(kept_bytes <= cap, "{kept_bytes} bytes before the marker");
        let expected = format!(
            "build hookd | … log truncated: reached the cap of {cap} bytes; \
             further output is discarded"
        );
        assert!(marker.ends_with(&expected), "{marker}");
        assert_eq!(contents.matches("log truncated").count(), 1);
        assert_eq!(f.log.bytes_written(), contents.len() as u64);
    }

    #[tokio::test]
    async fn secrets_are_redacted_in_file_and_followers() {
        let f = fixture(1 << 20, &["hunter2-secret", "abc", "", "hunter2"]);
        let mut followers = f.log.subscribe();
        let mut spec = f.shell(r#"echo "token=$TOKEN abc hunter2!"; echo "$TOKEN" >&2"#);
        spec.env.push(("TOKEN".into(), "hunter2-secret".into()));
        assert!(f.run(&spec).await.succeeded());
        assert_eq!(
            f.texts("build", "out"),
            ["token=[REDACTED] abc [REDACTED]!"]
        );
        assert_eq!(f.texts("build", "err"), ["[REDACTED]"]);
        let mut followed = Vec::new();
        while let Ok(line) = followers.try_recv() {
            followed.push(line);
        }
        assert_eq!(followed.len(), 4, "{followed:?}");
        // stdout and stderr race each other: only the order within a stream is kept.
        let out = " build out | token=[REDACTED] abc [REDACTED]!";
        assert!(
            followed.iter().any(|line| line.ends_with(out)),
            "{followed:?}"
        );
        assert!(followed
            .iter()
            .any(|line| line.ends_with(" build err | [REDACTED]")));
        assert!(followed.iter().all(|line| !line.contains("hunter2")));
        assert!(!f.contents().contains("hunter2"));
    }

    #[tokio::test]
    async fn followers_and_file_see_lines_while_the_step_runs() {
        let f = fixture(1 << 20, &[]);
        let mut followers = f.log.subscribe();
        let spec = f.shell("echo first; exec sleep 30");
        let stop = CancellationToken::new();
        let step = run_step(&spec, &f.log, None, &stop, GRACE);
        tokio::pin!(step);
        let follow = async {
            let mut lines = Vec::new();
            while lines.len() < 2 {
                lines.push(followers.recv().await.expect("live line"));
            }
            eventually("the line in the file", || {
                f.contents().contains("out | first")
            })
            .await;
            lines
        };
        let lines = tokio::select! {
            lines = follow => lines,
            _ = &mut step => panic!("the step ended early"),
        };
        assert!(lines[0].contains(" build hookd | step build started"));
        assert!(lines[1].ends_with(" build out | first"));
        stop.cancel();
        assert_eq!(step.await.expect("step runs").end, StepEnd::Stopped);
    }

    const STUBBORN: &str =
        "trap '' TERM; echo $$ > pgid; sleep 1000 & sleep 1000 & echo ready; wait";

    fn recorded_pgid(f: &Fixture) -> i32 {
        let text = std::fs::read_to_string(f.dir.path().join("pgid")).expect("pgid file");
        text.trim().parse().expect("pgid")
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let f = fixture(1 << 20, &[]);
        let mut spec = f.shell(STUBBORN);
        let limit = Duration::from_millis(500);
        spec.timeout = Some(limit);
        let started = Instant::now();
        let outcome = f.run(&spec).await;
        assert_eq!(outcome.end, StepEnd::TimedOut);
        assert!(started.elapsed() < limit + GRACE + MARGIN);
        assert_eq!(outcome.pgid, recorded_pgid(&f));
        assert!(group_gone(outcome.pgid));
        assert_eq!(f.texts("build", "out"), ["ready"]);
        let hookd = f.texts("build", "hookd");
        assert!(
            hookd[1].starts_with("step build timed out after "),
            "{hookd:?}"
        );
        assert!(hookd[1].ends_with("; process group terminated"));
    }

    #[tokio::test]
    async fn run_deadline_applies_when_earlier() {
        let f = fixture(1 << 20, &[]);
        let spec = f.shell("exec sleep 30");
        let deadline = Instant::now() + Duration::from_millis(200);
        let outcome = run_step(
            &spec,
            &f.log,
            Some(deadline),
            &CancellationToken::new(),
            GRACE,
        )
        .await
        .expect("step runs");
        assert_eq!(outcome.end, StepEnd::TimedOut);
        assert!(Instant::now() < deadline + MARGIN);
        assert!(group_gone(outcome.pgid));
    }

    #[tokio::test]
    async fn stop_kills_the_whole_group() {
        let f = fixture(1 << 20, &[]);
        let spec = f.shell(STUBBORN);
        let stop = CancellationToken::new();
        let pgid_file = f.dir.path().join("pgid");
        let canceller = {
            let stop = stop.clone();
            async move {
                eventually("the step to start", || pgid_file.exists()).await;
                stop.cancel();
                Instant::now()
            }
        };
        let (outcome, cancelled_at) =
            tokio::join!(run_step(&spec, &f.log, None, &stop, GRACE), canceller);
        let outcome = outcome.expect("step runs");
        assert_eq!(outcome.end, StepEnd::Stopped);
        assert!(cancelled_at.elapsed() < GRACE + MARGIN);
        assert_eq!(outcome.pgid, recorded_pgid(&f));
        assert!(group_gone(outcome.pgid));
        let hookd = f.texts("build", "hookd");
        assert!(
            hookd[1].starts_with("step build stopped after "),
            "{hookd:?}"
        );
    }

    #[tokio::test]
    async fn polite_child_is_not_sigkilled() {
        let f = fixture(1 << 20, &[]);
        let mut spec = f.shell("trap 'echo bye; exit 0' TERM; sleep 1000 & wait");
        spec.timeout = Some(Duration::from_millis(300));
        let started = Instant::now();
        let outcome = run_step(&spec, &f.log, None, &CancellationToken::new(), MARGIN * 5)
            .await
            .expect("step runs");
        assert_eq!(outcome.end, StepEnd::TimedOut);
        assert!(
            started.elapsed() < MARGIN * 2,
            "waited for the grace period"
        );
        assert_eq!(f.texts("build", "out"), ["bye"]);
        assert!(group_gone(outcome.pgid));
    }

    #[tokio::test]
    async fn background_grandchild_does_not_keep_the_step_alive() {
        let f = fixture(1 << 20, &[]);
        let started = Instant::now();
        let outcome = f.run(&f.shell("sleep 100 & echo done")).await;
        assert!(outcome.succeeded());
        assert!(started.elapsed() < Duration::from_millis(1500));
        assert!(group_gone(outcome.pgid));
        assert_eq!(f.texts("build", "out"), ["done"]);
    }

    #[tokio::test]
    async fn argv_runs_without_a_shell() {
        let f = fixture(1 << 20, &[]);
        let argv = ["printf", "%s\\n", "$(echo hi)"].map(String::from).to_vec();
        let spec = f.spec("printf", StepCommand::Argv(argv));
        assert!(f.run(&spec).await.succeeded());
        assert_eq!(f.texts("printf", "out"), ["$(echo hi)"]);
        let hookd = f.texts("printf", "hookd");
        assert!(hookd[0].starts_with("step printf started: printf with 2 arguments in /"));
    }

    #[tokio::test]
    async fn start_failures_name_the_culprit() {
        let f = fixture(1 << 20, &[]);
        let stop = CancellationToken::new();
        let run = |spec: StepSpec| {
            let (log, stop) = (f.log.clone(), stop.clone());
            async move { run_step(&spec, &log, None, &stop, GRACE).await }
        };

        let missing = f.spec("p", StepCommand::Argv(vec!["hookd-no-such-program".into()]));
        let error = run(missing).await.expect_err("missing program");
        assert!(matches!(error, RunnerError::Spawn { .. }), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("hookd-no-such-program"), "{text}");
        assert!(text.contains(&f.dir.path().display().to_string()), "{text}");

        let mut no_dir = f.shell("true");
        no_dir.dir = f.dir.path().join("no-such-dir");
        let error = run(no_dir).await.expect_err("missing dir");
        assert!(matches!(error, RunnerError::WorkDir { .. }), "{error:?}");
        assert!(error.to_string().contains("no-such-dir"), "{error}");
        assert!(std::error::Error::source(&error).is_some());

        let error = run(f.spec("e", StepCommand::Argv(Vec::new())))
            .await
            .expect_err("empty argv");
        assert_eq!(error.to_string(), "step e has an empty argv");

        let hookd = f.texts("p", "hookd");
        assert!(
            hookd[0].starts_with("step p failed to start: cannot start"),
            "{hookd:?}"
        );
    }

    #[tokio::test]
    async fn open_append_continues_and_counts_existing_bytes() {
        let f = fixture(1 << 20, &[]);
        f.log.line("fetch", Stream::Hookd, "fetching repo");
        let existing = f.log.bytes_written();
        assert_eq!(existing, f.contents().len() as u64);

        let cap = existing + 100;
        let log = RunLog::open_append(&f.log_path, cap, Vec::new()).expect("reopen");
        assert_eq!(log.bytes_written(), existing);
        log.line("retry", Stream::Out, "short");
        assert!(!log.truncated());
        log.line("retry", Stream::Out, &"x".repeat(100));
        assert!(log.truncated());
        log.line("retry", Stream::Out, "dropped");
        assert_eq!(log.dropped_lines(), 2);

        let contents = f.contents();
        let texts: Vec<&str> = contents
            .lines()
            .filter_map(|line| line.split_once(" | ").map(|(_, text)| text))
            .collect();
        assert_eq!(
            texts,
            [
                "fetching repo",
                "short",
                &format!(
                    "… log truncated: reached the cap of {cap} bytes; further output is discarded"
                ),
            ]
        );
    }

    #[tokio::test]
    async fn write_failures_do_not_stop_the_step() {
        let f = fixture(1 << 20, &[]);
        let log = RunLog::create(Path::new("/dev/full"), 1 << 30, Vec::new()).expect("open");
        let spec = f.shell("head -c 3000000 /dev/zero | tr '\\0' '\\n'; echo end");
        let outcome = run_step(&spec, &log, None, &CancellationToken::new(), GRACE)
            .await
            .expect("step runs");
        assert!(outcome.succeeded());
    }
}
