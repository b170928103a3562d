//! Picks queued runs and executes them: concurrency groups, the global
//! parallelism limit, checkout, steps, and the run's final status.
//!
//! Invariants: the store is the queue (a restart finds every queued run);
//! at most one run per concurrency group and `max_parallel_runs` in all run
//! at once; a run ends in exactly one terminal status, written before its
//! group is released; on shutdown no new run or step starts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::now_ms;
use crate::config::{Pipeline, StepCommand, WorkspaceMode};
use crate::daemon::Shared;
use crate::event::{Event, RefKind};
use crate::runner::{self, RunLog, StepEnd, StepSpec, Stream};
use crate::store::{RunRecord, RunStatus, StepStatus};
use crate::workspace::{self, Checkout, RepoSpec, Target, Workspaces};

/// Why a running run was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// hookd is shutting down and the grace period ran out.
    Shutdown,
}

struct Active {
    stop: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

/// The scheduler: one per daemon.
pub struct Scheduler {
    shared: Arc<Shared>,
    workspaces: Workspaces,
    busy_groups: Mutex<HashSet<String>>,
    active: Mutex<HashMap<i64, Active>>,
    tracker: TaskTracker,
    /// Set when shutdown begins: dispatch nothing, start no further step.
    draining: CancellationToken,
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
            busy_groups: Mutex::new(HashSet::new()),
            active: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            draining: CancellationToken::new(),
        })
    }

    /// Dispatch loop; returns when shutdown begins.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.dispatch().await {
                tracing::error!(error = %e, "scheduler cannot read the queue; retrying");
            }
            tokio::select! {
                _ = self.shared.woken() => {}
                // A safety net: queued runs are found even if a wake-up is missed.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
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
            let active = self.active.lock().map(|a| a.len()).unwrap_or(0);
            tracing::warn!(
                runs = active,
                ?grace,
                "grace period over; stopping running steps"
            );
            if let Ok(active) = self.active.lock() {
                for a in active.values() {
                    if let Ok(mut r) = a.reason.lock() {
                        r.get_or_insert(StopReason::Shutdown);
                    }
                    a.stop.cancel();
                }
            }
            self.tracker.wait().await;
        }
    }

    fn running_count(&self) -> usize {
        self.active.lock().map(|a| a.len()).unwrap_or(usize::MAX)
    }

    async fn dispatch(self: &Arc<Self>) -> Result<(), crate::store::StoreError> {
        if self.draining.is_cancelled() {
            return Ok(());
        }
        let max = self.shared.config.max_parallel_runs;
        if self.running_count() >= max {
            return Ok(());
        }
        let queued = self.shared.store.queued_runs(1000).await?;
        for q in queued {
            if self.draining.is_cancelled() || self.running_count() >= max {
                break;
            }
            let group_busy = self
                .busy_groups
                .lock()
                .map(|g| g.contains(&q.concurrency_group))
                .unwrap_or(true);
            if group_busy {
                continue;
            }
            let Some(pipeline) = self.shared.pipeline(&q.pipeline) else {
                tracing::warn!(run = q.id, pipeline = %q.pipeline, "queued run's pipeline no longer exists");
                self.shared
                    .store
                    .finish_run(
                        q.id,
                        RunStatus::Failed,
                        Some(&format!("pipeline {:?} no longer exists", q.pipeline)),
                        now_ms(),
                    )
                    .await?;
                crate::metrics::run_finished(&q.pipeline, RunStatus::Failed.as_str(), None);
                continue;
            };
            if !self.shared.store.start_run(q.id, now_ms()).await? {
                continue;
            }
            let active = Active {
                stop: CancellationToken::new(),
                reason: Arc::new(Mutex::new(None)),
            };
            let (stop, reason) = (active.stop.clone(), Arc::clone(&active.reason));
            if let Ok(mut g) = self.busy_groups.lock() {
                g.insert(q.concurrency_group.clone());
            }
            if let Ok(mut a) = self.active.lock() {
                a.insert(q.id, active);
            }
            let this = Arc::clone(self);
            let group = q.concurrency_group.clone();
            self.tracker.spawn(async move {
                this.execute(q.id, pipeline, stop, reason).await;
                if let Ok(mut a) = this.active.lock() {
                    a.remove(&q.id);
                }
                if let Ok(mut g) = this.busy_groups.lock() {
                    g.remove(&group);
                }
                this.shared.wake_scheduler();
            });
        }
        Ok(())
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
            let (status, why) = match self.execute_inner(run_id, &pipeline, &stop, &reason).await {
                Ok(end) => end,
                Err(message) => (RunStatus::Failed, Some(message)),
            };
            tracing::info!(status = status.as_str(), reason = ?why, "run finished");
            if let Err(e) = self
                .shared
                .store
                .finish_run(run_id, status, why.as_deref(), now_ms())
                .await
            {
                tracing::error!(error = %e, "cannot record the end of the run");
            }
            crate::metrics::run_finished(&pipeline.name, status.as_str(), Some(began.elapsed()));
        }
        .instrument(span)
        .await
    }

    /// Runs checkout and steps; `Err` is a failure message for the run.
    async fn execute_inner(
        &self,
        run_id: i64,
        pipeline: &Pipeline,
        stop: &CancellationToken,
        reason: &Arc<Mutex<Option<StopReason>>>,
    ) -> Result<(RunStatus, Option<String>), String> {
        let store = &self.shared.store;
        let config = &self.shared.config;
        let run = store
            .run(run_id)
            .await
            .map_err(|e| format!("cannot read run: {e}"))?
            .ok_or_else(|| "run vanished from the store".to_string())?;
        let run_dir = self.shared.run_dir(run_id);
        let log = RunLog::create(
            &run_dir.join("log"),
            config.max_log_bytes,
            self.shared.secrets(),
        )
        .map_err(|e| format!("cannot create run log: {e}"))?;
        let deadline = pipeline.timeout.map(|t| Instant::now() + t);
        let stopped = |status_if_none: RunStatus| -> (RunStatus, Option<String>) {
            match reason.lock().ok().and_then(|r| *r) {
                Some(StopReason::Shutdown) => (
                    RunStatus::Interrupted,
                    Some("hookd shut down while the run was running".to_string()),
                ),
                None => (status_if_none, None),
            }
        };

        let (source, payload) = match run.delivery {
            Some(d) => {
                let delivery = store.delivery(d).await.ok().flatten();
                let body = store.delivery_body(d).await.ok().flatten();
                (delivery.map(|d| d.source), body.unwrap_or_default())
            }
            None => (None, Vec::new()),
        };

        // Checkout.
        let repo = self.repo_spec(pipeline, &run.event)?;
        let target = target_of(pipeline, &run)?;
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
            .prepare(&repo, &target, mode, &pipeline.name, run_id, stop);
        let checkout = match deadline {
            Some(d) => match tokio::time::timeout_at(d, prepare).await {
                Ok(r) => r,
                Err(_) => {
                    log.line("run", Stream::Hookd, "run timeout reached during checkout");
                    return Ok((
                        RunStatus::TimedOut,
                        Some("run timeout reached during checkout".into()),
                    ));
                }
            },
            None => prepare.await,
        };
        let checkout = match checkout {
            Ok(c) => c,
            Err(e) if stop.is_cancelled() => {
                log.line("run", Stream::Hookd, &format!("checkout stopped: {e}"));
                return Ok(stopped(RunStatus::Cancelled));
            }
            Err(e) => {
                log.line("run", Stream::Hookd, &format!("checkout failed: {e}"));
                return Err(format!("checkout failed: {e}"));
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
        if let Err(e) = store.set_run_commit(run_id, &checkout.commit).await {
            tracing::warn!(error = %e, "cannot record the checked-out commit");
        }

        let result = self
            .run_steps(
                run_id,
                pipeline,
                &run,
                source.as_deref(),
                &payload,
                &repo.url,
                &checkout,
                &log,
                deadline,
                stop,
                &run_dir,
            )
            .await;
        let result = match result {
            StepsEnd::Succeeded => Ok((RunStatus::Succeeded, None)),
            StepsEnd::Failed(msg) => Ok((RunStatus::Failed, Some(msg))),
            StepsEnd::TimedOut(msg) => Ok((RunStatus::TimedOut, Some(msg))),
            StepsEnd::Stopped => Ok(stopped(RunStatus::Cancelled)),
            StepsEnd::Drained(msg) => Ok((RunStatus::Interrupted, Some(msg))),
            StepsEnd::Error(msg) => Err(msg),
        };
        if let Err(e) = self.workspaces.cleanup(&checkout, mode).await {
            tracing::warn!(error = %e, "cannot remove the run's working tree");
        }
        log.flush();
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_steps(
        &self,
        run_id: i64,
        pipeline: &Pipeline,
        run: &RunRecord,
        source: Option<&str>,
        payload: &[u8],
        url: &str,
        checkout: &Checkout,
        log: &RunLog,
        deadline: Option<Instant>,
        stop: &CancellationToken,
        run_dir: &Path,
    ) -> StepsEnd {
        let changed = self.changed_files(&run.event, url, checkout).await;
        if let Err(e) = &changed {
            log.line(
                "run",
                Stream::Hookd,
                &format!("cannot compute changed files: {e}"),
            );
        }
        let files = match write_run_files(run_dir, run, payload, &changed).await {
            Ok(f) => f,
            Err(e) => return StepsEnd::Error(e),
        };
        let base_env = self.base_env(run_id, pipeline, run, source, &checkout.commit, &files);
        for (idx, step) in pipeline.steps.iter().enumerate() {
            if self.shared_draining() {
                let msg = format!("hookd shut down before step {} started", step.name);
                log.line("run", Stream::Hookd, &msg);
                return StepsEnd::Drained(msg);
            }
            let dir = match &step.dir {
                Some(d) => checkout.path.join(d),
                None => checkout.path.clone(),
            };
            let mut env = base_env.clone();
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
            let outcome =
                runner::run_step(&spec, log, deadline, stop, self.shared.config.kill_grace).await;
            let took = outcome
                .as_ref()
                .ok()
                .map(|o| (o.finished_at - o.started_at).unsigned_abs());
            let (status, exit_code, end) = match outcome {
                Err(e) => {
                    log.line(
                        &step.name,
                        Stream::Hookd,
                        &format!("cannot start step: {e}"),
                    );
                    (
                        StepStatus::Failed,
                        None,
                        Some(StepsEnd::Failed(format!(
                            "step {} could not start: {e}",
                            step.name
                        ))),
                    )
                }
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
                        let which = match (step.timeout, deadline) {
                            (Some(t), _) => format!(
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
                crate::metrics::step_finished(&pipeline.name, &step.name, status.as_str(), took);
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

    fn repo_spec(&self, pipeline: &Pipeline, event: &Event) -> Result<RepoSpec, String> {
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
                std::fs::read_to_string(f)
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

    /// Changed paths of a push: `before..after` when the ref existed before,
    /// every file of the commit when the push created the ref. Best effort:
    /// on error the list is empty and the run log says why.
    async fn changed_files(
        &self,
        event: &Event,
        url: &str,
        checkout: &Checkout,
    ) -> Result<Vec<String>, String> {
        let Event::Push(p) = event else {
            return Ok(Vec::new());
        };
        self.workspaces
            .changed_paths(url, p.before.as_deref(), &checkout.commit)
            .await
            .map_err(|e| e.to_string())
    }

    fn base_env(
        &self,
        run_id: i64,
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
            ("HOOKD_RUN_ID", run_id.to_string()),
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
    Error(String),
}

struct RunFiles {
    event: PathBuf,
    payload: PathBuf,
    changed: PathBuf,
}

async fn write_run_files(
    run_dir: &Path,
    run: &RunRecord,
    payload: &[u8],
    changed: &Result<Vec<String>, String>,
) -> Result<RunFiles, String> {
    let files = RunFiles {
        event: run_dir.join("event.json"),
        payload: run_dir.join("payload"),
        changed: run_dir.join("changed-files"),
    };
    let event =
        serde_json::to_vec_pretty(&run.event).map_err(|e| format!("cannot encode event: {e}"))?;
    let mut changed_text = String::new();
    if let Ok(paths) = changed {
        for p in paths {
            changed_text.push_str(p);
            changed_text.push('\n');
        }
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
