//! Picks queued runs and executes them: concurrency groups, the global
//! parallelism limit, retries, cancellation, checkout, steps, and the run's
//! final status.
//!
//! Invariants: the store is the queue (a restart finds every queued run);
//! within a concurrency group runs start in queue order (a retry keeps its
//! original's place, and a retry waiting for its backoff holds the group);
//! at most one run per group and `max_parallel_runs` in all run at once; a
//! run ends in exactly one terminal status, written (with its retry, if any)
//! before its group is released; on shutdown no new run or step starts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::now_ms;
use crate::config::{OnNewEvent, Pipeline, StepCommand, WorkspaceMode};
use crate::daemon::Shared;
use crate::event::{Event, RefKind};
use crate::runner::{self, RunLog, StepEnd, StepSpec, Stream};
use crate::store::{RetryPlan, RunRecord, RunStatus, StepStatus};
use crate::workspace::{self, Checkout, RepoSpec, Target, Workspaces};

/// Why a running run was told to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// hookd is shutting down and the grace period ran out.
    Shutdown,
    /// An operator or a policy cancelled it; the text says who and why.
    Cancelled(String),
}

struct Active {
    group: String,
    stop: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

/// The runs executing now, by id: how the server and the scheduler reach a
/// running run to stop it.
#[derive(Default)]
pub struct ActiveRuns {
    runs: Mutex<HashMap<i64, Active>>,
}

/// A run's stop handle: the token its steps watch and why it fired.
type StopHandle = (CancellationToken, Arc<Mutex<Option<StopReason>>>);

impl ActiveRuns {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<i64, Active>) -> T) -> T {
        match self.runs.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Takes the group for run `id` (a run, or a run's escalation), unless
    /// something of the group is already active: check and insert are one
    /// step, so the dispatcher and the escalation loop cannot both win.
    fn try_register(&self, id: i64, group: &str) -> Option<StopHandle> {
        self.with(|runs| {
            if runs.values().any(|a| a.group == group) {
                return None;
            }
            let active = Active {
                group: group.to_string(),
                stop: CancellationToken::new(),
                reason: Arc::new(Mutex::new(None)),
            };
            let handle = (active.stop.clone(), Arc::clone(&active.reason));
            runs.insert(id, active);
            Some(handle)
        })
    }

    fn remove(&self, id: i64) {
        self.with(|runs| runs.remove(&id));
    }

    /// How many runs execute now.
    pub fn len(&self) -> usize {
        self.with(|runs| runs.len())
    }

    /// True when something of `group` (a run or an escalation) executes:
    /// a run queued in it cannot start before that ends, and its end wakes
    /// the scheduler.
    pub fn group_active(&self, group: &str) -> bool {
        self.with(|runs| runs.values().any(|a| a.group == group))
    }

    /// True when nothing executes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops a running run; false when it is not running here.
    pub fn cancel(&self, id: i64, reason: StopReason) -> bool {
        self.with(|runs| match runs.get(&id) {
            Some(a) => {
                if let Ok(mut r) = a.reason.lock() {
                    r.get_or_insert(reason);
                }
                a.stop.cancel();
                true
            }
            None => false,
        })
    }

    /// Stops the running runs of `group` older than `newer`; returns their ids.
    pub fn cancel_older_in_group(&self, group: &str, newer: i64, reason: &str) -> Vec<i64> {
        let ids: Vec<i64> = self.with(|runs| {
            runs.iter()
                .filter(|(id, a)| a.group == group && **id < newer)
                .map(|(id, _)| *id)
                .collect()
        });
        for id in &ids {
            self.cancel(*id, StopReason::Cancelled(reason.to_string()));
        }
        ids
    }

    fn stop_all(&self, reason: StopReason) {
        let ids: Vec<i64> = self.with(|runs| runs.keys().copied().collect());
        for id in ids {
            self.cancel(id, reason.clone());
        }
    }
}

/// The scheduler: one per daemon.
pub struct Scheduler {
    shared: Arc<Shared>,
    workspaces: Workspaces,
    tracker: TaskTracker,
    /// Set when shutdown begins: dispatch nothing, start no further step.
    draining: CancellationToken,
}

/// How a run ended.
struct RunEnd {
    status: RunStatus,
    reason: Option<String>,
}

impl RunEnd {
    fn new(status: RunStatus, reason: impl Into<Option<String>>) -> RunEnd {
        RunEnd {
            status,
            reason: reason.into(),
        }
    }
}

impl Scheduler {
    /// A scheduler over the shared state.
    pub fn new(shared: Arc<Shared>) -> Arc<Scheduler> {
        let workspaces = Workspaces::new(
            &shared.config.data_dir,
            shared.config.max_parallel_runs.max(2),
        );
        Arc::new(Scheduler {
            shared,
            workspaces,
            tracker: TaskTracker::new(),
            draining: CancellationToken::new(),
        })
    }

    /// Dispatch loop; returns when shutdown begins.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next_due = match self.dispatch().await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "scheduler cannot read the queue; retrying");
                    None
                }
            };
            // A safety net: queued runs are found even if a wake-up is missed.
            let mut wait = Duration::from_secs(5);
            if let Some(due) = next_due {
                let ms = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
                wait = wait.min(Duration::from_millis(ms.max(10)));
            }
            tokio::select! {
                _ = self.shared.woken() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.draining.cancelled() => return,
            }
        }
    }

    /// Stops dispatching, gives running steps `shutdown_grace`, then stops
    /// them (their runs end `interrupted`), and waits for every run task.
    pub async fn shutdown(&self) {
        self.draining.cancel();
        self.tracker.close();
        let grace = self.shared.config.shutdown_grace;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                runs = self.shared.active.len(),
                ?grace,
                "grace period over; stopping running steps"
            );
            self.shared.active.stop_all(StopReason::Shutdown);
            self.tracker.wait().await;
        }
    }

    /// Deletes old runs, their logs and deliveries per `retention`, now and
    /// then every ten minutes; returns when shutdown begins.
    pub async fn retention_loop(self: Arc<Self>) {
        let retention = self.shared.config.retention;
        if retention.max_age.is_none() && retention.max_runs_per_pipeline.is_none() {
            return;
        }
        loop {
            let max_age = retention
                .max_age
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            match self
                .shared
                .store
                .prune(now_ms(), max_age, retention.max_runs_per_pipeline)
                .await
            {
                Ok(pruned) => {
                    if !pruned.runs.is_empty() || pruned.deliveries > 0 {
                        tracing::info!(
                            runs = pruned.runs.len(),
                            deliveries = pruned.deliveries,
                            "retention pruned old runs and deliveries"
                        );
                    }
                    let dirs: Vec<PathBuf> = pruned
                        .runs
                        .iter()
                        .map(|id| self.shared.run_dir(*id))
                        .collect();
                    let removed = tokio::task::spawn_blocking(move || {
                        for dir in dirs {
                            if let Err(e) = std::fs::remove_dir_all(&dir) {
                                if e.kind() != std::io::ErrorKind::NotFound {
                                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a pruned run's files");
                                }
                            }
                        }
                    })
                    .await;
                    if let Err(e) = removed {
                        tracing::warn!(error = %e, "retention file cleanup task failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention could not prune"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                _ = self.draining.cancelled() => return,
            }
        }
    }

    /// Starts what may start; returns when the earliest waiting retry is due.
    async fn dispatch(self: &Arc<Self>) -> Result<Option<i64>, crate::store::StoreError> {
        if self.draining.is_cancelled() {
            return Ok(None);
        }
        let max = self.shared.config.max_parallel_runs;
        if self.shared.active.len() >= max {
            return Ok(None);
        }
        // Only a group's first queued run can start; reading just those
        // keeps a dispatch cheap however deep one group's queue is.
        let queued = self.shared.store.queue_heads(1000).await?;
        let now = now_ms();
        // One head per group: a head that cannot start (not due, its group
        // busy) holds the runs behind it, which are not even read.
        let mut next_due: Option<i64> = None;
        for q in queued {
            if self.draining.is_cancelled() || self.shared.active.len() >= max {
                break;
            }
            if let Some(due) = q.not_before.filter(|due| *due > now) {
                next_due = Some(next_due.map_or(due, |n: i64| n.min(due)));
                continue;
            }
            // Registered before it is marked running, so that a cancel (API or
            // `on_new_event: cancel`) never misses a run that is starting.
            let Some((stop, reason)) = self.shared.active.try_register(q.id, &q.concurrency_group)
            else {
                continue;
            };
            let Some(pipeline) = self.shared.pipeline(&q.pipeline) else {
                tracing::warn!(run = q.id, pipeline = %q.pipeline, "queued run's pipeline no longer exists");
                self.shared.active.remove(q.id);
                // The group's next run is its head now (also if the write
                // below fails): look again.
                self.shared.wake_scheduler();
                self.shared
                    .store
                    .finish_run(
                        q.id,
                        RunStatus::Failed,
                        Some(&format!("pipeline {:?} no longer exists", q.pipeline)),
                        now_ms(),
                        crate::store::AfterRun::default(),
                    )
                    .await?;
                crate::metrics::run_finished(&q.pipeline, RunStatus::Failed.as_str(), None);
                continue;
            };
            match self.shared.store.start_run(q.id, now_ms()).await {
                Ok(true) => {}
                Ok(false) => {
                    // Superseded or cancelled meanwhile: the group's next
                    // run (if any) is its head now, look again.
                    self.shared.active.remove(q.id);
                    self.shared.wake_scheduler();
                    continue;
                }
                Err(e) => {
                    self.shared.active.remove(q.id);
                    // A run queued meanwhile saw the group busy and did not
                    // wake the scheduler.
                    self.shared.wake_scheduler();
                    return Err(e);
                }
            }
            let this = Arc::clone(self);
            self.tracker.spawn(async move {
                this.execute(q.id, pipeline, stop, reason).await;
                this.shared.active.remove(q.id);
                this.shared.wake_scheduler();
            });
        }
        Ok(next_due)
    }

    async fn execute(
        &self,
        run_id: i64,
        pipeline: Arc<Pipeline>,
        stop: CancellationToken,
        reason: Arc<Mutex<Option<StopReason>>>,
    ) {
        // `instrument`, not `span.enter()`: a guard held across `.await`
        // would tag other tasks' log lines with this run.
        let span = tracing::info_span!("run", run = run_id, pipeline = %pipeline.name);
        async move {
            let began = Instant::now();
            let run = match self.shared.store.run(run_id).await {
                Ok(Some(run)) => run,
                Ok(None) => {
                    tracing::error!("a started run vanished from the store");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the run");
                    self.finish(
                        run_id,
                        &pipeline,
                        (1, false),
                        RunEnd::new(RunStatus::Failed, format!("cannot read the run: {e}")),
                        None,
                        None,
                    )
                    .await;
                    return;
                }
            };
            let log = match self.open_log(run_id, false).await {
                Ok(log) => log,
                Err(e) => {
                    let end =
                        RunEnd::new(RunStatus::Failed, format!("cannot create the run log: {e}"));
                    let is_alert = matches!(run.event, Event::Alert(_));
                    self.finish(run_id, &pipeline, (run.attempt, is_alert), end, None, None)
                        .await;
                    return;
                }
            };
            if run.attempt > 1 {
                log.line(
                    "run",
                    Stream::Hookd,
                    &format!(
                        "attempt {} of {} (retry of run {})",
                        run.attempt,
                        pipeline.retry.attempts,
                        run.retry_of
                            .map_or_else(|| "?".to_string(), |r| r.to_string())
                    ),
                );
            }
            let mut end = self.execute_inner(&run, &pipeline, &log, &stop).await;
            if stop.is_cancelled() {
                let why = reason.lock().ok().and_then(|r| r.clone());
                end = match (why, end.status) {
                    (_, RunStatus::Succeeded) => end,
                    (Some(StopReason::Shutdown), _) => RunEnd::new(
                        RunStatus::Interrupted,
                        "hookd shut down while the run was running".to_string(),
                    ),
                    (Some(StopReason::Cancelled(msg)), _) => RunEnd::new(RunStatus::Cancelled, msg),
                    (None, _) => RunEnd::new(RunStatus::Cancelled, None),
                };
            }
            self.finish(
                run_id,
                &pipeline,
                (run.attempt, matches!(run.event, Event::Alert(_))),
                end,
                Some(&log),
                Some(began.elapsed()),
            )
            .await;
            log.flush();
        }
        .instrument(span)
        .await
    }

    /// Opens run `id`'s log (new, or appended to for an escalation) on a
    /// blocking thread: it creates directories and files.
    async fn open_log(&self, id: i64, append: bool) -> Result<RunLog, String> {
        let path = self.shared.run_dir(id).join("log");
        let (cap, secrets) = (self.shared.config.max_log_bytes, self.shared.secrets());
        tokio::task::spawn_blocking(move || {
            if append {
                RunLog::open_append(&path, cap, secrets)
            } else {
                RunLog::create(&path, cap, secrets)
            }
        })
        .await
        .map_err(|e| format!("log task failed: {e}"))?
        .map_err(|e| e.to_string())
    }

    /// Records the end of a run and queues its retry when the policy says so.
    async fn finish(
        &self,
        run_id: i64,
        pipeline: &Pipeline,
        (attempt, is_alert): (i64, bool),
        end: RunEnd,
        log: Option<&RunLog>,
        elapsed: Option<Duration>,
    ) {
        let retriable = matches!(
            end.status,
            RunStatus::Failed | RunStatus::TimedOut | RunStatus::Interrupted
        );
        let plan = (retriable && attempt < i64::from(pipeline.retry.attempts)).then(|| {
            let delay = retry_delay(pipeline.retry.backoff, attempt);
            RetryPlan {
                not_before: now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2),
                only_if_no_newer: pipeline.on_new_event != OnNewEvent::Queue,
            }
        });
        // on_failure escalates a failure that no retry will take up.
        let escalate = (matches!(end.status, RunStatus::Failed | RunStatus::TimedOut)
            && plan.is_none()
            && !pipeline.on_failure.is_empty())
        .then(|| {
            format!(
                "{}: {}",
                end.status.as_str(),
                end.reason.as_deref().unwrap_or("the run did not succeed")
            )
        });
        let verify_within_ms = (is_alert && end.status == RunStatus::Succeeded)
            .then(|| pipeline.remediation.and_then(|r| r.verify_resolved_within))
            .flatten()
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2));
        tracing::info!(status = end.status.as_str(), reason = ?end.reason, "run finished");
        crate::metrics::run_finished(&pipeline.name, end.status.as_str(), elapsed);
        let then = crate::store::AfterRun {
            retry: plan,
            escalate,
            verify_within_ms,
        };
        // Said before the run turns terminal: followers stop reading then.
        if let (Some(p), Some(log)) = (plan, log) {
            let wait = (p.not_before - now_ms()).max(0);
            log.line(
                "run",
                Stream::Hookd,
                &format!(
                    "run {}; retrying (attempt {} of {}) in {:.1}s",
                    end.status.as_str(),
                    attempt + 1,
                    pipeline.retry.attempts,
                    wait as f64 / 1000.0
                ),
            );
        }
        if let Some(log) = log {
            log.flush();
        }
        // The group stays taken until the end is on disk: a run whose end was
        // not recorded would be retried after a restart although it finished.
        let mut delay = Duration::from_millis(200);
        let recorded = loop {
            match self
                .shared
                .store
                .finish_run(
                    run_id,
                    end.status,
                    end.reason.as_deref(),
                    now_ms(),
                    then.clone(),
                )
                .await
            {
                Ok(r) => break Ok(r),
                Err(e) if delay < Duration::from_secs(30) => {
                    tracing::warn!(error = %e, "cannot record the end of the run; trying again");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => break Err(e),
            }
        };
        match recorded {
            Ok(Some(retry)) => {
                tracing::info!(retry, "retry queued as run {retry}");
                self.shared.wake_scheduler();
            }
            Ok(None) => {
                if plan.is_some() {
                    if let Some(log) = log {
                        log.line(
                            "run",
                            Stream::Hookd,
                            "no retry: a newer event of the concurrency group replaces this run",
                        );
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot record the end of the run"),
        }
    }

    /// The directory a run's steps execute in: a checkout of the commit, or
    /// (alert and manual runs of a pipeline without `repo.url`) the
    /// pipeline's scratch directory `data_dir/scratch/<pipeline>`.
    async fn workdir(
        &self,
        run: &RunRecord,
        pipeline: &Pipeline,
        log: &RunLog,
        deadline: Option<Instant>,
        stop: &CancellationToken,
    ) -> Result<WorkDir, RunEnd> {
        if pipeline.repo.url.is_none() && !matches!(run.event, Event::Push(_)) {
            let path = self
                .shared
                .config
                .data_dir
                .join("scratch")
                .join(&pipeline.name);
            tokio::fs::create_dir_all(&path).await.map_err(|e| {
                RunEnd::new(
                    RunStatus::Failed,
                    format!("cannot create scratch directory {}: {e}", path.display()),
                )
            })?;
            log.line(
                "run",
                Stream::Hookd,
                &format!("no repository: running in {}", path.display()),
            );
            return Ok(WorkDir {
                path,
                commit: None,
                repo: None,
                checkout: None,
            });
        }
        let repo = self
            .repo_spec(pipeline, &run.event)
            .await
            .map_err(|msg| RunEnd::new(RunStatus::Failed, msg))?;
        let target = match (
            &run.commit,
            run.attempt > 1 || run.escalation_status.is_some(),
        ) {
            // Retries and escalations check out what the first attempt did.
            (Some(c), true) if c.len() == 40 => Target::Ref(c.clone()),
            _ => target_of(pipeline, run).map_err(|msg| RunEnd::new(RunStatus::Failed, msg))?,
        };
        log.line(
            "run",
            Stream::Hookd,
            &format!(
                "fetching {} ({})",
                workspace::redact_url(&repo.url),
                describe_target(&target)
            ),
        );
        let mode = match pipeline.repo.workspace {
            WorkspaceMode::Persistent => workspace::WorkspaceMode::Persistent,
            WorkspaceMode::Fresh => workspace::WorkspaceMode::Fresh,
        };
        let prepare = self
            .workspaces
            .prepare(&repo, &target, mode, &pipeline.name, run.id, stop);
        let checkout = match deadline {
            Some(d) => match tokio::time::timeout_at(d, prepare).await {
                Ok(r) => r,
                Err(_) => {
                    let msg = "run timeout reached during checkout".to_string();
                    log.line("run", Stream::Hookd, &msg);
                    return Err(RunEnd::new(RunStatus::TimedOut, msg));
                }
            },
            None => prepare.await,
        };
        let checkout = match checkout {
            Ok(c) => c,
            Err(e) if stop.is_cancelled() => {
                log.line("run", Stream::Hookd, &format!("checkout stopped: {e}"));
                return Err(RunEnd::new(RunStatus::Cancelled, None));
            }
            Err(e) => {
                log.line("run", Stream::Hookd, &format!("checkout failed: {e}"));
                return Err(RunEnd::new(
                    RunStatus::Failed,
                    format!("checkout failed: {e}"),
                ));
            }
        };
        log.line(
            "run",
            Stream::Hookd,
            &format!(
                "checked out {} in {:.2}s",
                checkout.commit,
                checkout.fetch_duration.as_secs_f64()
            ),
        );
        crate::metrics::git_fetch(checkout.fetch_duration);
        Ok(WorkDir {
            path: checkout.path.clone(),
            commit: Some(checkout.commit.clone()),
            repo: Some(repo),
            checkout: Some((checkout, mode)),
        })
    }

    async fn release(&self, wd: WorkDir) {
        if let Some((checkout, mode)) = wd.checkout {
            if let Err(e) = self.workspaces.cleanup(&checkout, mode).await {
                tracing::warn!(error = %e, "cannot remove the run's working tree");
            }
        }
    }

    /// The delivery's source name and exact body, for the env and files.
    async fn delivery_of(&self, run: &RunRecord) -> (Option<String>, Vec<u8>) {
        let store = &self.shared.store;
        match run.delivery {
            Some(d) => {
                let delivery = store.delivery(d).await.ok().flatten();
                let body = store.delivery_body(d).await.ok().flatten();
                (delivery.map(|d| d.source), body.unwrap_or_default())
            }
            None => (None, Vec::new()),
        }
    }

    /// Checkout, stale check, path filter and steps.
    async fn execute_inner(
        &self,
        run: &RunRecord,
        pipeline: &Pipeline,
        log: &RunLog,
        stop: &CancellationToken,
    ) -> RunEnd {
        let deadline = pipeline.timeout.map(|t| Instant::now() + t);
        let (source, payload) = self.delivery_of(run).await;
        let wd = match self.workdir(run, pipeline, log, deadline, stop).await {
            Ok(wd) => wd,
            Err(end) => return end,
        };
        let end = self
            .execute_in(
                run,
                pipeline,
                log,
                stop,
                deadline,
                source.as_deref(),
                &payload,
                &wd,
            )
            .await;
        self.release(wd).await;
        end
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute_in(
        &self,
        run: &RunRecord,
        pipeline: &Pipeline,
        log: &RunLog,
        stop: &CancellationToken,
        deadline: Option<Instant>,
        source: Option<&str>,
        payload: &[u8],
        wd: &WorkDir,
    ) -> RunEnd {
        let commit = wd.commit.as_deref().unwrap_or_default();
        if let Some(c) = &wd.commit {
            if let Err(e) = self.shared.store.set_run_commit(run.id, c).await {
                tracing::warn!(error = %e, "cannot record the checked-out commit");
            }
        }
        let changed = match (&wd.repo, &wd.checkout) {
            (Some(repo), Some((checkout, _))) => {
                self.changed_files(&run.event, repo, checkout, stop).await
            }
            _ => Ok(Vec::new()),
        };
        if let Err(e) = &changed {
            log.line(
                "run",
                Stream::Hookd,
                &format!("cannot compute changed files: {e}"),
            );
        }
        let stale = match &wd.repo {
            Some(repo) => self.stale(run, pipeline, &repo.url, commit).await,
            None => None,
        };
        if let Some(msg) = stale.or_else(|| path_filter_skip(source, run, pipeline, &changed)) {
            log.line("run", Stream::Hookd, &msg);
            return RunEnd::new(RunStatus::Skipped, msg);
        }
        let env = match self
            .step_env(
                pipeline,
                run,
                source,
                payload,
                changed.as_deref().unwrap_or_default(),
                commit,
            )
            .await
        {
            Ok(env) => env,
            Err(e) => {
                log.line("run", Stream::Hookd, &e);
                return RunEnd::new(RunStatus::Failed, e);
            }
        };
        let steps = self
            .run_steps(
                (run.id, &pipeline.name),
                &pipeline.steps,
                0,
                &env,
                &wd.path,
                log,
                deadline,
                stop,
            )
            .await;
        match steps {
            StepsEnd::Succeeded => RunEnd::new(RunStatus::Succeeded, None),
            StepsEnd::Failed(msg) => RunEnd::new(RunStatus::Failed, msg),
            StepsEnd::TimedOut(msg) => RunEnd::new(RunStatus::TimedOut, msg),
            StepsEnd::Stopped => RunEnd::new(RunStatus::Cancelled, None),
            StepsEnd::Drained(msg) => RunEnd::new(RunStatus::Interrupted, msg),
        }
    }

    /// Writes the run's event, payload and changed-files files and returns
    /// the environment every step starts from.
    async fn step_env(
        &self,
        pipeline: &Pipeline,
        run: &RunRecord,
        source: Option<&str>,
        payload: &[u8],
        changed: &[String],
        commit: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let files = write_run_files(&self.shared.run_dir(run.id), run, payload, changed).await?;
        Ok(self.base_env(pipeline, run, source, commit, &files))
    }

    /// Runs a pipeline's `on_failure` steps for run `id` (suppressed,
    /// ineffective, failed or timed out), appending to its log and its steps.
    async fn escalate(&self, id: i64, reason: String, stop: CancellationToken) {
        let store = &self.shared.store;
        let run = match store.run(id).await {
            Ok(Some(run)) => run,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(run = id, error = %e, "cannot read a run to escalate");
                return;
            }
        };
        let Some(pipeline) = self.shared.pipeline(&run.pipeline) else {
            let _ = store.set_escalation(id, &reason, "failed", now_ms()).await;
            return;
        };
        let _ = store.set_escalation(id, &reason, "running", now_ms()).await;
        let log = match self.open_log(id, true).await {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(run = id, error = %e, "cannot open the run log to escalate");
                let _ = store.set_escalation(id, &reason, "failed", now_ms()).await;
                return;
            }
        };
        log.line("run", Stream::Hookd, &format!("escalating: {reason}"));
        let deadline = pipeline.timeout.map(|t| Instant::now() + t);
        let (source, payload) = self.delivery_of(&run).await;
        let ok = match self.workdir(&run, &pipeline, &log, deadline, &stop).await {
            Ok(wd) => {
                let ok = match self
                    .step_env(
                        &pipeline,
                        &run,
                        source.as_deref(),
                        &payload,
                        &[],
                        wd.commit.as_deref().unwrap_or_default(),
                    )
                    .await
                {
                    Ok(mut env) => {
                        env.push(("HOOKD_ESCALATION_REASON".to_string(), reason.clone()));
                        matches!(
                            self.run_steps(
                                (id, &pipeline.name),
                                &pipeline.on_failure,
                                run.steps.len(),
                                &env,
                                &wd.path,
                                &log,
                                deadline,
                                &stop
                            )
                            .await,
                            StepsEnd::Succeeded
                        )
                    }
                    Err(e) => {
                        log.line("run", Stream::Hookd, &e);
                        false
                    }
                };
                self.release(wd).await;
                ok
            }
            Err(_) => false,
        };
        let status = if ok { "succeeded" } else { "failed" };
        log.line("run", Stream::Hookd, &format!("escalation {status}"));
        log.flush();
        if let Err(e) = store.set_escalation(id, &reason, status, now_ms()).await {
            tracing::warn!(run = id, error = %e, "cannot record the escalation");
        }
    }

    /// Closes verification windows and runs pending escalations, every
    /// second; returns when shutdown begins.
    pub async fn escalation_loop(self: Arc<Self>) {
        loop {
            let store = &self.shared.store;
            match store.due_verifications(now_ms()).await {
                Ok(due) => {
                    for (id, pipeline) in due {
                        let escalates = self
                            .shared
                            .pipeline(&pipeline)
                            .is_some_and(|p| !p.on_failure.is_empty());
                        let within = self
                            .shared
                            .pipeline(&pipeline)
                            .and_then(|p| p.remediation)
                            .and_then(|r| r.verify_resolved_within)
                            .map(|d| humantime::format_duration(d).to_string())
                            .unwrap_or_default();
                        let reason = format!(
                            "ineffective: the alert did not resolve within {within} of the remediation"
                        );
                        tracing::warn!(run = id, pipeline = %pipeline, "{reason}");
                        if escalates {
                            let _ = store.set_escalation(id, &reason, "pending", now_ms()).await;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot check remediation verifications"),
            }
            match store.pending_escalations().await {
                Ok(pending) => {
                    for (id, pipeline) in pending {
                        if self.draining.is_cancelled() {
                            continue;
                        }
                        // An escalation takes its run's concurrency group like a
                        // run: it may share the working tree, and shutdown and
                        // cancel reach it the same way. A held group also keeps
                        // an escalation from starting twice until its status
                        // leaves `pending`.
                        let group = self
                            .shared
                            .pipeline(&pipeline)
                            .map_or_else(|| pipeline.clone(), |p| p.concurrency_group.clone());
                        let Some((stop, _)) = self.shared.active.try_register(id, &group) else {
                            continue;
                        };
                        let reason = match store.run(id).await {
                            Ok(Some(r)) => r.escalation_reason.unwrap_or_default(),
                            _ => String::new(),
                        };
                        let this = Arc::clone(&self);
                        self.tracker.spawn(async move {
                            this.escalate(id, reason, stop).await;
                            this.shared.active.remove(id);
                            this.shared.wake_scheduler();
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list pending escalations"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = self.draining.cancelled() => return,
            }
        }
    }

    /// Replay and rollback protection: a webhook push of a commit that is a
    /// proper ancestor of the one this pipeline last applied on the same ref
    /// is stale. Operator runs (trigger, replay) and `allow_rollback` are exempt.
    async fn stale(
        &self,
        run: &RunRecord,
        pipeline: &Pipeline,
        url: &str,
        commit: &str,
    ) -> Option<String> {
        let Event::Push(push) = &run.event else {
            return None;
        };
        if pipeline.allow_rollback || run.origin.is_operator() {
            return None;
        }
        let (last_run, last_commit) = match self
            .shared
            .store
            .last_success(&pipeline.name, &push.git_ref)
            .await
        {
            Ok(Some(last)) => last,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up the last applied commit; not checking for a stale push");
                return None;
            }
        };
        if last_commit == commit {
            return None;
        }
        match self.workspaces.merge_base(url, commit, &last_commit).await {
            Ok(Some(base)) if base == commit => Some(format!(
                "stale: {commit} is older than {last_commit}, which run {last_run} applied on {}; \
                 set allow_rollback: true to apply older commits",
                push.git_ref
            )),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot compare with the last applied commit; not treating the push as stale");
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_steps(
        &self,
        (run_id, pipeline_name): (i64, &str),
        steps: &[crate::config::Step],
        idx_offset: usize,
        base_env: &[(String, String)],
        workdir: &Path,
        log: &RunLog,
        deadline: Option<Instant>,
        stop: &CancellationToken,
    ) -> StepsEnd {
        for (i, step) in steps.iter().enumerate() {
            let idx = idx_offset + i;
            if self.shared_draining() {
                let msg = format!("hookd shut down before step {} started", step.name);
                log.line("run", Stream::Hookd, &msg);
                return StepsEnd::Drained(msg);
            }
            let dir = match &step.dir {
                Some(d) => workdir.join(d),
                None => workdir.to_path_buf(),
            };
            let mut env = base_env.to_vec();
            env.extend(step.env.iter().cloned());
            let spec = StepSpec {
                name: step.name.clone(),
                command: match &step.command {
                    StepCommand::Shell(s) => runner::StepCommand::Shell(s.clone()),
                    StepCommand::Argv(a) => runner::StepCommand::Argv(a.clone()),
                },
                dir,
                env,
                timeout: step.timeout,
            };
            if let Err(e) = self
                .shared
                .store
                .step_started(run_id, idx, &step.name, now_ms())
                .await
            {
                tracing::warn!(error = %e, step = %step.name, "cannot record step start");
            }
            let store = Arc::clone(&self.shared.store);
            let record_pgid = move |pgid: i32| {
                tokio::spawn(async move {
                    if let Err(e) = store.set_step_pgid(run_id, idx, pgid).await {
                        tracing::warn!(error = %e, "cannot record a step's process group");
                    }
                });
            };
            let outcome = runner::run_step_with(
                &spec,
                log,
                deadline,
                stop,
                self.shared.config.kill_grace,
                record_pgid,
            )
            .await;
            let took = outcome
                .as_ref()
                .ok()
                .map(|o| (o.finished_at - o.started_at).unsigned_abs());
            let (status, exit_code, end) = match outcome {
                // The runner has logged why.
                Err(e) => (
                    StepStatus::Failed,
                    None,
                    Some(StepsEnd::Failed(format!(
                        "step {} could not start: {e}",
                        step.name
                    ))),
                ),
                Ok(o) => match o.end {
                    StepEnd::Exited(0) => (StepStatus::Succeeded, Some(0), None),
                    StepEnd::Exited(code) => (
                        StepStatus::Failed,
                        Some(code),
                        Some(StepsEnd::Failed(format!(
                            "step {} exited with code {code}",
                            step.name
                        ))),
                    ),
                    StepEnd::Signaled(sig) => (
                        StepStatus::Failed,
                        None,
                        Some(StepsEnd::Failed(format!(
                            "step {} was killed by signal {sig}",
                            step.name
                        ))),
                    ),
                    StepEnd::TimedOut => {
                        let run_expired = deadline.is_some_and(|d| Instant::now() >= d);
                        let which = match (step.timeout, run_expired) {
                            (Some(t), false) => format!(
                                "step {} exceeded its timeout of {}",
                                step.name,
                                humantime::format_duration(t)
                            ),
                            _ => format!("run exceeded its timeout during step {}", step.name),
                        };
                        (StepStatus::TimedOut, None, Some(StepsEnd::TimedOut(which)))
                    }
                    StepEnd::Stopped => (StepStatus::Cancelled, None, Some(StepsEnd::Stopped)),
                },
            };
            let status = match (&end, self.stop_is_shutdown(stop)) {
                (Some(StepsEnd::Stopped), true) => StepStatus::Interrupted,
                _ => status,
            };
            if let Err(e) = self
                .shared
                .store
                .step_finished(run_id, idx, status, exit_code, now_ms())
                .await
            {
                tracing::warn!(error = %e, step = %step.name, "cannot record step end");
            }
            if let Some(took) = took {
                crate::metrics::step_finished(pipeline_name, &step.name, status.as_str(), took);
            }
            if let Some(end) = end {
                return end;
            }
        }
        StepsEnd::Succeeded
    }

    fn shared_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    fn stop_is_shutdown(&self, stop: &CancellationToken) -> bool {
        stop.is_cancelled() && self.draining.is_cancelled()
    }

    async fn repo_spec(&self, pipeline: &Pipeline, event: &Event) -> Result<RepoSpec, String> {
        let url = match (&pipeline.repo.url, event) {
            (Some(u), _) => u.clone(),
            (None, Event::Push(p)) => p.clone_url.clone().ok_or_else(|| {
                "no repository URL: the push event carries no clone URL and the pipeline sets no repo.url"
                    .to_string()
            })?,
            (None, _) => {
                return Err("no repository URL: set repo.url for runs not started by a push".into())
            }
        };
        let token = match &pipeline.repo.token_file {
            Some(f) => Some(
                tokio::fs::read_to_string(f)
                    .await
                    .map(|t| t.trim_end().to_string())
                    .map_err(|e| format!("cannot read repo.token_file {}: {e}", f.display()))?,
            ),
            None => None,
        };
        Ok(RepoSpec {
            url,
            credentials: workspace::Credentials {
                ssh_key_file: pipeline.repo.ssh_key_file.clone(),
                token,
                token_username: pipeline.repo.token_username.clone(),
                known_hosts_file: pipeline.repo.known_hosts_file.clone(),
            },
            submodules: pipeline.repo.submodules,
        })
    }

    /// Changed paths of a push, computed with git from the mirror (never
    /// trusted from the payload: commit lists are capped, force pushes
    /// rewrite history, some forges send none):
    /// - an existing ref (force push or not): the tree of the old tip against
    ///   the tree of the new tip;
    /// - a new ref, or an old tip the mirror cannot find: against the merge
    ///   base of the new tip with the remote's default branch; when that base
    ///   is the new tip itself (the ref starts at a commit the default branch
    ///   already has, e.g. the first push of the default branch) or there is
    ///   none, every file of the commit counts.
    async fn changed_files(
        &self,
        event: &Event,
        repo: &RepoSpec,
        checkout: &Checkout,
        stop: &CancellationToken,
    ) -> Result<Vec<String>, String> {
        let Event::Push(p) = event else {
            return Ok(Vec::new());
        };
        let (url, after) = (repo.url.as_str(), checkout.commit.as_str());
        if let Some(before) = &p.before {
            match self
                .workspaces
                .changed_paths(url, Some(before), after)
                .await
            {
                Ok(paths) => return Ok(paths),
                Err(e) => {
                    tracing::info!(error = %e, "old tip not comparable; using the merge base with the default branch")
                }
            }
        }
        let base = match self.workspaces.resolve_ref(repo, "HEAD", stop).await {
            Ok(default_tip) => self
                .workspaces
                .merge_base(url, after, &default_tip)
                .await
                .map_err(|e| e.to_string())?,
            Err(e) => {
                tracing::info!(error = %e, "cannot resolve the default branch; every file counts as changed");
                None
            }
        };
        let base = base.filter(|b| b != after);
        self.workspaces
            .changed_paths(url, base.as_deref(), after)
            .await
            .map_err(|e| e.to_string())
    }

    fn base_env(
        &self,
        pipeline: &Pipeline,
        run: &RunRecord,
        source: Option<&str>,
        commit: &str,
        files: &RunFiles,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        let daemon_var = |name: &str| std::env::var(name).ok();
        env.push((
            "PATH".into(),
            daemon_var("PATH").unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
        ));
        env.push((
            "HOME".into(),
            daemon_var("HOME").unwrap_or_else(|| "/".into()),
        ));
        env.push((
            "LANG".into(),
            daemon_var("LANG").unwrap_or_else(|| "C.UTF-8".into()),
        ));
        let user = daemon_var("USER").or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        });
        if let Some(user) = user {
            env.push(("USER".into(), user));
        }
        let (repository, git_ref, branch, tag, before, pusher) = match &run.event {
            Event::Push(p) => (
                p.repository.clone(),
                p.git_ref.clone(),
                if p.ref_kind == RefKind::Branch {
                    p.ref_name.clone()
                } else {
                    String::new()
                },
                if p.ref_kind == RefKind::Tag {
                    p.ref_name.clone()
                } else {
                    String::new()
                },
                p.before.clone().unwrap_or_default(),
                p.pusher.clone().unwrap_or_default(),
            ),
            _ => Default::default(),
        };
        let hookd = [
            ("HOOKD_RUN_ID", run.id.to_string()),
            ("HOOKD_PIPELINE", pipeline.name.clone()),
            ("HOOKD_TRIGGER", run.trigger.clone()),
            ("HOOKD_SOURCE", source.unwrap_or_default().to_string()),
            (
                "HOOKD_DELIVERY_ID",
                run.delivery.map(|d| d.to_string()).unwrap_or_default(),
            ),
            ("HOOKD_REPOSITORY", repository),
            ("HOOKD_REF", git_ref),
            ("HOOKD_BRANCH", branch),
            ("HOOKD_TAG", tag),
            ("HOOKD_COMMIT", commit.to_string()),
            ("HOOKD_BEFORE", before),
            ("HOOKD_PUSHER", pusher),
            ("HOOKD_ATTEMPT", run.attempt.to_string()),
            ("HOOKD_EVENT_FILE", files.event.display().to_string()),
            ("HOOKD_PAYLOAD_FILE", files.payload.display().to_string()),
            (
                "HOOKD_CHANGED_FILES_FILE",
                files.changed.display().to_string(),
            ),
        ];
        env.extend(hookd.into_iter().map(|(k, v)| (k.to_string(), v)));
        if let Event::Alert(a) = &run.event {
            env.push(("HOOKD_ALERT_STATUS".into(), a.status.as_str().into()));
            env.push(("HOOKD_ALERT_NAME".into(), a.name.clone()));
            env.push(("HOOKD_ALERT_FINGERPRINT".into(), a.fingerprint.clone()));
            env.push((
                "HOOKD_ALERT_STARTS_AT".into(),
                a.starts_at.clone().unwrap_or_default(),
            ));
            for (k, v) in &a.labels {
                env.push((format!("HOOKD_ALERT_LABEL_{}", env_suffix(k)), v.clone()));
            }
            for (k, v) in &a.annotations {
                env.push((
                    format!("HOOKD_ALERT_ANNOTATION_{}", env_suffix(k)),
                    v.clone(),
                ));
            }
        }
        for name in &self.shared.config.env_passthrough {
            if let Some(v) = daemon_var(name) {
                env.retain(|(k, _)| k != name);
                env.push((name.clone(), v));
            }
        }
        env.extend(pipeline.env.iter().cloned());
        env
    }
}

enum StepsEnd {
    Succeeded,
    Failed(String),
    TimedOut(String),
    Stopped,
    Drained(String),
}

/// A label or annotation name as an environment variable suffix: upper-cased,
/// every other character than ASCII letters and digits becomes `_`.
fn env_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `backoff × 2^(attempt-1)`, with ±20% jitter so that retries of many runs
/// that failed together do not start together.
pub(crate) fn retry_delay(backoff: Duration, attempt: i64) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    let base = backoff.saturating_mul(1u32 << exponent);
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// Where a run's steps execute.
struct WorkDir {
    path: PathBuf,
    commit: Option<String>,
    repo: Option<RepoSpec>,
    checkout: Option<(Checkout, workspace::WorkspaceMode)>,
}

struct RunFiles {
    event: PathBuf,
    payload: PathBuf,
    changed: PathBuf,
}

/// The reason to skip a path-filtered run, when no changed file counts.
/// Unknown changed files (git failed) never skip: the run goes ahead.
fn path_filter_skip(
    source: Option<&str>,
    run: &RunRecord,
    pipeline: &Pipeline,
    changed: &Result<Vec<String>, String>,
) -> Option<String> {
    let filters = crate::matcher::path_filters(source.unwrap_or_default(), &run.event, pipeline)?;
    let changed = changed.as_ref().ok()?;
    if filters.iter().any(|t| t.paths_match(changed).is_some()) {
        return None;
    }
    let shown: Vec<&str> = changed.iter().take(5).map(String::as_str).collect();
    let more = changed.len().saturating_sub(shown.len());
    let filter = filters
        .iter()
        .map(|t| {
            let mut parts = Vec::new();
            if let Some(p) = &t.paths {
                parts.push(format!("paths {}", p.describe()));
            }
            if let Some(p) = &t.paths_ignore {
                parts.push(format!("paths_ignore {}", p.describe()));
            }
            parts.join(" minus ")
        })
        .collect::<Vec<_>>()
        .join("; ");
    Some(format!(
        "no changed path matches {filter} ({} changed: {}{})",
        changed.len(),
        shown.join(", "),
        if more > 0 {
            format!(", and {more} more")
        } else {
            String::new()
        }
    ))
}

async fn write_run_files(
    run_dir: &Path,
    run: &RunRecord,
    payload: &[u8],
    changed: &[String],
) -> Result<RunFiles, String> {
    let files = RunFiles {
        event: run_dir.join("event.json"),
        payload: run_dir.join("payload"),
        changed: run_dir.join("changed-files"),
    };
    let event =
        serde_json::to_vec_pretty(&run.event).map_err(|e| format!("cannot encode event: {e}"))?;
    let mut changed_text = String::new();
    for p in changed {
        changed_text.push_str(p);
        changed_text.push('\n');
    }
    for (path, bytes) in [
        (&files.event, event.as_slice()),
        (&files.payload, payload),
        (&files.changed, changed_text.as_bytes()),
    ] {
        tokio::fs::write(path, bytes)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(files)
}

fn target_of(pipeline: &Pipeline, run: &RunRecord) -> Result<Target, String> {
    match &run.event {
        Event::Push(p) => {
            let sha = p
                .after
                .clone()
                .ok_or_else(|| "a deleted ref has no commit to run".to_string())?;
            Ok(Target::Commit {
                sha,
                refname: Some(p.git_ref.clone()),
            })
        }
        Event::Manual(m) => match (&m.commit, &m.git_ref, &pipeline.repo.git_ref) {
            (Some(c), _, _) => Ok(Target::Ref(c.clone())),
            (None, Some(r), _) | (None, None, Some(r)) => Ok(Target::Ref(r.clone())),
            (None, None, None) => Ok(Target::Ref("HEAD".into())),
        },
        Event::Alert(_) => Ok(Target::Ref(
            pipeline
                .repo
                .git_ref
                .clone()
                .unwrap_or_else(|| "HEAD".into()),
        )),
        Event::Ignored(_) => Err("an ignored event has nothing to run".into()),
    }
}

fn describe_target(t: &Target) -> String {
    match t {
        Target::Commit {
            sha,
            refname: Some(r),
        } => format!("{r} at {sha}"),
        Target::Commit { sha, refname: None } => sha.clone(),
        Target::Ref(r) => r.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_become_variable_suffixes() {
        assert_eq!(env_suffix("instance"), "INSTANCE");
        assert_eq!(env_suffix("mount.point"), "MOUNT_POINT");
        assert_eq!(env_suffix("kubernetes-io/name"), "KUBERNETES_IO_NAME");
    }

    #[test]
    fn retry_delays_double_with_jitter() {
        for attempt in 1..5 {
            let base = 1000.0 * f64::from(1u32 << (attempt - 1));
            let d = retry_delay(Duration::from_secs(1), i64::from(attempt)).as_millis() as f64;
            assert!(
                d >= base * 0.8 - 1.0 && d <= base * 1.2 + 1.0,
                "attempt {attempt}: {d}"
            );
        }
    }
}
