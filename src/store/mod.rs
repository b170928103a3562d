//! Durable state: deliveries, runs and steps.
//!
//! Invariants: only this module knows SQL. A delivery and the runs it queues
//! are written in ONE transaction, and its caller acknowledges the sender
//! only after that transaction is synced to disk. Every write goes through
//! one writer that commits in batches (group commit), so many concurrent
//! deliveries share one fsync instead of queueing behind one each.
//!
//! [`Store`] is the seam for a second backend (PostgreSQL, for several nodes).

mod bodies;
mod sqlite;

pub use sqlite::SqliteStore;

use async_trait::async_trait;
use serde::Serialize;

use crate::event::Event;
use crate::matcher::{Skip, SkipList};

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
    /// A write was not committed within the deadline (disk stalled, database locked).
    #[error("the store did not commit within {0:?}")]
    Timeout(std::time::Duration),
}

impl StoreError {
    /// Maps a SQLite error to one that says what was being done. Nothing
    /// is allocated unless there is an error (this wraps every statement of
    /// the write path).
    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        Self::sqlite_with(move || context.to_string())
    }

    /// [`Self::sqlite`] with a context built only if there is an error.
    pub(crate) fn sqlite_with(
        context: impl FnOnce() -> String,
    ) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Sqlite {
            context: context(),
            source,
        }
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

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOrigin {
    /// A webhook matched the pipeline.
    Webhook,
    /// An operator started it (`hookd trigger`, the API).
    Manual,
    /// An operator replayed a stored delivery.
    Replay,
}

impl RunOrigin {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOrigin::Webhook => "webhook",
            RunOrigin::Manual => "manual",
            RunOrigin::Replay => "replay",
        }
    }

    fn parse(s: &str) -> Option<RunOrigin> {
        [RunOrigin::Webhook, RunOrigin::Manual, RunOrigin::Replay]
            .into_iter()
            .find(|o| o.as_str() == s)
    }

    /// Operator-started runs are exempt from the stale-push protection.
    pub fn is_operator(self) -> bool {
        self != RunOrigin::Webhook
    }
}

/// What follows a run's end, decided by the scheduler from the pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AfterRun {
    /// Queue a retry.
    pub retry: Option<RetryPlan>,
    /// Mark the escalation pending, with this reason.
    pub escalate: Option<String>,
    /// Open a `verify_resolved_within` window of this many ms.
    pub verify_within_ms: Option<i64>,
}

/// A retry to queue when a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPlan {
    /// Earliest start, Unix ms.
    pub not_before: i64,
    /// Queue it only if no newer run exists in the concurrency group (the
    /// newer event replaces the failed one under `supersede` and `cancel`).
    pub only_if_no_newer: bool,
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
    /// Why it exists.
    pub origin: RunOrigin,
    /// Supersede the queued runs of its concurrency group (`on_new_event:
    /// supersede` or `cancel`).
    pub supersede: bool,
    /// For alert runs: the remediation guard rails to apply before queueing.
    pub alert: Option<AlertGate>,
}

/// Remediation guard rails, decided in the transaction that would queue the
/// run (so concurrent notifications of one alert cannot both pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertGate {
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// Its firing episode (`startsAt`).
    pub starts_at: Option<String>,
    /// `firing` or `resolved`.
    pub status: String,
    /// No new run for the fingerprint within this many ms of the last one.
    pub cooldown_ms: Option<i64>,
    /// At most this many runs of the pipeline per window.
    pub max_runs: Option<u32>,
    /// The window, ms.
    pub window_ms: i64,
    /// The pipeline has `on_failure` steps: a suppression escalates (once per window).
    pub escalate: bool,
}

/// What an alert notification changes in the remediation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertUpdate {
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Its firing episode.
    pub starts_at: Option<String>,
    /// Pipelines with `cancel_on_resolved`: their queued runs for the
    /// fingerprint are cancelled and their running ones returned to be stopped.
    pub cancel_pipelines: Vec<String>,
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
    /// Pipelines that did not match, with reasons (written when serialized).
    pub skipped: SkipList,
    /// Runs to queue.
    pub runs: Vec<NewRun>,
    /// The delivery this one replays.
    pub replay_of: Option<i64>,
    /// Alert state changes carried by the delivery, applied in the same transaction.
    pub alert_updates: Vec<AlertUpdate>,
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
    pub skipped: SkipList,
    /// True when the provider delivery id was seen before: nothing new was written.
    pub duplicate: bool,
    /// Queued runs that the new runs superseded.
    pub superseded: Vec<i64>,
    /// Runs recorded as `suppressed` by a guard rail (listed in `runs` too).
    pub suppressed: Vec<i64>,
    /// Running remediations a resolved alert must stop (`cancel_on_resolved`).
    pub cancel_running: Vec<i64>,
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
    /// Why it exists.
    pub origin: RunOrigin,
    /// The run it retries.
    pub retry_of: Option<i64>,
    /// The newer run that replaced it.
    pub superseded_by: Option<i64>,
    /// A retry's earliest start (Unix ms).
    pub not_before: Option<i64>,
    /// The alert it remediates.
    pub alert_fingerprint: Option<String>,
    /// `verify_resolved_within`: the verdict (`None` while pending or not verified).
    pub effective: Option<bool>,
    /// When the verification window closes (Unix ms).
    pub verify_until: Option<i64>,
    /// Why the escalation (`on_failure`) runs or ran.
    pub escalation_reason: Option<String>,
    /// `pending`, `running`, `succeeded`, `failed`.
    pub escalation_status: Option<String>,
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
    /// The delivery this one replays.
    pub replay_of: Option<i64>,
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
    /// A retry waits until then (Unix ms).
    pub not_before: Option<i64>,
}

/// A run found `running` at start-up (the previous process died).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Run id, now `interrupted`.
    pub id: i64,
    /// Process groups of its steps that were running.
    pub pgids: Vec<i32>,
    /// The retry queued for it, if its pipeline retries.
    pub retry: Option<i64>,
}

/// Decides whether an ended run gets a retry: `(pipeline, attempt)` → plan.
pub type RetryPolicy = Box<dyn Fn(&str, i64) -> Option<RetryPlan> + Send>;

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Runs deleted (their log directories may go too).
    pub runs: Vec<i64>,
    /// Deliveries deleted.
    pub deliveries: usize,
}

/// The durable store.
#[async_trait]
pub trait Store: Send + Sync {
    /// Writes a delivery and its queued runs in one synced transaction, or
    /// returns the earlier delivery with the same provider delivery id.
    async fn record_delivery(&self, delivery: NewDelivery) -> Result<Recorded, StoreError>;
    /// After a crash: runs left `running` become `interrupted`, and get a
    /// retry when `retry` says so, in one transaction.
    async fn recover(&self, now: i64, retry: RetryPolicy) -> Result<Vec<Recovered>, StoreError>;
    /// Queues a run without a delivery (manual runs), superseding as asked.
    async fn queue_run(&self, run: NewRun, now: i64) -> Result<Recorded, StoreError>;
    /// The first queued run of each concurrency group (the only one of its
    /// group that may start), in queue order: what the scheduler reads.
    async fn queue_heads(&self, limit: usize) -> Result<Vec<QueuedRun>, StoreError>;
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
    /// Closes the verification windows that passed without the alert
    /// resolving: those runs become `effective: false`; returns them.
    async fn due_verifications(&self, now: i64) -> Result<Vec<(i64, String)>, StoreError>;
    /// Runs whose escalation is pending: `(run id, pipeline)`.
    async fn pending_escalations(&self) -> Result<Vec<(i64, String)>, StoreError>;
    /// Sets a run's escalation reason and status (`pending`, `running`, `succeeded`, `failed`).
    async fn set_escalation(
        &self,
        id: i64,
        reason: &str,
        status: &str,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Records a running step's process group.
    async fn set_step_pgid(&self, run: i64, idx: usize, pgid: i32) -> Result<(), StoreError>;
    /// A run ended (also closes any still-running step with the matching
    /// status); in the same transaction: its retry is queued per `then.retry`,
    /// its escalation marked pending per `then.escalate`, and the
    /// verification window of a successful remediation opened per
    /// `then.verify_within_ms` (or closed at once, effective, when the alert
    /// already resolved after the run started). Returns the retry's id.
    async fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        reason: Option<&str>,
        now: i64,
        then: AfterRun,
    ) -> Result<Option<i64>, StoreError>;
    /// `queued` → `cancelled`; false when the run was not queued.
    async fn cancel_queued(&self, id: i64, reason: &str, now: i64) -> Result<bool, StoreError>;
    /// The newest successful run of `pipeline` on `git_ref`: `(run id, commit)`.
    async fn last_success(
        &self,
        pipeline: &str,
        git_ref: &str,
    ) -> Result<Option<(i64, String)>, StoreError>;
    /// Deletes terminal runs older than `max_age_ms` or beyond the newest
    /// `max_runs_per_pipeline` of their pipeline, and deliveries left without
    /// runs that are older than `max_age_ms`.
    async fn prune(
        &self,
        now: i64,
        max_age_ms: Option<i64>,
        max_runs_per_pipeline: Option<usize>,
    ) -> Result<Pruned, StoreError>;
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
