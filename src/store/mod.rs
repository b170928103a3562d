//! Durable state: deliveries, runs and steps.
//!
//! Invariants: only this module knows SQL. A delivery and the runs it queues
//! are written in ONE transaction, and its caller acknowledges the sender
//! only after that transaction is synced to disk. Every write goes through
//! one writer that commits in batches (group commit), so many concurrent
//! deliveries share one fsync instead of queueing behind one each.
//!
//! [`Store`] is the seam for a second backend (PostgreSQL, for several nodes).

mod sqlite;

pub use sqlite::SqliteStore;

use async_trait::async_trait;
use serde::Serialize;

use crate::event::Event;
use crate::matcher::Skip;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A database operation failed.
    #[error("{context}: {source}")]
    Sqlite {
        /// What was being done.
        context: String,
        /// The database's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Opening the database failed.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The database file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The writer thread is gone (shutdown or a fatal error).
    #[error("the store's writer is not running")]
    WriterGone,
    /// A stored value could not be decoded.
    #[error("corrupt stored {what} for id {id}: {reason}")]
    Corrupt {
        /// Which column or object.
        what: &'static str,
        /// Row id.
        id: i64,
        /// Decoder's message.
        reason: String,
    },
    /// A blocking task failed to run.
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    pub(crate) fn sqlite(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Sqlite { context, source }
    }
}

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for its concurrency group and a free slot.
    Queued,
    /// Executing.
    Running,
    /// Every step exited 0.
    Succeeded,
    /// A step failed, or the checkout did.
    Failed,
    /// A step or the run exceeded its timeout.
    TimedOut,
    /// Stopped by an operator or a policy.
    Cancelled,
    /// Replaced by a newer event before it started.
    Superseded,
    /// hookd stopped or crashed while it ran.
    Interrupted,
    /// A filter decided after the fetch that it has nothing to do.
    Skipped,
    /// A remediation guard rail held it back.
    Suppressed,
}

impl RunStatus {
    /// Every status, for parsing and filters.
    pub const ALL: [RunStatus; 10] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Cancelled,
        RunStatus::Superseded,
        RunStatus::Interrupted,
        RunStatus::Skipped,
        RunStatus::Suppressed,
    ];

    /// The stored and displayed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Superseded => "superseded",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Skipped => "skipped",
            RunStatus::Suppressed => "suppressed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<RunStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True once the run will not change any more.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// Lifecycle of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Executing.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero or was killed by a signal.
    Failed,
    /// Exceeded its timeout (or the run's).
    TimedOut,
    /// Stopped by an operator or a policy.
    Cancelled,
    /// hookd stopped while it ran.
    Interrupted,
}

impl StepStatus {
    /// The stored and displayed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Option<StepStatus> {
        [
            StepStatus::Running,
            StepStatus::Succeeded,
            StepStatus::Failed,
            StepStatus::TimedOut,
            StepStatus::Cancelled,
            StepStatus::Interrupted,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// A run to queue with its delivery.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Pipeline name.
    pub pipeline: String,
    /// Its concurrency group.
    pub concurrency_group: String,
    /// `push`, `alert` or `manual`.
    pub trigger: String,
    /// The event it runs for.
    pub event: Event,
    /// The ref it runs for, if any.
    pub git_ref: Option<String>,
    /// The commit, when the event names one.
    pub commit: Option<String>,
}

/// An authenticated request to store, with the runs it starts.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Source name.
    pub source: String,
    /// The provider's event type.
    pub event_type: String,
    /// The provider's delivery id, for dedupe.
    pub provider_delivery_id: Option<String>,
    /// Unix milliseconds.
    pub received_at: i64,
    /// Headers worth keeping.
    pub headers: Vec<(String, String)>,
    /// The exact body.
    pub body: Vec<u8>,
    /// Normalized events.
    pub events: Vec<Event>,
    /// Pipelines that did not match, with reasons.
    pub skipped: Vec<Skip>,
    /// Runs to queue.
    pub runs: Vec<NewRun>,
}

/// A run's id and pipeline, as the 202 body lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRef {
    /// Run id.
    pub id: i64,
    /// Pipeline name.
    pub pipeline: String,
}

/// The result of recording a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The delivery's id (the earlier one's, for a duplicate).
    pub delivery: i64,
    /// Its runs.
    pub runs: Vec<RunRef>,
    /// Pipelines skipped, with reasons.
    pub skipped: Vec<Skip>,
    /// True when the provider delivery id was seen before: nothing new was written.
    pub duplicate: bool,
}

/// A stored step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// Step name.
    pub name: String,
    /// Status.
    pub status: StepStatus,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Run id.
    pub id: i64,
    /// The delivery that started it (`None` for manual runs).
    pub delivery: Option<i64>,
    /// Pipeline name.
    pub pipeline: String,
    /// Concurrency group.
    pub concurrency_group: String,
    /// `push`, `alert`, `manual`.
    pub trigger: String,
    /// Status.
    pub status: RunStatus,
    /// Why it ended so, when that needs saying.
    pub reason: Option<String>,
    /// The event.
    pub event: Event,
    /// The ref.
    pub git_ref: Option<String>,
    /// The commit checked out (or announced).
    pub commit: Option<String>,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// Steps, in order (empty in listings).
    pub steps: Vec<StepRecord>,
}

/// A stored delivery (without its body).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// Delivery id.
    pub id: i64,
    /// Source name.
    pub source: String,
    /// The provider's event type.
    pub event: String,
    /// Unix ms.
    pub received_at: i64,
    /// The provider's delivery id.
    pub provider_delivery_id: Option<String>,
    /// Kept headers.
    pub headers: Vec<(String, String)>,
    /// Normalized events.
    pub events: Vec<Event>,
    /// Runs it queued.
    pub runs: Vec<RunRef>,
    /// Pipelines it did not match, with reasons.
    pub skipped: Vec<Skip>,
}

/// Filters for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only this status.
    pub status: Option<RunStatus>,
    /// Only ids below this (paging, newest first).
    pub before_id: Option<i64>,
    /// At most this many (capped at 1000).
    pub limit: usize,
}

/// Filters for listing deliveries.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this source.
    pub source: Option<String>,
    /// Only ids below this (paging, newest first).
    pub before_id: Option<i64>,
    /// At most this many (capped at 1000).
    pub limit: usize,
}

/// A queued run, as the scheduler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRun {
    /// Run id.
    pub id: i64,
    /// Pipeline name.
    pub pipeline: String,
    /// Concurrency group.
    pub concurrency_group: String,
}

/// The durable store.
#[async_trait]
pub trait Store: Send + Sync {
    /// Writes a delivery and its queued runs in one synced transaction, or
    /// returns the earlier delivery with the same provider delivery id.
    async fn record_delivery(&self, delivery: NewDelivery) -> Result<Recorded, StoreError>;
    /// After a crash: runs left `running` become `interrupted`; returns their ids.
    async fn recover(&self, now: i64) -> Result<Vec<i64>, StoreError>;
    /// Queued runs in arrival order.
    async fn queued_runs(&self, limit: usize) -> Result<Vec<QueuedRun>, StoreError>;
    /// `queued` → `running`; false when the run was not queued any more.
    async fn start_run(&self, id: i64, now: i64) -> Result<bool, StoreError>;
    /// Records the exact commit a run checked out.
    async fn set_run_commit(&self, id: i64, commit: &str) -> Result<(), StoreError>;
    /// A step began.
    async fn step_started(
        &self,
        run: i64,
        idx: usize,
        name: &str,
        now: i64,
    ) -> Result<(), StoreError>;
    /// A step ended.
    async fn step_finished(
        &self,
        run: i64,
        idx: usize,
        status: StepStatus,
        exit_code: Option<i32>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// A run ended (also marks any still-running step with the matching status).
    async fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// One run with its steps.
    async fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError>;
    /// Runs, newest first.
    async fn runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>, StoreError>;
    /// One delivery with its runs and skips.
    async fn delivery(&self, id: i64) -> Result<Option<DeliveryRecord>, StoreError>;
    /// A delivery's exact body.
    async fn delivery_body(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError>;
    /// How many runs match `filter`, ignoring its `before_id` and `limit`.
    async fn count_runs(&self, filter: RunFilter) -> Result<u64, StoreError>;
    /// Deliveries with their runs and skips, newest first.
    async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError>;
}
