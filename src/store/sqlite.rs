//! The embedded SQLite store (the default): one file in `data_dir`, WAL mode,
//! `synchronous=FULL` (every commit is fsynced before it returns).
//!
//! Writes: one dedicated writer thread owns the only write connection. Callers
//! send it jobs; it takes every job waiting (up to [`MAX_BATCH`]), runs them
//! in one transaction, commits once, then answers them all: group commit. A
//! job that fails after changing rows rolls the whole batch back (see
//! `writer_loop`). WAL checkpoints run on a separate thread, woken once a
//! commit leaves [`CHECKPOINT_FRAMES`] in the WAL, and the writer copies
//! only what was committed while that thread worked, so the WAL starts
//! over (see [`WalCycle`]); the writer checkpoints and truncates the WAL
//! itself only past [`WAL_RESTART_BYTES`]. Reads use a small pool of read-only connections on blocking
//! threads, never on the async executor.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use tokio::sync::oneshot;

use super::bodies::{self, BodyLog, BodyRef};
use super::{
    AfterRun, AlertGate, AlertUpdate, DeliveryFilter, DeliveryRecord, NewDelivery, NewRun, Pruned,
    QueuedRun, Recorded, Recovered, RetryPlan, RetryPolicy, RunFilter, RunOrigin, RunRecord,
    RunRef, RunStatus, StepRecord, StepStatus, Store, StoreError,
};
use crate::matcher::{Skip, SkipList};

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_scheduling.sql"),
    include_str!("migrations/0003_remediation.sql"),
    include_str!("migrations/0004_body_segments.sql"),
    include_str!("migrations/0005_queue_heads.sql"),
    include_str!("migrations/0006_running_index.sql"),
    include_str!("migrations/0007_verification_index.sql"),
];

/// Closes the verification windows that ran out (`?1`: now), once a second
/// on the writer: the partial index `runs_verifying` (schema 7) holds only
/// the runs still being verified.
const DUE_VERIFICATIONS: &str = "UPDATE runs SET effective = 0
     WHERE effective IS NULL AND verify_until IS NOT NULL AND verify_until < ?1
     RETURNING id, pipeline";

/// Statements the writer keeps prepared (more than it has).
const WRITER_STATEMENTS: usize = 64;

/// Most jobs one transaction takes.
const MAX_BATCH: usize = 512;

/// The least pause between two checkpoints of the checkpoint thread (see
/// [`checkpoint_loop`]).
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(5);

/// A commit that leaves this many frames (pages) in the WAL starts a
/// checkpoint cycle (see [`WalCycle`]): 8 MiB of 4 KiB pages.
const CHECKPOINT_FRAMES: i32 = 2048;

/// Past this size the writer checkpoints and truncates the WAL (see
/// [`restart_wal_if_large`]).
const WAL_RESTART_BYTES: u64 = 64 * 1024 * 1024;

/// A write not committed by then is reported as failed (the HTTP side
/// answers 503); the database's own busy timeout is 5 s.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// A job's answer, sent once the batch it was part of committed (or failed).
type Completion = Box<dyn FnOnce(Result<(), Arc<StoreError>>) + Send>;
/// A write job, run inside the batch's transaction; `false` means it failed.
/// Bodies it appends to the [`BodyLog`] are written and synced before the
/// transaction commits.
type Job = Box<dyn FnOnce(&Transaction, &mut BodyLog) -> (bool, Completion) + Send>;

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    bodies: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    stop_checkpoints: Mutex<Option<mpsc::SyncSender<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// How long a statement waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(StoreError::sqlite_with(|| {
            format!("set busy timeout on {}", path.display())
        }))?;
    // Foreign keys are declared but not enforced: enforcing them made every
    // UPDATE of a linking column (superseded_by, retry_of) a multi-row
    // statement with its own statement journal, a quarter of the writer's
    // work per accepted push. The one writer sets those columns only to
    // rows of the same transaction or rows it just read, and pruning
    // clears links before it deletes; the tests check the links with
    // `PRAGMA foreign_key_check` after they exercise each of those paths.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = 0;",
    )
    .map_err(StoreError::sqlite_with(|| {
        format!("configure {}", path.display())
    }))
}

fn open_error(path: &Path) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `hookd.db` in `data_dir`, migrates it, and
    /// starts the writer and checkpoint threads. Blocking: call it from a
    /// blocking context or before the runtime is busy.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with_batch(data_dir, MAX_BATCH)
    }

    /// Like [`SqliteStore::open`], with at most `max_batch` jobs per
    /// transaction (1 turns group commit off; benchmarks compare the two).
    pub fn open_with_batch(data_dir: &Path, max_batch: usize) -> Result<SqliteStore, StoreError> {
        Self::open_tuned(data_dir, max_batch, CHECKPOINT_FRAMES)
    }

    /// Like [`SqliteStore::open_with_batch`], with a checkpoint cycle
    /// starting at `checkpoint_frames` (tests use small ones).
    fn open_tuned(
        data_dir: &Path,
        max_batch: usize,
        checkpoint_frames: i32,
    ) -> Result<SqliteStore, StoreError> {
        let max_batch = max_batch.max(1);
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: data_dir.display().to_string(),
            reason: format!("cannot create data directory: {e}"),
        })?;
        let path = data_dir.join("hookd.db");
        let mut conn = Connection::open(&path).map_err(open_error(&path))?;
        configure(&conn, &path)?;
        migrate(&mut conn, &path)?;
        let bodies = data_dir.join("bodies");
        // Segment numbers grow with delivery ids: the newest delivery with
        // a segment names the newest segment any row points at.
        let referenced: Option<i64> = conn
            .query_row(
                "SELECT body_segment FROM deliveries WHERE body_segment IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::sqlite("find the newest body segment in use"))?;
        let log = BodyLog::open(&bodies, referenced)?;

        let (tx, rx) = mpsc::channel::<Job>();
        let wal = data_dir.join("hookd.db-wal");
        let (stop_tx, stop_rx) = mpsc::sync_channel::<()>(1);
        let cycle = Arc::new(WalCycle::new(checkpoint_frames));
        let writer_cycle = (Arc::clone(&cycle), stop_tx.clone());
        let writer = std::thread::Builder::new()
            .name("hookd-store-writer".into())
            .spawn(move || writer_loop(conn, log, wal, rx, max_batch, writer_cycle))
            .map_err(|e| StoreError::Task(format!("spawn writer thread: {e}")))?;

        let checkpoint_conn = Connection::open(&path).map_err(open_error(&path))?;
        configure(&checkpoint_conn, &path)?;
        let checkpointer = std::thread::Builder::new()
            .name("hookd-store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, stop_rx, cycle))
            .map_err(|e| StoreError::Task(format!("spawn checkpoint thread: {e}")))?;

        Ok(SqliteStore {
            path,
            bodies,
            writer: Mutex::new(Some(tx)),
            stop_checkpoints: Mutex::new(Some(stop_tx)),
            readers: Arc::new(Mutex::new(Vec::new())),
            threads: Mutex::new(vec![writer, checkpointer]),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer after the jobs already sent, and waits for it.
    pub fn close(&self) {
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
        if let Ok(mut s) = self.stop_checkpoints.lock() {
            s.take();
        }
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_with_bodies(move |txn, _| f(txn)).await
    }

    /// [`Self::write`] for a job that also stores delivery bodies.
    async fn write_with_bodies<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction, &mut BodyLog) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |txn: &Transaction, bodies: &mut BodyLog| {
            // The caller gave up (deadline passed, answered 503): do nothing,
            // or its sender would retry something that was stored after all.
            if tx.is_closed() {
                let gone: Completion = Box::new(|_| {});
                return (false, gone);
            }
            let result = f(txn, bodies);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let answer = match (commit, result) {
                    (Ok(()), r) => r,
                    (Err(e), _) => Err(StoreError::Task(e.to_string())),
                };
                let _ = tx.send(answer);
            });
            (ok, completion)
        });
        let sender = self
            .writer
            .lock()
            .map_err(|_| StoreError::WriterGone)?
            .clone()
            .ok_or(StoreError::WriterGone)?;
        sender.send(job).map_err(|_| StoreError::WriterGone)?;
        match tokio::time::timeout(WRITE_DEADLINE, rx).await {
            Ok(answer) => answer.map_err(|_| StoreError::WriterGone)?,
            Err(_) => Err(StoreError::Timeout(WRITE_DEADLINE)),
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut r| r.pop());
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(open_error(&path))?;
                    c.busy_timeout(BUSY_TIMEOUT)
                        .map_err(StoreError::sqlite("set busy timeout"))?;
                    c
                }
            };
            let result = f(&conn);
            if let Ok(mut r) = readers.lock() {
                if r.len() < 8 {
                    r.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(StoreError::sqlite("read schema version"))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Open {
            path: path.display().to_string(),
            reason: format!(
                "database schema version {version} is newer than this hookd understands ({known})"
            ),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let txn = conn
            .transaction()
            .map_err(StoreError::sqlite("begin migration"))?;
        txn.execute_batch(sql).map_err(StoreError::sqlite_with(|| {
            format!("apply migration {}", i + 1)
        }))?;
        txn.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(StoreError::sqlite("record schema version"))?;
        txn.commit().map_err(StoreError::sqlite_with(|| {
            format!("commit migration {}", i + 1)
        }))?;
        tracing::info!(version = i + 1, db = %path.display(), "applied schema migration");
    }
    Ok(())
}

fn writer_loop(
    mut conn: Connection,
    mut bodies: BodyLog,
    wal: PathBuf,
    rx: mpsc::Receiver<Job>,
    max_batch: usize,
    (cycle, wake): (Arc<WalCycle>, mpsc::SyncSender<()>),
) {
    // Every statement the writer runs stays prepared: with rusqlite's
    // default of 16 the delivery, run and step statements pushed each
    // other out, and some were parsed again on every batch.
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
    let hook_cycle = Arc::clone(&cycle);
    if let Err(e) = conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames| {
        hook_cycle.frames.store(frames, Ordering::Relaxed);
        Ok(())
    })) {
        // Without it no commit asks for a checkpoint cycle: the checkpoint
        // thread's half-second timer and the truncation past the bound
        // still keep the WAL in check.
        tracing::warn!(error = %e, "cannot watch the WAL's size");
    }
    // Jobs not yet run when a batch was abandoned go first in the next one.
    let mut carried: VecDeque<Job> = VecDeque::new();
    let mut warnings = WalWarnings { last: None };
    loop {
        let mut batch = std::mem::take(&mut carried);
        if batch.is_empty() {
            match rx.recv() {
                Ok(first) => batch.push_back(first),
                Err(_) => return,
            }
        }
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push_back(job),
                Err(_) => break,
            }
        }
        bodies.begin();
        let mut completions = Vec::with_capacity(batch.len());
        let commit = (|| -> Result<(), StoreError> {
            let txn = conn
                .transaction()
                .map_err(StoreError::sqlite("begin write transaction"))?;
            while let Some(job) = batch.pop_front() {
                let changes = txn.total_changes();
                let mark = bodies.mark();
                let (ok, completion) = job(&txn, &mut bodies);
                completions.push(completion);
                if ok {
                    continue;
                }
                bodies.rewind(mark);
                // No savepoint per job (each one copied every page the
                // batch had touched into a sub-journal): a job that failed
                // without changing a row leaves nothing to undo; one that
                // changed rows, or an error that ended the transaction
                // (SQLite rolls back by itself on I/O errors, a full disk),
                // takes the whole batch down, and the jobs not yet run go
                // to the next one.
                if txn.total_changes() != changes || txn.is_autocommit() {
                    carried = std::mem::take(&mut batch);
                    return Err(StoreError::Task(
                        "a write failed after changing rows; its whole group commit was rolled back"
                            .into(),
                    ));
                }
            }
            // The bodies first: a committed row always points at synced bytes.
            bodies.flush()?;
            txn.commit().map_err(StoreError::sqlite("commit"))
        })();
        let commit = commit.map_err(|e| {
            tracing::error!(error = %e, "store write transaction failed");
            Arc::new(e)
        });
        // Jobs never reached because BEGIN or a commit step failed are
        // dropped: their callers see the writer's answer channel close.
        drop(batch);
        for c in completions {
            c(commit.clone());
        }
        if commit.is_ok() {
            cycle.after_commit(&conn, &wake);
        }
        let outcome = restart_wal_if_large(&conn, &wal, WAL_RESTART_BYTES);
        warnings.report(&outcome, &wal);
    }
}

/// The count of [`Store::count_runs`], one statement per filter shape: the
/// `(?1 IS NULL OR …)` form of one statement for all shapes could use no
/// index, so every `/metrics` scrape (queued and running counts) read the
/// whole runs table. The status is written into the text (a fixed word of
/// [`RunStatus`], never input), so `queued` and `running` use their partial
/// indexes; the pipeline, when given, is bound as `?1`.
fn count_runs_sql(filter: &RunFilter) -> String {
    let mut conditions = Vec::new();
    if filter.pipeline.is_some() {
        conditions.push("pipeline = ?1".to_string());
    }
    if let Some(status) = filter.status {
        conditions.push(format!("status = '{}'", status.as_str()));
    }
    if conditions.is_empty() {
        "SELECT count(*) FROM runs".to_string()
    } else {
        format!(
            "SELECT count(*) FROM runs WHERE {}",
            conditions.join(" AND ")
        )
    }
}

/// What [`restart_wal_if_large`] did.
#[derive(Debug, PartialEq, Eq)]
enum WalRestart {
    /// The WAL was within its bound.
    NotNeeded,
    /// Checkpointed whole and truncated.
    Done,
    /// A reader still used the WAL (`wal_bytes` long); the next batch tries
    /// again.
    Blocked {
        frames: i64,
        copied: i64,
        wal_bytes: u64,
    },
    /// The checkpoint thread was checkpointing; the next batch tries again.
    Busy,
    /// The checkpoint failed.
    Failed(String),
}

/// The WAL is reused from its start only once a checkpoint has copied all
/// of it while no write was under way; the checkpoint thread usually gets
/// there (see [`checkpoint_loop`]), but a reader that keeps an old snapshot
/// open prevents it and the file would grow without bound. Past `limit`
/// bytes the writer itself runs one checkpoint that copies the rest (most
/// of it is copied already) and truncates the WAL.
///
/// TRUNCATE, not RESTART: RESTART leaves the file at its size and writes
/// again from its start, so the file's size, which is what this checks,
/// stayed past the bound and every later batch paid for another
/// checkpoint (one to four milliseconds of the writer's time each).
///
/// It does not wait for readers (the connection's busy timeout is lifted
/// for it): behind a long reader each attempt would hold the writer for
/// the whole timeout; blocked, it is tried again after the next batch.
fn restart_wal_if_large(conn: &Connection, wal: &Path, limit: u64) -> WalRestart {
    let wal_bytes = std::fs::metadata(wal).map_or(0, |m| m.len());
    if wal_bytes <= limit {
        return WalRestart::NotNeeded;
    }
    if let Err(e) = conn.busy_timeout(Duration::ZERO) {
        return WalRestart::Failed(format!("clear the busy timeout: {e}"));
    }
    let result = wal_checkpoint(conn, CheckpointMode::Truncate);
    if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
        return WalRestart::Failed(format!("restore the busy timeout: {e}"));
    }
    match result {
        Checkpoint::Ran {
            whole: true,
            frames,
            copied,
        } => {
            tracing::debug!(frames, copied, "WAL checkpointed and truncated");
            WalRestart::Done
        }
        Checkpoint::Ran { frames, copied, .. } => WalRestart::Blocked {
            frames,
            copied,
            wal_bytes,
        },
        Checkpoint::Busy => WalRestart::Busy,
        Checkpoint::Failed(e) => WalRestart::Failed(e.to_string()),
    }
}

/// The modes of `PRAGMA wal_checkpoint` hookd uses.
#[derive(Clone, Copy)]
enum CheckpointMode {
    /// Copies what no reader still needs; waits for nobody.
    Passive,
    /// Copies everything and truncates the WAL, once no reader uses it.
    Truncate,
}

/// What one `PRAGMA wal_checkpoint` did.
enum Checkpoint {
    /// It ran: the WAL holds `frames`, `copied` of them are in the database
    /// now; `whole` is false when a reader kept a TRUNCATE from finishing.
    Ran {
        whole: bool,
        frames: i64,
        copied: i64,
    },
    /// Another connection's checkpoint held the lock, and nothing was
    /// copied: SQLite answers with the row `(1, -1, -1)` (or, without a
    /// busy handler, SQLITE_BUSY).
    Busy,
    Failed(rusqlite::Error),
}

fn wal_checkpoint(conn: &Connection, mode: CheckpointMode) -> Checkpoint {
    let sql = match mode {
        CheckpointMode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        CheckpointMode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    let row = conn.query_row(sql, [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match row {
        Ok((_, -1, _)) => Checkpoint::Busy,
        Ok((busy, frames, copied)) => Checkpoint::Ran {
            whole: busy == 0,
            frames,
            copied,
        },
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            Checkpoint::Busy
        }
        Err(e) => Checkpoint::Failed(e),
    }
}

/// Says, at most once a minute, why the WAL stays past its bound: a
/// failing checkpoint, or a reader that kept it from being truncated until
/// it grew to twice the bound (a moment's reader, or the checkpoint thread
/// at work, is only retried).
struct WalWarnings {
    last: Option<std::time::Instant>,
}

impl WalWarnings {
    fn report(&mut self, outcome: &WalRestart, wal: &Path) {
        let worth_saying = match outcome {
            WalRestart::Failed(_) => true,
            WalRestart::Blocked { wal_bytes, .. } => *wal_bytes > 2 * WAL_RESTART_BYTES,
            WalRestart::NotNeeded | WalRestart::Done | WalRestart::Busy => false,
        };
        if !worth_saying {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.last = Some(now);
        match outcome {
            WalRestart::Blocked {
                frames,
                copied,
                wal_bytes,
            } => tracing::warn!(
                wal = %wal.display(),
                wal_bytes,
                frames,
                copied,
                "the WAL has grown past twice its bound: a reader keeps it from being truncated; retrying after each write"
            ),
            WalRestart::Failed(e) => tracing::warn!(
                wal = %wal.display(),
                error = %e,
                "the WAL is past its bound and its truncating checkpoint failed; retrying after each write"
            ),
            WalRestart::NotNeeded | WalRestart::Done | WalRestart::Busy => {}
        }
    }
}

/// The WAL is reused from its start only by a transaction that begins after
/// a checkpoint copied all of it. Under a steady stream of commits a
/// checkpoint running beside the writer never gets there (each commit adds
/// frames while it copies), and the WAL grew until the writer truncated it
/// past [`WAL_RESTART_BYTES`], tens of milliseconds with every write held.
/// So a cycle has two parts:
///
/// 1. a commit that leaves [`CHECKPOINT_FRAMES`] in the WAL (SQLite's WAL
///    hook counts them) wakes the checkpoint thread, which copies them,
///    beside the writer, with the two syncs a checkpoint costs;
/// 2. the writer, after its next commit, copies what was committed
///    meanwhile (a few batches' pages), between two of its transactions,
///    so the WAL is copied whole and the next transaction starts it over.
///
/// Pages rewritten by many commits (the last page of each table and
/// index) are copied once per cycle, not once per commit.
struct WalCycle {
    /// The frames in the WAL after the writer's last commit.
    frames: AtomicI32,
    /// The frames left when the last cycle ended: a reader that used the
    /// WAL then kept it from starting over, and the next cycle waits for
    /// [`Self::threshold`] more (else every other commit would start one).
    base: AtomicI32,
    /// Where the cycle is: [`Self::IDLE`], [`Self::COPYING`], [`Self::COPIED`].
    stage: AtomicU8,
    /// Frames that start a cycle.
    threshold: i32,
}

impl WalCycle {
    const IDLE: u8 = 0;
    /// The checkpoint thread is copying.
    const COPYING: u8 = 1;
    /// The checkpoint thread is done; the writer copies the rest.
    const COPIED: u8 = 2;

    fn new(threshold: i32) -> WalCycle {
        WalCycle {
            frames: AtomicI32::new(0),
            base: AtomicI32::new(0),
            stage: AtomicU8::new(Self::IDLE),
            threshold,
        }
    }

    /// The writer's part, after each successful commit; `wake` wakes the
    /// checkpoint thread (only the writer holds it, with the store, so
    /// that the thread ends once both are gone).
    fn after_commit(&self, conn: &Connection, wake: &mpsc::SyncSender<()>) {
        let frames = self.frames.load(Ordering::Relaxed);
        let mut base = self.base.load(Ordering::Relaxed);
        if frames < base {
            // The WAL started over since.
            base = 0;
            self.base.store(0, Ordering::Relaxed);
        }
        match self.stage.load(Ordering::Acquire) {
            Self::IDLE if frames - base >= self.threshold => {
                self.stage.store(Self::COPYING, Ordering::Release);
                // Full: a wake-up is already pending.
                let _ = wake.try_send(());
            }
            // PASSIVE waits for no reader; a reader that still uses the WAL
            // only keeps it from starting over this time.
            Self::COPIED => match wal_checkpoint(conn, CheckpointMode::Passive) {
                Checkpoint::Ran { frames, .. } => {
                    let frames = i32::try_from(frames).unwrap_or(i32::MAX);
                    self.base.store(frames, Ordering::Relaxed);
                    self.stage.store(Self::IDLE, Ordering::Release);
                }
                // Another checkpoint (the checkpoint thread's timer, a tool)
                // holds the lock: the next commit tries again.
                Checkpoint::Busy => {}
                Checkpoint::Failed(e) => {
                    tracing::debug!(error = %e, "the writer's WAL checkpoint failed");
                }
            },
            _ => {}
        }
    }
}

/// The checkpoint thread: the first part of each [`WalCycle`], and every
/// half second a checkpoint of whatever the WAL holds (a store that writes
/// now and then never starts a cycle), until the store closes (every
/// sender is dropped). After each checkpoint it pauses for four times as
/// long as the checkpoint took, at least [`CHECKPOINT_PAUSE`]: on a slow
/// disk checkpoints take at most a fifth of its syncs.
fn checkpoint_loop(conn: Connection, wake: mpsc::Receiver<()>, cycle: Arc<WalCycle>) {
    loop {
        let asked = match wake.recv_timeout(Duration::from_millis(500)) {
            Ok(()) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let started = std::time::Instant::now();
        // A busy checkpoint copied nothing: the cycle's copy is tried again
        // a few times before the writer is left to copy it all.
        let attempts = if asked { 10 } else { 1 };
        for attempt in 1..=attempts {
            match wal_checkpoint(&conn, CheckpointMode::Passive) {
                Checkpoint::Busy if attempt < attempts => std::thread::sleep(CHECKPOINT_PAUSE),
                Checkpoint::Failed(e) => {
                    tracing::debug!(error = %e, "wal checkpoint failed");
                    break;
                }
                Checkpoint::Ran { .. } | Checkpoint::Busy => break,
            }
        }
        if asked {
            cycle.stage.store(WalCycle::COPIED, Ordering::Release);
        }
        std::thread::sleep(CHECKPOINT_PAUSE.max(started.elapsed() * 4));
    }
}

/// `txn.execute`, with the statement kept prepared: the writer runs the
/// same few statements all day.
fn exec(txn: &Transaction, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    txn.prepare_cached(sql)?.execute(params)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    id: i64,
    s: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        id,
        reason: e.to_string(),
    })
}

fn runs_of_delivery(conn: &Connection, delivery: i64) -> Result<Vec<RunRef>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id, pipeline FROM runs WHERE delivery_id = ?1 ORDER BY id")
        .map_err(StoreError::sqlite("prepare runs of delivery"))?;
    let rows = stmt
        .query_map([delivery], |r| {
            Ok(RunRef {
                id: r.get(0)?,
                pipeline: r.get(1)?,
            })
        })
        .map_err(StoreError::sqlite("query runs of delivery"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sqlite("read runs of delivery"))
}

/// The first queued run of each concurrency group, in queue order: a loose
/// index scan over `runs_queue`, one seek per group that has queued runs,
/// then that group's first run; never the rest of a deep queue. INDEXED BY
/// because without statistics the planner may prefer another index and
/// sort every queued run.
///
/// No `LIMIT ?`: SQLite plans with a bound LIMIT's value, so binding one
/// re-prepares the statement on every call (this one's parse and plan cost
/// more than running it); the caller takes the first rows instead.
const QUEUE_HEADS: &str = "WITH RECURSIVE grp(name) AS (
         SELECT (SELECT concurrency_group FROM runs INDEXED BY runs_queue WHERE status = 'queued'
                 ORDER BY concurrency_group LIMIT 1)
         UNION ALL
         SELECT (SELECT concurrency_group FROM runs INDEXED BY runs_queue
                 WHERE status = 'queued' AND concurrency_group > grp.name
                 ORDER BY concurrency_group LIMIT 1)
         FROM grp WHERE grp.name IS NOT NULL
     )
     SELECT r.id, r.pipeline, r.concurrency_group, r.not_before FROM grp
     JOIN runs r ON r.id = (SELECT id FROM runs INDEXED BY runs_queue
                            WHERE status = 'queued' AND concurrency_group = grp.name
                            ORDER BY COALESCE(seq, id), id LIMIT 1)
     ORDER BY COALESCE(r.seq, r.id), r.id";

/// At most `limit` rows of [`QUEUE_HEADS`], prepared as `stmt`.
fn queued_rows(
    stmt: &mut rusqlite::CachedStatement,
    limit: usize,
) -> Result<Vec<QueuedRun>, StoreError> {
    stmt.query_map([], |r| {
        Ok(QueuedRun {
            id: r.get(0)?,
            pipeline: r.get(1)?,
            concurrency_group: r.get(2)?,
            not_before: r.get(3)?,
        })
    })
    .and_then(|rows| rows.take(limit).collect())
    .map_err(StoreError::sqlite("read queue heads"))
}

const RUN_COLUMNS: &str = "id, delivery_id, pipeline, concurrency_group, trigger, status, reason, event, git_ref, commit_sha, attempt, created_at, started_at, finished_at, origin, retry_of, superseded_by, not_before, alert_fingerprint, effective, verify_until, escalation_reason, escalation_status";

fn run_from_row(r: &rusqlite::Row) -> rusqlite::Result<(RunRecord, String, String)> {
    let id: i64 = r.get(0)?;
    let status: String = r.get(5)?;
    let event: String = r.get(7)?;
    let origin: String = r.get(14)?;
    Ok((
        RunRecord {
            id,
            delivery: r.get(1)?,
            pipeline: r.get(2)?,
            concurrency_group: r.get(3)?,
            trigger: r.get(4)?,
            status: RunStatus::Queued,
            reason: r.get(6)?,
            event: crate::event::Event::Ignored(crate::event::IgnoredEvent {
                reason: String::new(),
            }),
            git_ref: r.get(8)?,
            commit: r.get(9)?,
            attempt: r.get(10)?,
            origin: RunOrigin::parse(&origin).unwrap_or(RunOrigin::Webhook),
            retry_of: r.get(15)?,
            superseded_by: r.get(16)?,
            not_before: r.get(17)?,
            alert_fingerprint: r.get(18)?,
            effective: r.get::<_, Option<i64>>(19)?.map(|e| e != 0),
            verify_until: r.get(20)?,
            escalation_reason: r.get(21)?,
            escalation_status: r.get(22)?,
            created_at: r.get(11)?,
            started_at: r.get(12)?,
            finished_at: r.get(13)?,
            steps: Vec::new(),
        },
        status,
        event,
    ))
}

fn finish_run_row(raw: (RunRecord, String, String)) -> Result<RunRecord, StoreError> {
    let (mut run, status, event) = raw;
    run.status = RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
        what: "run status",
        id: run.id,
        reason: format!("unknown status {status:?}"),
    })?;
    run.event = decode("run event", run.id, &event)?;
    Ok(run)
}

/// What queueing a run did.
enum Queued {
    /// Queued, superseding these older runs.
    Run(i64, Vec<i64>),
    /// Recorded as `suppressed` by `max_runs` (terminal; maybe escalating).
    Suppressed(i64),
    /// Not recorded: a repeat of a remediated episode, or within the cooldown.
    Skipped(String),
}

/// Applies the remediation guard rails of `gate` for `pipeline`.
fn check_gate(
    txn: &Transaction,
    pipeline: &str,
    gate: &AlertGate,
    now: i64,
) -> Result<Option<(RunStatus, String, bool)>, StoreError> {
    let fp = &gate.fingerprint;
    // One episode = one fingerprint and startsAt. Senders without startsAt:
    // an episode lasts until the alert resolves (a later firing is new).
    let episode: Option<i64> = txn
        .query_row(
            "SELECT id FROM runs WHERE pipeline = ?1 AND alert_fingerprint = ?2
               AND alert_starts_at IS ?3 AND alert_status = ?4
               AND (?3 IS NOT NULL OR created_at > COALESCE(
                     (SELECT resolved_at FROM alerts WHERE fingerprint = ?2 AND ?4 = 'firing'), 0))
             ORDER BY id DESC LIMIT 1",
            params![pipeline, fp, gate.starts_at, gate.status],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::sqlite("look up the alert's episode"))?;
    if let Some(run) = episode {
        return Ok(Some((
            RunStatus::Skipped,
            format!(
                "alert {fp} ({}): this episode was already handled by run {run}",
                gate.status
            ),
            false,
        )));
    }
    if let Some(cooldown) = gate.cooldown_ms {
        let last: Option<(i64, i64)> = txn
            .query_row(
                "SELECT id, created_at FROM runs WHERE pipeline = ?1 AND alert_fingerprint = ?2
                   AND status != 'suppressed' ORDER BY id DESC LIMIT 1",
                params![pipeline, fp],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(StoreError::sqlite("look up the alert's last run"))?;
        if let Some((run, at)) = last.filter(|(_, at)| now - at < cooldown) {
            return Ok(Some((
                RunStatus::Skipped,
                format!(
                    "cooldown: run {run} for alert {fp} started {}s ago (cooldown {}s)",
                    (now - at) / 1000,
                    cooldown / 1000
                ),
                false,
            )));
        }
    }
    if let Some(max) = gate.max_runs {
        let since = now - gate.window_ms;
        let count: i64 = txn
            .query_row(
                "SELECT count(*) FROM runs WHERE pipeline = ?1 AND alert_fingerprint IS NOT NULL
                   AND status != 'suppressed' AND created_at > ?2",
                params![pipeline, since],
                |r| r.get(0),
            )
            .map_err(StoreError::sqlite(
                "count the pipeline's recent remediations",
            ))?;
        if count >= i64::from(max) {
            let escalated: bool = txn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM runs WHERE pipeline = ?1 AND alert_fingerprint IS NOT NULL AND status = 'suppressed'
                       AND escalation_status IS NOT NULL AND created_at > ?2)",
                    params![pipeline, since],
                    |r| r.get(0),
                )
                .map_err(StoreError::sqlite("look up the window's escalation"))?;
            return Ok(Some((
                RunStatus::Suppressed,
                format!(
                    "max_runs: {count} remediations of this pipeline in the last {}s (limit {max}){}",
                    gate.window_ms / 1000,
                    if escalated || !gate.escalate { "" } else { "; escalating" }
                ),
                gate.escalate && !escalated,
            )));
        }
    }
    Ok(None)
}

/// Queues `run`, after the guard rails of an alert run; with `supersede`,
/// older queued runs of its group become `superseded` pointing at it. Its
/// event serializes to `event_json` (written by the caller, off the writer
/// thread).
fn insert_run(
    txn: &Transaction,
    delivery: Option<i64>,
    run: &NewRun,
    event_json: &str,
    now: i64,
) -> Result<Queued, StoreError> {
    let mut status = RunStatus::Queued;
    let mut reason: Option<String> = None;
    let mut escalate = false;
    if let Some(gate) = &run.alert {
        match check_gate(txn, &run.pipeline, gate, now)? {
            Some((RunStatus::Skipped, why, _)) => return Ok(Queued::Skipped(why)),
            Some((st, why, esc)) => {
                status = st;
                reason = Some(why);
                escalate = esc;
            }
            None => {}
        }
    }
    let terminal = status != RunStatus::Queued;
    txn.prepare_cached(
        "INSERT INTO runs (delivery_id, pipeline, concurrency_group, trigger, status, event, git_ref, commit_sha,
                           created_at, origin, alert_fingerprint, alert_starts_at, alert_status, reason,
                           finished_at, escalation_reason, escalation_status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )
    .and_then(|mut s| {
        s.execute(params![
            delivery,
            run.pipeline,
            run.concurrency_group,
            run.trigger,
            status.as_str(),
            event_json,
            run.git_ref,
            run.commit,
            now,
            run.origin.as_str(),
            run.alert.as_ref().map(|g| &g.fingerprint),
            run.alert.as_ref().and_then(|g| g.starts_at.as_ref()),
            run.alert.as_ref().map(|g| &g.status),
            reason,
            terminal.then_some(now),
            escalate.then_some(reason.as_deref()).flatten(),
            escalate.then_some("pending"),
        ])
    })
    .map_err(StoreError::sqlite_with(|| format!("queue run of pipeline {}", run.pipeline)))?;
    let id = txn.last_insert_rowid();
    if terminal {
        return Ok(Queued::Suppressed(id));
    }
    let superseded = if run.supersede {
        supersede_queued(txn, &run.concurrency_group, id, now)?
    } else {
        Vec::new()
    };
    Ok(Queued::Run(id, superseded))
}

/// Records an alert's new state; for a resolved alert, closes pending
/// verifications as effective and cancels queued remediations of the
/// `cancel_on_resolved` pipelines. Returns their running runs, to be stopped.
fn apply_alert_update(
    txn: &Transaction,
    u: &AlertUpdate,
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    let resolved = u.status == "resolved";
    exec(
        txn,
        "INSERT INTO alerts (fingerprint, status, starts_at, updated_at, resolved_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (fingerprint) DO UPDATE SET status = ?2, starts_at = ?3, updated_at = ?4,
             resolved_at = COALESCE(?5, resolved_at)",
        params![
            u.fingerprint,
            u.status,
            u.starts_at,
            now,
            resolved.then_some(now)
        ],
    )
    .map_err(StoreError::sqlite_with(|| {
        format!("record the state of alert {}", u.fingerprint)
    }))?;
    if !resolved {
        return Ok(Vec::new());
    }
    exec(
        txn,
        "UPDATE runs SET effective = 1
         WHERE alert_fingerprint = ?1 AND effective IS NULL AND verify_until IS NOT NULL AND verify_until >= ?2",
        params![u.fingerprint, now],
    )
    .map_err(StoreError::sqlite("close verifications"))?;
    let mut running = Vec::new();
    for pipeline in &u.cancel_pipelines {
        exec(
            txn,
            "UPDATE runs SET status = 'cancelled', finished_at = ?3,
                    reason = 'resolved: the alert resolved before the remediation started'
             WHERE pipeline = ?1 AND alert_fingerprint = ?2 AND status = 'queued'",
            params![pipeline, u.fingerprint, now],
        )
        .map_err(StoreError::sqlite("cancel queued remediations"))?;
        let mut ids: Vec<i64> = txn
            .prepare_cached(
                "SELECT id FROM runs WHERE pipeline = ?1 AND alert_fingerprint = ?2 AND status = 'running'",
            )
            .and_then(|mut st| st.query_map(params![pipeline, u.fingerprint], |r| r.get(0))?.collect())
            .map_err(StoreError::sqlite("find running remediations"))?;
        running.append(&mut ids);
    }
    Ok(running)
}

fn supersede_queued(
    txn: &Transaction,
    group: &str,
    newer: i64,
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    // Find, then update each by its id: an UPDATE that may touch several
    // rows (or has RETURNING) needs a statement journal and temporary
    // tables, which made this the costliest statement of an accepted push.
    let ids = txn
        .prepare_cached(
            "SELECT id FROM runs INDEXED BY runs_queue
             WHERE concurrency_group = ?1 AND status = 'queued' AND id < ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![group, newer], |r| r.get(0))?
                .collect::<Result<Vec<i64>, _>>()
        })
        .map_err(StoreError::sqlite_with(|| {
            format!("find queued runs of group {group}")
        }))?;
    if ids.is_empty() {
        return Ok(ids);
    }
    let mut update = txn
        .prepare_cached(
            "UPDATE runs SET status = 'superseded', superseded_by = ?2, finished_at = ?3,
                    reason = 'superseded by run ' || ?2 || ' before it started'
             WHERE id = ?1",
        )
        .map_err(StoreError::sqlite("prepare supersede"))?;
    for id in &ids {
        update
            .execute(params![id, newer, now])
            .map_err(StoreError::sqlite_with(|| {
                format!("supersede queued run {id} of group {group}")
            }))?;
    }
    Ok(ids)
}

/// Queues a retry of run `id` (already terminal) per `plan`; `None` when a
/// newer run of the group makes it pointless.
fn insert_retry(
    txn: &Transaction,
    id: i64,
    plan: RetryPlan,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    if plan.only_if_no_newer {
        let newer: Option<i64> = txn
            .query_row(
                "SELECT n.id FROM runs n JOIN runs o ON o.id = ?1
                 WHERE n.concurrency_group = o.concurrency_group AND n.id > o.id
                   AND n.retry_of IS NOT ?1 LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::sqlite_with(|| {
                format!("look for runs newer than {id}")
            }))?;
        if newer.is_some() {
            return Ok(None);
        }
    }
    let n = exec(
        txn,
        "INSERT INTO runs (delivery_id, pipeline, concurrency_group, trigger, status, event, git_ref,
                           commit_sha, attempt, created_at, origin, seq, not_before, retry_of,
                           alert_fingerprint, alert_starts_at, alert_status)
         SELECT delivery_id, pipeline, concurrency_group, trigger, 'queued', event, git_ref,
                commit_sha, attempt + 1, ?2, origin, COALESCE(seq, id), ?3, id,
                alert_fingerprint, alert_starts_at, alert_status
         FROM runs WHERE id = ?1",
        params![id, now, plan.not_before],
    )
    .map_err(StoreError::sqlite_with(|| format!("queue a retry of run {id}")))?;
    Ok((n == 1).then(|| txn.last_insert_rowid()))
}

fn close_steps(txn: &Transaction, id: i64, status: RunStatus, now: i64) -> Result<(), StoreError> {
    let step_status = match status {
        RunStatus::TimedOut => StepStatus::TimedOut,
        RunStatus::Cancelled | RunStatus::Superseded => StepStatus::Cancelled,
        RunStatus::Succeeded => StepStatus::Succeeded,
        RunStatus::Failed => StepStatus::Failed,
        _ => StepStatus::Interrupted,
    };
    exec(
        txn,
        "UPDATE steps SET status = ?2, finished_at = ?3 WHERE run_id = ?1 AND status = 'running'",
        params![id, step_status.as_str(), now],
    )
    .map_err(StoreError::sqlite_with(|| {
        format!("close steps of run {id}")
    }))?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn record_delivery(&self, d: NewDelivery) -> Result<Recorded, StoreError> {
        // The JSON columns are written here, on the caller's thread, not on
        // the writer thread that every delivery waits for; each event is
        // serialized once, for the delivery's list and for the runs it
        // queues.
        let skipped_json = to_json(&d.skipped);
        let headers_json = to_json(&d.headers);
        let event_jsons: Vec<String> = d.events.iter().map(to_json).collect();
        let events_json = format!("[{}]", event_jsons.join(","));
        let run_event_jsons: Vec<String> = d
            .runs
            .iter()
            .map(|run| match d.events.iter().position(|e| *e == run.event) {
                Some(k) => event_jsons[k].clone(),
                None => to_json(&run.event),
            })
            .collect();
        self.write_with_bodies(move |txn, bodies| {
            if let Some(pid) = &d.provider_delivery_id {
                let earlier: Option<(i64, String)> = txn
                    .prepare_cached(
                        "SELECT id, skipped FROM deliveries WHERE source = ?1 AND provider_delivery_id = ?2",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![d.source, pid], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                    })
                    .map_err(StoreError::sqlite("look up provider delivery id"))?;
                if let Some((id, skipped)) = earlier {
                    return Ok(Recorded {
                        delivery: id,
                        runs: runs_of_delivery(txn, id)?,
                        skipped: decode::<Vec<Skip>>("delivery skipped", id, &skipped)?.into(),
                        duplicate: true,
                        superseded: Vec::new(),
                        suppressed: Vec::new(),
                        cancel_running: Vec::new(),
                    });
                }
            }
            let body = bodies.append(&d.body);
            txn.prepare_cached(
                "INSERT INTO deliveries (source, event, provider_delivery_id, received_at, headers, body, events, skipped, replay_of,
                                         body_segment, body_offset, body_len)
                 VALUES (?1, ?2, ?3, ?4, ?5, X'', ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    d.source,
                    d.event_type,
                    d.provider_delivery_id,
                    d.received_at,
                    headers_json,
                    events_json,
                    skipped_json,
                    d.replay_of,
                    body.segment,
                    body.offset,
                    body.len,
                ])
            })
            .map_err(StoreError::sqlite_with(|| format!("insert delivery from source {}", d.source)))?;
            let delivery = txn.last_insert_rowid();
            let mut cancel_running = Vec::new();
            for u in &d.alert_updates {
                cancel_running.append(&mut apply_alert_update(txn, u, d.received_at)?);
            }
            let mut runs = Vec::with_capacity(d.runs.len());
            let mut superseded = Vec::new();
            let mut suppressed = Vec::new();
            let skipped_len = d.skipped.len();
            let mut skipped = d.skipped;
            for (run, event_json) in d.runs.iter().zip(&run_event_jsons) {
                let id = match insert_run(txn, Some(delivery), run, event_json, d.received_at)? {
                    Queued::Run(id, mut older) => {
                        superseded.append(&mut older);
                        id
                    }
                    Queued::Suppressed(id) => {
                        suppressed.push(id);
                        id
                    }
                    Queued::Skipped(reason) => {
                        skipped.push(Skip {
                            pipeline: run.pipeline.clone(),
                            reason,
                        });
                        continue;
                    }
                };
                runs.push(RunRef {
                    id,
                    pipeline: run.pipeline.clone(),
                });
            }
            if skipped.len() > skipped_len {
                exec(
                    txn,
                    "UPDATE deliveries SET skipped = ?2 WHERE id = ?1",
                    params![delivery, to_json(&skipped)],
                )
                .map_err(StoreError::sqlite("record guard-rail skips"))?;
            }
            Ok(Recorded {
                delivery,
                runs,
                skipped,
                duplicate: false,
                superseded,
                suppressed,
                cancel_running,
            })
        })
        .await
    }

    async fn recover(&self, now: i64, retry: RetryPolicy) -> Result<Vec<Recovered>, StoreError> {
        self.write(move |txn| {
            let left: Vec<(i64, String, i64)> = txn
                .prepare("SELECT id, pipeline, attempt FROM runs WHERE status = 'running' ORDER BY id")
                .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
                .map_err(StoreError::sqlite("find runs left running"))?;
            let mut out = Vec::with_capacity(left.len());
            for (id, pipeline, attempt) in left {
                let pgids: Vec<i32> = txn
                    .prepare_cached("SELECT pgid FROM steps WHERE run_id = ?1 AND status = 'running' AND pgid IS NOT NULL")
                    .and_then(|mut s| s.query_map([id], |r| r.get(0))?.collect())
                    .map_err(StoreError::sqlite_with(|| format!("read process groups of run {id}")))?;
                close_steps(txn, id, RunStatus::Interrupted, now)?;
                exec(
                    txn,
                    "UPDATE runs SET status = 'interrupted', finished_at = ?2,
                            reason = 'hookd stopped while the run was running'
                     WHERE id = ?1",
                    params![id, now],
                )
                .map_err(StoreError::sqlite_with(|| format!("mark run {id} interrupted")))?;
                let retry = match retry(&pipeline, attempt) {
                    Some(plan) => insert_retry(txn, id, plan, now)?,
                    None => None,
                };
                out.push(Recovered { id, pgids, retry });
            }
            // Escalations that were running: failed, their steps interrupted.
            let escalating: Vec<i64> = txn
                .prepare("SELECT id FROM runs WHERE escalation_status = 'running' ORDER BY id")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .map_err(StoreError::sqlite("find escalations left running"))?;
            for id in escalating {
                let pgids: Vec<i32> = txn
                    .prepare_cached("SELECT pgid FROM steps WHERE run_id = ?1 AND status = 'running' AND pgid IS NOT NULL")
                    .and_then(|mut s| s.query_map([id], |r| r.get(0))?.collect())
                    .map_err(StoreError::sqlite_with(|| format!("read process groups of run {id}")))?;
                close_steps(txn, id, RunStatus::Interrupted, now)?;
                exec(
                    txn,
                    "UPDATE runs SET escalation_status = 'failed',
                            escalation_reason = COALESCE(escalation_reason, '') || ' (interrupted: hookd stopped during the escalation)'
                     WHERE id = ?1",
                    [id],
                )
                .map_err(StoreError::sqlite_with(|| format!("mark the escalation of run {id} failed")))?;
                out.push(Recovered { id, pgids, retry: None });
            }
            Ok(out)
        })
        .await
    }

    async fn queue_run(&self, run: NewRun, now: i64) -> Result<Recorded, StoreError> {
        let event_json = to_json(&run.event);
        self.write(move |txn| {
            let (id, superseded) = match insert_run(txn, None, &run, &event_json, now)? {
                Queued::Run(id, superseded) => (id, superseded),
                Queued::Suppressed(id) => (id, Vec::new()),
                Queued::Skipped(reason) => {
                    return Ok(Recorded {
                        delivery: 0,
                        runs: Vec::new(),
                        skipped: vec![Skip {
                            pipeline: run.pipeline.clone(),
                            reason,
                        }]
                        .into(),
                        duplicate: false,
                        superseded: Vec::new(),
                        suppressed: Vec::new(),
                        cancel_running: Vec::new(),
                    })
                }
            };
            Ok(Recorded {
                delivery: 0,
                runs: vec![RunRef {
                    id,
                    pipeline: run.pipeline.clone(),
                }],
                skipped: SkipList::default(),
                duplicate: false,
                superseded,
                suppressed: Vec::new(),
                cancel_running: Vec::new(),
            })
        })
        .await
    }

    async fn queue_heads(&self, limit: usize) -> Result<Vec<QueuedRun>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(QUEUE_HEADS)
                .map_err(StoreError::sqlite("prepare queue heads"))?;
            queued_rows(&mut stmt, limit)
        })
        .await
    }

    async fn start_run(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        self.write(move |txn| {
            let n = exec(
                txn,
                "UPDATE runs SET status = 'running', started_at = ?2 WHERE id = ?1 AND status = 'queued'",
                params![id, now],
            )
            .map_err(StoreError::sqlite_with(|| format!("start run {id}")))?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_run_commit(&self, id: i64, commit: &str) -> Result<(), StoreError> {
        let commit = commit.to_string();
        self.write(move |txn| {
            exec(
                txn,
                "UPDATE runs SET commit_sha = ?2 WHERE id = ?1",
                params![id, commit],
            )
            .map_err(StoreError::sqlite_with(|| {
                format!("record commit of run {id}")
            }))?;
            Ok(())
        })
        .await
    }

    async fn step_started(
        &self,
        run: i64,
        idx: usize,
        name: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(move |txn| {
            exec(
                txn,
                "INSERT OR REPLACE INTO steps (run_id, idx, name, status, started_at)
                 VALUES (?1, ?2, ?3, 'running', ?4)",
                params![run, idx as i64, name, now],
            )
            .map_err(StoreError::sqlite_with(|| {
                format!("record start of step {idx} of run {run}")
            }))?;
            Ok(())
        })
        .await
    }

    async fn step_finished(
        &self,
        run: i64,
        idx: usize,
        status: StepStatus,
        exit_code: Option<i32>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            exec(
                txn,
                "UPDATE steps SET status = ?3, exit_code = ?4, finished_at = ?5
                 WHERE run_id = ?1 AND idx = ?2",
                params![run, idx as i64, status.as_str(), exit_code, now],
            )
            .map_err(StoreError::sqlite_with(|| {
                format!("record end of step {idx} of run {run}")
            }))?;
            Ok(())
        })
        .await
    }

    async fn set_step_pgid(&self, run: i64, idx: usize, pgid: i32) -> Result<(), StoreError> {
        self.write(move |txn| {
            exec(
                txn,
                "UPDATE steps SET pgid = ?3 WHERE run_id = ?1 AND idx = ?2",
                params![run, idx as i64, pgid],
            )
            .map_err(StoreError::sqlite_with(|| {
                format!("record process group of step {idx} of run {run}")
            }))?;
            Ok(())
        })
        .await
    }

    async fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        reason: Option<&str>,
        now: i64,
        then: AfterRun,
    ) -> Result<Option<i64>, StoreError> {
        let reason = reason.map(str::to_string);
        self.write(move |txn| {
            // A run ends once: a run already terminal (cancelled through the
            // API meanwhile, superseded) keeps the status it has.
            let n = exec(
                txn,
                "UPDATE runs SET status = ?2, reason = ?3, finished_at = ?4
                 WHERE id = ?1 AND status IN ('queued', 'running')",
                params![id, status.as_str(), reason, now],
            )
            .map_err(StoreError::sqlite_with(|| format!("finish run {id}")))?;
            if n == 0 {
                return Ok(None);
            }
            close_steps(txn, id, status, now)?;
            if let Some(why) = &then.escalate {
                exec(
                    txn,
                    "UPDATE runs SET escalation_reason = ?2, escalation_status = 'pending' WHERE id = ?1",
                    params![id, why],
                )
                .map_err(StoreError::sqlite_with(|| format!("mark the escalation of run {id}")))?;
            }
            if let Some(within) = then.verify_within_ms {
                // Resolved since the remediation started: effective at once.
                let resolved_meanwhile: bool = txn
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM runs r JOIN alerts a ON a.fingerprint = r.alert_fingerprint
                           WHERE r.id = ?1 AND a.status = 'resolved' AND a.resolved_at >= r.started_at)",
                        [id],
                        |r| r.get(0),
                    )
                    .map_err(StoreError::sqlite("look up the alert's state"))?;
                exec(
                    txn,
                    "UPDATE runs SET verify_until = ?2, effective = ?3 WHERE id = ?1",
                    params![id, now + within, resolved_meanwhile.then_some(1)],
                )
                .map_err(StoreError::sqlite_with(|| format!("open the verification of run {id}")))?;
            }
            match then.retry {
                Some(plan) => insert_retry(txn, id, plan, now),
                None => Ok(None),
            }
        })
        .await
    }

    async fn due_verifications(&self, now: i64) -> Result<Vec<(i64, String)>, StoreError> {
        self.write(move |txn| {
            let mut stmt = txn
                .prepare_cached(DUE_VERIFICATIONS)
                .map_err(StoreError::sqlite("prepare verification check"))?;
            let rows = stmt
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<Result<Vec<(i64, String)>, _>>())
                .map_err(StoreError::sqlite("close due verifications"))?;
            Ok(rows)
        })
        .await
    }

    async fn pending_escalations(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, pipeline FROM runs WHERE escalation_status = 'pending' ORDER BY id",
            )
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(StoreError::sqlite("list pending escalations"))
        })
        .await
    }

    async fn set_escalation(
        &self,
        id: i64,
        reason: &str,
        status: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (reason, status) = (reason.to_string(), status.to_string());
        self.write(move |txn| {
            exec(
                txn,
                "UPDATE runs SET escalation_reason = ?2, escalation_status = ?3,
                        escalated_at = CASE WHEN ?3 = 'running' THEN ?4 ELSE escalated_at END
                 WHERE id = ?1",
                params![id, reason, status, now],
            )
            .map_err(StoreError::sqlite_with(|| {
                format!("record the escalation of run {id}")
            }))?;
            Ok(())
        })
        .await
    }

    async fn cancel_queued(&self, id: i64, reason: &str, now: i64) -> Result<bool, StoreError> {
        let reason = reason.to_string();
        self.write(move |txn| {
            let n = exec(
                txn,
                "UPDATE runs SET status = 'cancelled', reason = ?2, finished_at = ?3
                 WHERE id = ?1 AND status = 'queued'",
                params![id, reason, now],
            )
            .map_err(StoreError::sqlite_with(|| {
                format!("cancel queued run {id}")
            }))?;
            Ok(n == 1)
        })
        .await
    }

    async fn last_success(
        &self,
        pipeline: &str,
        git_ref: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        let (pipeline, git_ref) = (pipeline.to_string(), git_ref.to_string());
        self.read(move |conn| {
            conn.query_row(
                "SELECT id, commit_sha FROM runs
                 WHERE pipeline = ?1 AND git_ref = ?2 AND status = 'succeeded' AND commit_sha IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                params![pipeline, git_ref],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(StoreError::sqlite_with(|| format!("find the last success of {pipeline} on {git_ref}")))
        })
        .await
    }

    async fn prune(
        &self,
        now: i64,
        max_age_ms: Option<i64>,
        max_runs_per_pipeline: Option<usize>,
    ) -> Result<Pruned, StoreError> {
        let (pruned, current, referenced) = self.write_with_bodies(move |txn, bodies| {
            // Finished, and nothing still depends on the row: no pending or
            // running escalation, no open verification, and no alert still
            // firing (its runs anchor the episode dedupe and max_runs window).
            let terminal = "status NOT IN ('queued', 'running')
                AND COALESCE(escalation_status, '') NOT IN ('pending', 'running')
                AND NOT (effective IS NULL AND verify_until IS NOT NULL)
                AND NOT (alert_fingerprint IS NOT NULL AND EXISTS
                    (SELECT 1 FROM alerts a WHERE a.fingerprint = alert_fingerprint AND a.status = 'firing'))";
            let mut doomed: Vec<i64> = Vec::new();
            if let Some(age) = max_age_ms {
                let mut ids: Vec<i64> = txn
                    .prepare(&format!("SELECT id FROM runs WHERE {terminal} AND created_at < ?1"))
                    .and_then(|mut s| s.query_map([now - age], |r| r.get(0))?.collect())
                    .map_err(StoreError::sqlite("find runs past max_age"))?;
                doomed.append(&mut ids);
            }
            if let Some(keep) = max_runs_per_pipeline {
                let mut ids: Vec<i64> = txn
                    .prepare(&format!(
                        "SELECT id FROM (
                           SELECT id, {terminal} AS done,
                                  ROW_NUMBER() OVER (PARTITION BY pipeline ORDER BY id DESC) AS rank
                           FROM runs)
                         WHERE done AND rank > ?1"
                    ))
                    .and_then(|mut s| s.query_map([keep as i64], |r| r.get(0))?.collect())
                    .map_err(StoreError::sqlite("find runs past max_runs_per_pipeline"))?;
                doomed.append(&mut ids);
            }
            doomed.sort_unstable();
            doomed.dedup();
            if !doomed.is_empty() {
                // Set-wise, the ids bound as one JSON array: per run,
                // clearing the links (retry_of and superseded_by have no
                // index) read the whole runs table twice, and a prune of
                // thousands of runs held the writer for minutes.
                let ids = to_json(&doomed);
                [
                    "UPDATE runs SET retry_of = NULL WHERE retry_of IN (SELECT value FROM json_each(?1))",
                    "UPDATE runs SET superseded_by = NULL WHERE superseded_by IN (SELECT value FROM json_each(?1))",
                    "DELETE FROM steps WHERE run_id IN (SELECT value FROM json_each(?1))",
                    "DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?1))",
                ]
                .iter()
                .try_for_each(|sql| exec(txn, sql, [&ids]).map(|_| ()))
                .map_err(StoreError::sqlite_with(|| format!("delete {} runs", doomed.len())))?;
            }
            let deliveries = match max_age_ms {
                Some(age) => exec(
                    txn,
                    "UPDATE deliveries SET replay_of = NULL WHERE replay_of IN
                       (SELECT id FROM deliveries d WHERE received_at < ?1
                          AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.delivery_id = d.id))",
                    [now - age],
                )
                    .and_then(|_| {
                        exec(
                            txn,
                            "DELETE FROM deliveries WHERE received_at < ?1
                               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.delivery_id = deliveries.id)",
                            [now - age],
                        )
                    })
                    .map_err(StoreError::sqlite("delete deliveries past max_age"))?,
                None => 0,
            };
            // Decided here, on the writer: every row committed after this
            // job points into `current` or a newer segment, so what is
            // older and unreferenced now stays unreferenced.
            let current = bodies.current();
            let referenced: Vec<i64> = txn
                .prepare_cached(
                    "SELECT DISTINCT body_segment FROM deliveries WHERE body_segment IS NOT NULL",
                )
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .map_err(StoreError::sqlite("find the body segments in use"))?;
            Ok((Pruned { runs: doomed, deliveries }, current, referenced))
        })
        .await?;
        // Only now that the deletions are committed may the files go.
        let dir = self.bodies.clone();
        let segments = tokio::task::spawn_blocking(move || {
            bodies::delete_unreferenced(&dir, &referenced, current)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        if segments > 0 {
            tracing::info!(segments, "deleted body segments no stored delivery needs");
        }
        Ok(pruned)
    }

    async fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        self.read(move |conn| {
            let raw = conn
                .query_row(
                    &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                    [id],
                    run_from_row,
                )
                .optional()
                .map_err(StoreError::sqlite_with(|| format!("read run {id}")))?;
            let Some(raw) = raw else { return Ok(None) };
            let mut run = finish_run_row(raw)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, status, exit_code, started_at, finished_at FROM steps
                     WHERE run_id = ?1 ORDER BY idx",
                )
                .map_err(StoreError::sqlite("prepare steps"))?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                })
                .map_err(StoreError::sqlite_with(|| {
                    format!("read steps of run {id}")
                }))?;
            for row in rows {
                let (name, status, exit_code, started_at, finished_at) =
                    row.map_err(StoreError::sqlite_with(|| {
                        format!("read steps of run {id}")
                    }))?;
                let status = StepStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
                    what: "step status",
                    id,
                    reason: format!("unknown status {status:?}"),
                })?;
                run.steps.push(StepRecord {
                    name,
                    status,
                    exit_code,
                    started_at,
                    finished_at,
                });
            }
            Ok(Some(run))
        })
        .await
    }

    async fn runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.read(move |conn| {
            let limit = filter.limit.clamp(1, 1000) as i64;
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE (?1 IS NULL OR pipeline = ?1)
                       AND (?2 IS NULL OR status = ?2)
                       AND (?3 IS NULL OR id < ?3)
                     ORDER BY id DESC LIMIT ?4"
                ))
                .map_err(StoreError::sqlite("prepare run listing"))?;
            let rows = stmt
                .query_map(
                    params![
                        filter.pipeline,
                        filter.status.map(RunStatus::as_str),
                        filter.before_id,
                        limit
                    ],
                    run_from_row,
                )
                .map_err(StoreError::sqlite("list runs"))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(finish_run_row(
                    row.map_err(StoreError::sqlite("read run row"))?,
                )?);
            }
            Ok(out)
        })
        .await
    }

    async fn delivery(&self, id: i64) -> Result<Option<DeliveryRecord>, StoreError> {
        self.read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT source, event, received_at, provider_delivery_id, headers, events, skipped, replay_of
                     FROM deliveries WHERE id = ?1",
                    [id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, String>(6)?,
                            r.get::<_, Option<i64>>(7)?,
                        ))
                    },
                )
                .optional()
                .map_err(StoreError::sqlite_with(|| format!("read delivery {id}")))?;
            let Some((source, event, received_at, provider_delivery_id, headers, events, skipped, replay_of)) = row
            else {
                return Ok(None);
            };
            Ok(Some(DeliveryRecord {
                id,
                source,
                event,
                received_at,
                provider_delivery_id,
                headers: decode("delivery headers", id, &headers)?,
                events: decode("delivery events", id, &events)?,
                runs: runs_of_delivery(conn, id)?,
                skipped: decode("delivery skipped", id, &skipped)?,
                replay_of,
            }))
        })
        .await
    }

    async fn delivery_body(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let dir = self.bodies.clone();
        self.read(move |conn| {
            let row: Option<(Vec<u8>, Option<i64>, Option<i64>, Option<i64>)> = conn
                .query_row(
                    "SELECT body, body_segment, body_offset, body_len FROM deliveries WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(StoreError::sqlite_with(|| format!("read body of delivery {id}")))?;
            match row {
                None => Ok(None),
                // Stored before schema version 4: in the row itself.
                Some((inline, None, _, _)) => Ok(Some(inline)),
                Some((_, Some(segment), Some(offset), Some(len))) => bodies::read(
                    &dir,
                    BodyRef {
                        segment,
                        offset,
                        len,
                    },
                )
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: "delivery body",
                    id,
                    reason: e.to_string(),
                }),
                Some(_) => Err(StoreError::Corrupt {
                    what: "delivery body location",
                    id,
                    reason: "body_segment set without body_offset and body_len".into(),
                }),
            }
        })
        .await
    }

    async fn count_runs(&self, filter: RunFilter) -> Result<u64, StoreError> {
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached(&count_runs_sql(&filter))
                .and_then(|mut s| {
                    s.query_row(rusqlite::params_from_iter(filter.pipeline.iter()), |r| {
                        r.get(0)
                    })
                })
                .map_err(StoreError::sqlite("count runs"))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.read(move |conn| {
            let limit = filter.limit.clamp(1, 1000) as i64;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, source, event, received_at, provider_delivery_id, headers, events, skipped, replay_of
                     FROM deliveries
                     WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR id < ?2)
                     ORDER BY id DESC LIMIT ?3",
                )
                .map_err(StoreError::sqlite("prepare delivery listing"))?;
            let rows = stmt
                .query_map(params![filter.source, filter.before_id, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, Option<i64>>(8)?,
                    ))
                })
                .map_err(StoreError::sqlite("list deliveries"))?;
            let mut out = Vec::new();
            for row in rows {
                let (
                    id,
                    source,
                    event,
                    received_at,
                    provider_delivery_id,
                    headers,
                    events,
                    skipped,
                    replay_of,
                ) = row.map_err(StoreError::sqlite("read delivery row"))?;
                out.push(DeliveryRecord {
                    id,
                    source,
                    event,
                    received_at,
                    provider_delivery_id,
                    headers: decode("delivery headers", id, &headers)?,
                    events: decode("delivery events", id, &events)?,
                    runs: runs_of_delivery(conn, id)?,
                    skipped: decode("delivery skipped", id, &skipped)?,
                    replay_of,
                });
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, PushEvent};
    use crate::store::NewRun;

    fn delivery(pid: Option<&str>, pipelines: &[&str]) -> NewDelivery {
        let event = Event::Push(PushEvent::new(
            "acme/infra".into(),
            "refs/heads/main".into(),
            "a1",
            "b2",
            None,
            None,
        ));
        NewDelivery {
            source: "github".into(),
            event_type: "push".into(),
            provider_delivery_id: pid.map(str::to_string),
            received_at: 1_700_000_000_000,
            headers: vec![("x-github-event".into(), "push".into())],
            body: b"{\"ref\":\"refs/heads/main\"}".to_vec(),
            events: vec![event.clone()],
            skipped: vec![Skip {
                pipeline: "other".into(),
                reason: "branch \"main\" matches none of branches [dev]".into(),
            }]
            .into(),
            runs: pipelines
                .iter()
                .map(|p| NewRun {
                    pipeline: p.to_string(),
                    concurrency_group: p.to_string(),
                    trigger: "push".into(),
                    event: event.clone(),
                    git_ref: Some("refs/heads/main".into()),
                    commit: Some("b2".into()),
                    origin: RunOrigin::Webhook,
                    supersede: false,
                    alert: None,
                })
                .collect(),
            replay_of: None,
            alert_updates: Vec::new(),
        }
    }

    #[tokio::test]
    async fn deliveries_and_runs_round_trip_and_dedupe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let first = store
            .record_delivery(delivery(Some("g-1"), &["deploy", "lint"]))
            .await
            .expect("record");
        assert!(!first.duplicate);
        assert_eq!(first.runs.len(), 2);
        let again = store
            .record_delivery(delivery(Some("g-1"), &["deploy", "lint"]))
            .await
            .expect("record duplicate");
        assert!(again.duplicate);
        assert_eq!(again.delivery, first.delivery);
        assert_eq!(again.runs, first.runs);
        assert_eq!(again.skipped, first.skipped);
        // Without a provider id nothing is deduplicated.
        let other = store
            .record_delivery(delivery(None, &["deploy"]))
            .await
            .expect("record");
        assert_ne!(other.delivery, first.delivery);

        let d = store
            .delivery(first.delivery)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(d.provider_delivery_id.as_deref(), Some("g-1"));
        assert_eq!(d.runs, first.runs);
        assert_eq!(
            store.delivery_body(first.delivery).await.expect("body"),
            Some(b"{\"ref\":\"refs/heads/main\"}".to_vec())
        );
        let mut queued: Vec<i64> = store
            .runs(RunFilter {
                status: Some(RunStatus::Queued),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("queued")
            .iter()
            .map(|r| r.id)
            .collect();
        queued.sort_unstable();
        assert_eq!(queued, vec![1, 2, 3]);
    }

    /// The scheduler reads one head per concurrency group, in queue order,
    /// and a retry heads its group from its original's place.
    #[tokio::test]
    async fn queue_heads_are_the_first_queued_run_of_each_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let mut ids = Vec::new();
        for (i, pipeline) in ["deploy", "lint", "deploy", "deploy", "lint", "docs"]
            .iter()
            .enumerate()
        {
            let d = delivery(Some(&format!("q-{i}")), &[pipeline]);
            ids.push(store.record_delivery(d).await.expect("record").runs[0].id);
        }
        let heads = |limit| {
            let store = &store;
            async move {
                store
                    .queue_heads(limit)
                    .await
                    .expect("heads")
                    .into_iter()
                    .map(|q| (q.id, q.concurrency_group))
                    .collect::<Vec<_>>()
            }
        };
        let deploy = |id: i64| (id, "deploy".to_string());
        let lint = |id: i64| (id, "lint".to_string());
        let docs = |id: i64| (id, "docs".to_string());
        assert_eq!(
            heads(10).await,
            vec![deploy(ids[0]), lint(ids[1]), docs(ids[5])]
        );
        assert_eq!(heads(2).await, vec![deploy(ids[0]), lint(ids[1])]);

        // deploy's head starts and fails; its retry goes back to the head of
        // the queue (seq = the original's id), before the deploys behind it.
        assert!(store.start_run(ids[0], 1).await.expect("start"));
        assert_eq!(
            heads(10).await,
            vec![lint(ids[1]), deploy(ids[2]), docs(ids[5])]
        );
        let retry = fail_with_retry(&store, ids[0], 2, 3, false).await;
        assert_eq!(
            heads(10).await,
            vec![deploy(retry), lint(ids[1]), docs(ids[5])]
        );
        assert_eq!(heads(10).await.len(), 3);
        assert!(store
            .cancel_queued(ids[5], "test", 4)
            .await
            .expect("cancel"));
        assert_eq!(heads(10).await, vec![deploy(retry), lint(ids[1])]);
    }

    /// A configured, migrated write connection to `hookd.db` in a new
    /// temporary directory, without the store's threads.
    fn migrated_connection() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hookd.db");
        let mut conn = Connection::open(&path).expect("open");
        configure(&conn, &path).expect("configure");
        migrate(&mut conn, &path).expect("migrate");
        (dir, conn)
    }

    /// A cycle whose WAL could not start over (a reader used it) does not
    /// start the next one until the threshold's worth of frames more; once
    /// the WAL started over, cycles count from nothing again.
    #[test]
    fn a_cycle_left_behind_by_a_reader_waits_for_a_thresholds_worth_more() {
        let (dir, conn) = migrated_connection();
        let insert = |n: usize| {
            for i in 0..n {
                conn.execute(
                    "INSERT INTO alerts (fingerprint, status, updated_at) VALUES (?1, 'firing', 0)",
                    [format!("{i}-{}", rand_tag())],
                )
                .expect("insert");
            }
        };
        insert(20);
        // A reader whose snapshot includes those frames keeps the WAL from
        // starting over.
        let reader = Connection::open(dir.path().join("hookd.db")).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let _: i64 = reader
            .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
            .expect("read");
        let cycle = WalCycle::new(10);
        let (wake, woken) = mpsc::sync_channel(1);
        let wal_frames = || match wal_checkpoint(&conn, CheckpointMode::Passive) {
            Checkpoint::Ran { frames, .. } => i32::try_from(frames).expect("frames"),
            _ => panic!("checkpoint"),
        };
        let frames = wal_frames();
        assert!(frames >= 10, "{frames}");
        cycle.frames.store(frames, Ordering::Relaxed);
        cycle.after_commit(&conn, &wake);
        assert!(woken.try_recv().is_ok(), "{frames} frames start a cycle");
        // The checkpoint thread's part, then the writer's.
        cycle.stage.store(WalCycle::COPIED, Ordering::Release);
        cycle.after_commit(&conn, &wake);
        assert_eq!(cycle.stage.load(Ordering::Acquire), WalCycle::IDLE);
        assert_eq!(cycle.base.load(Ordering::Relaxed), frames);
        // Not started over (the reader): a few frames more start nothing.
        cycle.frames.store(frames + 9, Ordering::Relaxed);
        cycle.after_commit(&conn, &wake);
        assert!(woken.try_recv().is_err(), "a new cycle after 9 frames");
        cycle.frames.store(frames + 10, Ordering::Relaxed);
        cycle.after_commit(&conn, &wake);
        assert!(woken.try_recv().is_ok(), "no cycle after 10 frames more");
        // Started over: counted from nothing.
        cycle.stage.store(WalCycle::IDLE, Ordering::Release);
        cycle.frames.store(3, Ordering::Relaxed);
        cycle.after_commit(&conn, &wake);
        assert_eq!(cycle.base.load(Ordering::Relaxed), 0);
        assert!(woken.try_recv().is_err());
        cycle.frames.store(10, Ordering::Relaxed);
        cycle.after_commit(&conn, &wake);
        assert!(woken.try_recv().is_ok());
        reader.execute_batch("COMMIT").expect("end read");
    }

    fn rand_tag() -> u64 {
        use std::sync::atomic::AtomicU64;
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    /// Past its bound the WAL is checkpointed once and starts again from
    /// nothing; the batches after that do not checkpoint again until it has
    /// grown past the bound anew.
    #[test]
    fn the_wal_is_truncated_once_past_its_bound_not_after_every_batch() {
        let (dir, conn) = migrated_connection();
        let wal = dir.path().join("hookd.db-wal");
        let limit = 256 * 1024;
        let write = |conn: &Connection, n: usize| {
            for i in 0..n {
                conn.execute(
                    "INSERT INTO alerts (fingerprint, status, updated_at) VALUES (?1, 'firing', 0)",
                    [format!("{i:0>2000}")],
                )
                .expect("insert");
            }
        };
        write(&conn, 200);
        assert!(std::fs::metadata(&wal).expect("wal").len() > limit);
        assert_eq!(restart_wal_if_large(&conn, &wal, limit), WalRestart::Done);
        assert_eq!(std::fs::metadata(&wal).expect("wal").len(), 0);
        // The next small commit finds the WAL within its bound.
        conn.execute("DELETE FROM alerts WHERE rowid = 1", [])
            .expect("delete");
        assert_eq!(
            restart_wal_if_large(&conn, &wal, limit),
            WalRestart::NotNeeded
        );
        let count: i64 = conn
            .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
            .expect("count");
        assert_eq!(count, 199, "nothing lost through the checkpoint");
    }

    /// A reader keeping an old snapshot blocks the truncation; the writer
    /// does not wait the busy timeout for it, and truncates once it is gone.
    #[test]
    fn a_reader_blocks_the_wal_truncation_without_holding_the_writer() {
        let (dir, conn) = migrated_connection();
        let wal = dir.path().join("hookd.db-wal");
        let limit = 64 * 1024;
        let write = |n: usize, from: usize| {
            for i in from..from + n {
                conn.execute(
                    "INSERT INTO alerts (fingerprint, status, updated_at) VALUES (?1, 'firing', 0)",
                    [format!("{i:0>2000}")],
                )
                .expect("insert");
            }
        };
        write(20, 0);
        let reader = Connection::open(dir.path().join("hookd.db")).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
            .expect("read");
        assert_eq!(seen, 20);
        write(100, 20);
        let started = std::time::Instant::now();
        let outcome = restart_wal_if_large(&conn, &wal, limit);
        assert!(matches!(outcome, WalRestart::Blocked { .. }), "{outcome:?}");
        assert!(
            started.elapsed() < BUSY_TIMEOUT / 5,
            "the writer waited {:?} for the reader",
            started.elapsed()
        );
        reader.execute_batch("COMMIT").expect("end the read");
        assert_eq!(restart_wal_if_large(&conn, &wal, limit), WalRestart::Done);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 120);
    }

    /// The counts `/metrics` asks for on every scrape read an index of the
    /// few runs they count, not the whole runs table.
    #[test]
    fn the_metrics_counts_use_the_partial_indexes() {
        let (_dir, conn) = migrated_connection();
        let plan = |status| {
            let sql = count_runs_sql(&RunFilter {
                status: Some(status),
                ..Default::default()
            });
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .and_then(|mut s| {
                    s.query_map([], |r| r.get::<_, String>(3))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .expect("plan")
                .join("; ")
        };
        assert!(
            plan(RunStatus::Queued).contains("runs_queue"),
            "{}",
            plan(RunStatus::Queued)
        );
        assert!(
            plan(RunStatus::Running).contains("runs_running"),
            "{}",
            plan(RunStatus::Running)
        );
    }

    /// The once-a-second check of verification windows reads only runs
    /// being verified, not the whole table (it runs on the writer).
    #[test]
    fn due_verifications_use_their_partial_index() {
        let (_dir, conn) = migrated_connection();
        let plan = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {DUE_VERIFICATIONS}"))
            .and_then(|mut s| {
                s.query_map([0], |r| r.get::<_, String>(3))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("plan")
            .join("; ");
        assert!(plan.contains("runs_verifying"), "{plan}");
        assert!(!plan.contains("SCAN runs"), "{plan}");
    }

    /// Under a steady stream of commits the WAL starts over once per
    /// checkpoint cycle (the file stays near the cycle's size), where a
    /// checkpoint beside the writer alone let it grow to the truncation
    /// bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_steady_writes_the_wal_starts_over_every_cycle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let frames = 64;
        let store = Arc::new(SqliteStore::open_tuned(dir.path(), MAX_BATCH, frames).expect("open"));
        let wal = dir.path().join("hookd.db-wal");
        // Eight writers, never pausing, so that commits follow each other
        // while the checkpoint thread copies.
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in 0..250 {
                    let d = delivery(Some(&format!("w-{w}-{i}")), &["deploy", "other"]);
                    store.record_delivery(d).await.expect("record");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task");
        }
        // What 2,000 deliveries wrote to the WAL, far past the file's size.
        let written = {
            let conn = Connection::open(store.path()).expect("connect");
            conn.query_row("SELECT count(*) FROM deliveries", [], |r| {
                r.get::<_, i64>(0)
            })
            .expect("count")
        };
        assert_eq!(written, 2000);
        let wal_bytes = std::fs::metadata(&wal).expect("wal").len();
        // A cycle starts at 64 frames (256 KiB); the checkpoint thread's
        // copy, its pause and the writer's rest take more commits, many
        // more on a loaded machine. Without restarts these 2,000 deliveries
        // leave some 35 MB of WAL.
        let bound = 4 * 1024 * 1024;
        assert!(
            wal_bytes <= bound,
            "the WAL grew to {wal_bytes} bytes (bound {bound}): it did not start over"
        );
        let conn = Connection::open(store.path()).expect("connect");
        // The store's checkpoint thread may still be finishing the last
        // cycle and hold the checkpoint lock (busy): try again, a bounded
        // number of times.
        let mut outcome = (1, -1, -1);
        for _ in 0..100 {
            outcome = conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .expect("checkpoint");
            if outcome.0 == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let (busy, log, done): (i64, i64, i64) = outcome;
        assert_eq!(
            (busy, log),
            (0, done),
            "a final checkpoint copies what is left"
        );
        assert_references_intact(&store);
    }

    /// The dispatcher's query is parsed and planned once per connection,
    /// not on every wake-up (a bound LIMIT made SQLite re-prepare it).
    #[test]
    fn queue_heads_is_not_re_prepared_per_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let conn = Connection::open(store.path()).expect("connect");
        let mut stmt = conn.prepare_cached(QUEUE_HEADS).expect("prepare");
        for _ in 0..3 {
            queued_rows(&mut stmt, 5).expect("heads");
        }
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 3);
    }

    /// Every declared reference points at an existing row (foreign keys are
    /// not enforced at run time; see `configure`).
    pub(super) fn assert_references_intact(store: &SqliteStore) {
        let dangling: Vec<(String, i64, String)> = Connection::open(store.path())
            .and_then(|c| {
                c.prepare("PRAGMA foreign_key_check")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .expect("foreign_key_check");
        assert!(dangling.is_empty(), "dangling references: {dangling:?}");
    }

    /// Ends run `id` as failed at `now` with a retry due at `not_before`;
    /// the retry's id.
    async fn fail_with_retry(
        store: &SqliteStore,
        id: i64,
        now: i64,
        not_before: i64,
        only_if_no_newer: bool,
    ) -> i64 {
        let then = AfterRun {
            retry: Some(RetryPlan {
                not_before,
                only_if_no_newer,
            }),
            ..AfterRun::default()
        };
        store
            .finish_run(id, RunStatus::Failed, Some("exit 1"), now, then)
            .await
            .expect("finish")
            .expect("a retry")
    }

    /// The writes that set or remove links (supersede, retry, step rows,
    /// pruning) leave no dangling reference behind.
    #[tokio::test]
    async fn links_stay_intact_through_supersede_retry_and_prune() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let superseding = |pid: &str| {
            let mut d = delivery(Some(pid), &["apply"]);
            d.runs[0].supersede = true;
            d
        };
        let first = store.record_delivery(superseding("1")).await.expect("1");
        let second = store.record_delivery(superseding("2")).await.expect("2");
        let (r1, r2) = (first.runs[0].id, second.runs[0].id);
        assert_eq!(second.superseded, vec![r1]);
        assert_references_intact(&store);

        assert!(store.start_run(r2, 10).await.expect("start"));
        store.step_started(r2, 0, "apply", 10).await.expect("step");
        let retry = fail_with_retry(&store, r2, 20, 30, true).await;
        assert_eq!(
            store
                .run(retry)
                .await
                .expect("read")
                .expect("retry")
                .retry_of,
            Some(r2)
        );
        assert_references_intact(&store);

        // Keep one run per pipeline: r1 and r2 go, the queued retry stays
        // and loses its link to r2.
        let pruned = store
            .prune(1_800_000_000_000, None, Some(1))
            .await
            .expect("prune");
        assert_eq!(pruned.runs, vec![r1, r2]);
        assert_eq!(
            store
                .run(retry)
                .await
                .expect("read")
                .expect("kept")
                .retry_of,
            None
        );
        assert_references_intact(&store);
    }

    #[tokio::test]
    async fn run_lifecycle_and_crash_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let rec = store
            .record_delivery(delivery(None, &["a", "b"]))
            .await
            .expect("record");
        let (a, b) = (rec.runs[0].id, rec.runs[1].id);
        assert!(store.start_run(a, 10).await.expect("start"));
        assert!(
            !store.start_run(a, 11).await.expect("start twice"),
            "only queued runs start"
        );
        store.step_started(a, 0, "plan", 12).await.expect("step");
        store
            .step_finished(a, 0, StepStatus::Succeeded, Some(0), 13)
            .await
            .expect("step end");
        store.step_started(a, 1, "apply", 14).await.expect("step");
        store.set_run_commit(a, "c3").await.expect("commit");
        assert!(store.start_run(b, 15).await.expect("start"));
        store
            .finish_run(b, RunStatus::Failed, Some("boom"), 16, AfterRun::default())
            .await
            .expect("finish");
        drop(store);

        // "Crash": reopen; the running run becomes interrupted, with its running step.
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let recovered = store
            .recover(20, Box::new(|_, _| None))
            .await
            .expect("recover");
        assert_eq!(recovered.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a]);
        let run = store.run(a).await.expect("read").expect("exists");
        assert_eq!(run.status, RunStatus::Interrupted);
        assert_eq!(run.commit.as_deref(), Some("c3"));
        assert_eq!(run.steps.len(), 2);
        assert_eq!(run.steps[0].exit_code, Some(0));
        assert_eq!(run.steps[1].status, StepStatus::Interrupted);
        let failed = store
            .runs(RunFilter {
                status: Some(RunStatus::Failed),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].reason.as_deref(), Some("boom"));
        let by_pipeline = store
            .runs(RunFilter {
                pipeline: Some("a".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(
            by_pipeline.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![a]
        );
    }

    #[tokio::test]
    async fn concurrent_writes_are_group_committed_and_all_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .record_delivery(delivery(Some(&format!("id-{i}")), &["p"]))
                    .await
            }));
        }
        for t in tasks {
            t.await.expect("join").expect("record");
        }
        let count: i64 = Connection::open(dir.path().join("hookd.db"))
            .and_then(|c| c.query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0)))
            .expect("count");
        assert_eq!(count, 200);
    }

    #[tokio::test]
    async fn deliveries_list_newest_first_with_filters_and_paging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut d = delivery(Some(&format!("l-{i}")), &["deploy"]);
            if i % 2 == 1 {
                d.source = "gitlab".into();
            }
            ids.push(store.record_delivery(d).await.expect("record").delivery);
        }
        let all = store
            .deliveries(DeliveryFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(
            all.iter().map(|d| d.id).collect::<Vec<_>>(),
            ids.iter().rev().copied().collect::<Vec<_>>()
        );
        assert_eq!(all[0].runs.len(), 1);
        assert_eq!(all[0].skipped[0].pipeline, "other");
        let page = store
            .deliveries(DeliveryFilter {
                source: Some("github".into()),
                before_id: Some(ids[4]),
                limit: 1,
            })
            .await
            .expect("page");
        assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[2]]);
        assert_eq!(
            store
                .count_runs(RunFilter {
                    status: Some(RunStatus::Queued),
                    before_id: Some(1),
                    limit: 1,
                    ..Default::default()
                })
                .await
                .expect("count"),
            5,
            "count ignores paging"
        );
        assert_eq!(
            store
                .count_runs(RunFilter {
                    pipeline: Some("nope".into()),
                    ..Default::default()
                })
                .await
                .expect("count"),
            0
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(SqliteStore::open(dir.path()).expect("open"));
        Connection::open(dir.path().join("hookd.db"))
            .and_then(|c| c.pragma_update(None, "user_version", 99))
            .expect("bump version");
        let err = SqliteStore::open(dir.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("schema version 99 is newer"), "{err}");
    }

    /// Jobs share one transaction without savepoints: a job that fails
    /// without changing rows costs only itself; one that fails after
    /// changing rows rolls its whole batch back (every job run in it fails)
    /// and the jobs after it run in the next batch.
    #[test]
    fn a_job_failing_after_changes_rolls_back_its_batch_and_the_rest_run_next() {
        let (dir, conn) = migrated_connection();
        let bodies = BodyLog::open(&dir.path().join("bodies"), None).expect("bodies");
        let answers: Arc<Mutex<Vec<(usize, bool)>>> = Arc::default();
        let (tx, rx) = mpsc::channel::<Job>();
        // (insert a row?, then fail?)
        let plan = [(true, false), (false, true), (true, true), (true, false)];
        for (i, (insert, fail)) in plan.into_iter().enumerate() {
            let answers = Arc::clone(&answers);
            let job: Job = Box::new(move |txn: &Transaction, _: &mut BodyLog| {
                if insert {
                    txn.execute(
                        "INSERT INTO alerts (fingerprint, status, updated_at) VALUES (?1, 'firing', 1)",
                        [format!("job-{i}")],
                    )
                    .expect("insert");
                }
                let done: Completion = Box::new(move |commit| {
                    if let Ok(mut a) = answers.lock() {
                        a.push((i, commit.is_ok() && !fail));
                    }
                });
                (!fail, done)
            });
            tx.send(job).expect("queue job");
        }
        drop(tx);
        let (wake, _wakes) = mpsc::sync_channel(1);
        writer_loop(
            conn,
            bodies,
            dir.path().join("hookd.db-wal"),
            rx,
            512,
            (Arc::new(WalCycle::new(CHECKPOINT_FRAMES)), wake),
        );

        let mut answers = answers.lock().expect("answers").clone();
        answers.sort_unstable();
        assert_eq!(answers, vec![(0, false), (1, false), (2, false), (3, true)]);
        let rows: Vec<String> = Connection::open(dir.path().join("hookd.db"))
            .expect("reopen")
            .prepare("SELECT fingerprint FROM alerts ORDER BY fingerprint")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("rows");
        assert_eq!(rows, vec!["job-3".to_string()]);
    }

    /// A database written by schema version 3 (bodies inside the rows)
    /// migrates, and its bodies read back next to new segment-file ones.
    #[tokio::test]
    async fn bodies_stored_before_segments_still_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hookd.db");
        {
            let conn = Connection::open(&path).expect("open v3");
            for (i, sql) in MIGRATIONS[..3].iter().enumerate() {
                conn.execute_batch(sql).expect("migration");
                conn.pragma_update(None, "user_version", (i + 1) as i64)
                    .expect("version");
            }
            conn.execute(
                "INSERT INTO deliveries (source, event, received_at, headers, body, events, skipped)
                 VALUES ('github', 'push', 1, '[]', X'6F6C64', '[]', '[]')",
                [],
            )
            .expect("old row");
        }
        let store = SqliteStore::open(dir.path()).expect("migrate");
        let new = store
            .record_delivery(delivery(Some("n"), &[]))
            .await
            .expect("new");
        assert_eq!(
            store.delivery_body(1).await.expect("old"),
            Some(b"old".to_vec())
        );
        assert_eq!(
            store.delivery_body(new.delivery).await.expect("new"),
            Some(b"{\"ref\":\"refs/heads/main\"}".to_vec())
        );
        assert_eq!(store.delivery_body(99).await.expect("none"), None);
    }

    /// A segment file removed by hand: its number is not reused after a
    /// restart, so rows that pointed into it never read other bodies.
    #[tokio::test]
    async fn a_removed_segment_number_is_never_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let first = store
            .record_delivery(delivery(Some("a"), &[]))
            .await
            .expect("a");
        store.close();
        drop(store);
        for s in bodies::segments(&dir.path().join("bodies")).expect("list") {
            std::fs::remove_file(bodies::segment_path(&dir.path().join("bodies"), s))
                .expect("remove");
        }
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let mut other = delivery(Some("b"), &[]);
        other.body = b"another body".to_vec();
        let second = store.record_delivery(other).await.expect("b");
        let err = store
            .delivery_body(first.delivery)
            .await
            .expect_err("its segment is gone");
        assert!(err.to_string().contains("deleted by hand"), "{err}");
        assert_eq!(
            store.delivery_body(second.delivery).await.expect("b"),
            Some(b"another body".to_vec())
        );
    }

    /// A body that cannot be written fails its delivery and stores nothing
    /// of it (no row, no run); the next delivery goes to a new segment, and
    /// a retry of the failed one is stored, not taken for a duplicate.
    #[tokio::test]
    async fn a_failed_body_write_stores_nothing_and_the_next_batch_moves_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let first = store
            .record_delivery(delivery(Some("a"), &["apply"]))
            .await
            .expect("a");
        let segment = bodies::segments(&dir.path().join("bodies")).expect("list")[0];
        // After a restart the log appends to a new segment, created at its
        // first write: a directory in its place makes that write fail.
        store.close();
        drop(store);
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let next = bodies::segment_path(&dir.path().join("bodies"), segment + 1);
        std::fs::create_dir(&next).expect("block the next segment");
        let err = store
            .record_delivery(delivery(Some("b"), &["apply"]))
            .await
            .expect_err("the body cannot be written");
        assert!(err.to_string().contains(".seg"), "{err}");
        let conn = Connection::open(dir.path().join("hookd.db")).expect("inspect");
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        assert_eq!(count("SELECT count(*) FROM deliveries"), 1);
        assert_eq!(count("SELECT count(*) FROM runs"), 1);

        let retried = store
            .record_delivery(delivery(Some("b"), &["apply"]))
            .await
            .expect("the next batch writes a new segment");
        assert!(!retried.duplicate);
        assert_eq!(retried.runs.len(), 1);
        assert_eq!(
            store.delivery_body(retried.delivery).await.expect("b"),
            Some(b"{\"ref\":\"refs/heads/main\"}".to_vec())
        );
        assert_eq!(
            store.delivery_body(first.delivery).await.expect("a"),
            Some(b"{\"ref\":\"refs/heads/main\"}".to_vec())
        );
        assert!(std::fs::metadata(&next).expect("still there").is_dir());
        assert_eq!(count("SELECT count(*) FROM deliveries"), 2);
    }

    /// Pruning deletes every older segment no stored delivery points into,
    /// even behind one that a kept delivery still needs, never the one being
    /// written, and only after the rows are gone.
    #[tokio::test]
    async fn pruning_deletes_body_segments_nothing_needs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segments = || bodies::segments(&dir.path().join("bodies")).expect("list");
        let now = 1_700_000_000_000;
        // Each restart writes to a new segment: A (old, its run still
        // queued, so kept), B (old, no runs), C (new).
        let mut ids = Vec::new();
        for (pid, received_at, pipelines) in [
            ("a", 1_000, &["apply"][..]),
            ("b", 2_000, &[][..]),
            ("c", now, &[][..]),
        ] {
            let store = SqliteStore::open(dir.path()).expect("open");
            let mut d = delivery(Some(pid), pipelines);
            d.received_at = received_at;
            ids.push(store.record_delivery(d).await.expect("record").delivery);
            store.close();
        }
        let all = segments();
        assert_eq!(all.len(), 3);
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let pruned = store
            .prune(now, Some(now - 10_000), None)
            .await
            .expect("prune");
        assert_eq!(pruned.deliveries, 1, "only B goes: A's run is queued");
        assert_eq!(
            segments(),
            vec![all[0], all[2]],
            "B's segment is gone, A's and C's stay"
        );
        assert_eq!(store.delivery_body(ids[1]).await.expect("gone"), None);
        for kept in [ids[0], ids[2]] {
            assert!(store.delivery_body(kept).await.expect("kept").is_some());
        }
    }
}

#[cfg(test)]
mod remediation_tests {
    use super::*;
    use crate::event::{AlertEvent, AlertStatus, Event};
    use crate::store::{AlertGate, AlertUpdate, NewRun};

    fn alert(starts_at: Option<&str>) -> (Event, AlertGate) {
        let event = Event::Alert(AlertEvent {
            status: AlertStatus::Firing,
            name: "DiskFull".into(),
            fingerprint: "fp1".into(),
            labels: Default::default(),
            annotations: Default::default(),
            starts_at: starts_at.map(str::to_string),
            ends_at: None,
            generator_url: None,
            group_labels: Default::default(),
            group_key: None,
            external_url: None,
            extra: Default::default(),
        });
        let gate = AlertGate {
            fingerprint: "fp1".into(),
            starts_at: starts_at.map(str::to_string),
            status: "firing".into(),
            cooldown_ms: None,
            max_runs: None,
            window_ms: 3_600_000,
            escalate: false,
        };
        (event, gate)
    }

    fn delivery(now: i64, run: Option<NewRun>, update: AlertUpdate) -> NewDelivery {
        NewDelivery {
            source: "alerts".into(),
            event_type: "alert".into(),
            provider_delivery_id: None,
            received_at: now,
            headers: Vec::new(),
            body: b"{}".to_vec(),
            events: Vec::new(),
            skipped: SkipList::default(),
            runs: run.into_iter().collect(),
            replay_of: None,
            alert_updates: vec![update],
        }
    }

    fn run(event: Event, gate: AlertGate) -> NewRun {
        NewRun {
            pipeline: "fix".into(),
            concurrency_group: "fix".into(),
            trigger: "alert".into(),
            event,
            git_ref: None,
            commit: None,
            origin: RunOrigin::Webhook,
            supersede: false,
            alert: Some(gate),
        }
    }

    fn update(status: &str) -> AlertUpdate {
        AlertUpdate {
            fingerprint: "fp1".into(),
            status: status.into(),
            starts_at: None,
            cancel_pipelines: vec!["fix".into()],
        }
    }

    #[tokio::test]
    async fn a_retried_remediation_keeps_its_alert() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let (event, gate) = alert(Some("2026-11-27T10:00:00Z"));
        let first = store
            .record_delivery(delivery(1_000, Some(run(event, gate)), update("firing")))
            .await
            .expect("record");
        let id = first.runs[0].id;
        assert!(store.start_run(id, 1_001).await.expect("start"));
        let plan = RetryPlan {
            not_before: 1_002,
            only_if_no_newer: false,
        };
        let after = AfterRun {
            retry: Some(plan),
            ..Default::default()
        };
        let retry = store
            .finish_run(id, RunStatus::Failed, None, 1_002, after)
            .await
            .expect("finish")
            .expect("retry");
        let r = store.run(retry).await.expect("read").expect("exists");
        assert_eq!(r.alert_fingerprint.as_deref(), Some("fp1"));
        // The resolved notification cancels the queued retry.
        store
            .record_delivery(delivery(1_003, None, update("resolved")))
            .await
            .expect("resolve");
        let r = store.run(retry).await.expect("read").expect("exists");
        assert_eq!(r.status, RunStatus::Cancelled);
    }

    #[tokio::test]
    async fn alerts_without_starts_at_run_again_after_resolving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let (event, gate) = alert(None);
        let first = store
            .record_delivery(delivery(
                1_000,
                Some(run(event.clone(), gate.clone())),
                update("firing"),
            ))
            .await
            .expect("record");
        assert_eq!(first.runs.len(), 1);
        let repeat = store
            .record_delivery(delivery(
                2_000,
                Some(run(event.clone(), gate.clone())),
                update("firing"),
            ))
            .await
            .expect("record");
        assert!(
            repeat.runs.is_empty(),
            "a repeat of the episode runs nothing"
        );
        store
            .record_delivery(delivery(3_000, None, update("resolved")))
            .await
            .expect("resolve");
        let again = store
            .record_delivery(delivery(4_000, Some(run(event, gate)), update("firing")))
            .await
            .expect("record");
        assert_eq!(
            again.runs.len(),
            1,
            "firing after resolving is a new episode"
        );
    }
}
