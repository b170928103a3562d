//! `hookd serve`: wires config, store, scheduler and server together, and
//! owns the one shutdown sequence.
//!
//! Shutdown order (SIGTERM / SIGINT): stop accepting webhooks → start no new
//! run or step → let running steps finish within `shutdown_grace` → SIGTERM
//! their process groups, SIGKILL after `kill_grace` → mark those runs
//! `interrupted` → close the store (flushes the writer).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio::sync::Notify;

use crate::config::{DaemonConfig, OnNewEvent, Pipeline};
use crate::event::Event;
use crate::matcher::{match_events, PipelineSet};
use crate::scheduler::{ActiveRuns, Scheduler};
use crate::source::{self, Parsed, Source};
use crate::store::{
    AlertGate, AlertUpdate, NewDelivery, NewRun, Recorded, RetryPlan, RetryPolicy, RunOrigin,
    SqliteStore, Store,
};

/// State shared by the server and the scheduler.
pub struct Shared {
    /// The validated daemon config.
    pub config: DaemonConfig,
    /// Sources by name.
    pub sources: BTreeMap<String, Box<dyn Source>>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The runs executing now.
    pub active: ActiveRuns,
    pipelines: RwLock<Arc<PipelineSet>>,
    wake: Notify,
    /// Outcome of the last pipeline reload, for `/readyz`.
    pub reload: crate::reload::ReloadState,
}

impl Shared {
    /// Builds the shared state from validated parts.
    pub fn new(config: DaemonConfig, pipelines: Vec<Pipeline>, store: Arc<dyn Store>) -> Shared {
        let sources = config
            .sources
            .values()
            .map(|s| (s.name.clone(), source::build(s)))
            .collect();
        Shared {
            config,
            sources,
            store,
            active: ActiveRuns::default(),
            pipelines: RwLock::new(Arc::new(indexed(pipelines))),
            wake: Notify::new(),
            reload: crate::reload::ReloadState::default(),
        }
    }

    /// Replaces the pipeline set in one swap; runs keep the `Arc` they
    /// started with. Build the set (and its index) with [`indexed`].
    pub fn set_pipelines(&self, pipelines: PipelineSet) {
        let new = Arc::new(pipelines);
        match self.pipelines.write() {
            Ok(mut p) => *p = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// The current pipeline set (a snapshot: runs keep the definition they started with).
    pub fn pipelines(&self) -> Arc<PipelineSet> {
        match self.pipelines.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// One pipeline by name.
    pub fn pipeline(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.pipelines().by_name(name).cloned()
    }

    /// Tells the scheduler that runs may be waiting.
    pub fn wake_scheduler(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`Shared::wake_scheduler`] is called.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The run to queue for `pipeline` and `event`.
    pub fn new_run(pipeline: &Pipeline, event: &Event, origin: RunOrigin) -> NewRun {
        let (git_ref, commit) = match event {
            Event::Push(p) => (Some(p.git_ref.clone()), p.after.clone()),
            Event::Manual(m) => (m.git_ref.clone(), m.commit.clone()),
            Event::Alert(_) | Event::Ignored(_) => (None, None),
        };
        NewRun {
            pipeline: pipeline.name.clone(),
            concurrency_group: pipeline.concurrency_group.clone(),
            trigger: event.kind().to_string(),
            event: event.clone(),
            git_ref,
            commit,
            origin,
            supersede: pipeline.on_new_event != OnNewEvent::Queue,
            alert: match event {
                // Repeats of one episode never run twice, guard rails or not.
                Event::Alert(a) => Some(AlertGate {
                    fingerprint: a.fingerprint.clone(),
                    starts_at: a.starts_at.clone(),
                    status: a.status.as_str().to_string(),
                    cooldown_ms: pipeline
                        .remediation
                        .and_then(|r| r.cooldown)
                        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                    max_runs: pipeline.remediation.and_then(|r| r.max_runs),
                    window_ms: pipeline
                        .remediation
                        .map(|r| i64::try_from(r.window.as_millis()).unwrap_or(i64::MAX))
                        .unwrap_or(3_600_000),
                    escalate: !pipeline.on_failure.is_empty(),
                }),
                _ => None,
            },
        }
    }

    /// Matches a parsed delivery against today's pipelines and builds what
    /// the store records: the delivery, its runs, the skip reasons and the
    /// alert updates. Also returns, per run, whether its path filter is
    /// decided after the fetch. Used by the webhook route and by replay.
    pub fn match_delivery(
        &self,
        source: &str,
        parsed: Parsed,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        origin: RunOrigin,
        replay_of: Option<i64>,
    ) -> (NewDelivery, Vec<bool>) {
        let pipelines = self.pipelines();
        let outcome = match_events(source, &parsed.events, &pipelines);
        let runs = outcome
            .matches
            .iter()
            .map(|m| Self::new_run(&pipelines[m.pipeline], &parsed.events[m.event], origin))
            .collect();
        let paths_pending = outcome.matches.iter().map(|m| m.paths_pending).collect();
        // The reasons' texts are written when the store and the answer serialize them.
        let skipped = outcome.into_skip_list(&pipelines);
        let alert_updates = self.alert_updates(&parsed.events);
        let delivery = NewDelivery {
            source: source.to_string(),
            event_type: parsed.event_type,
            // A replay is a new delivery of hookd's, not the sender's redelivery.
            provider_delivery_id: if replay_of.is_some() {
                None
            } else {
                parsed.delivery_id
            },
            received_at: crate::clock::now_ms(),
            headers,
            // A GET's payload is its query string: the source says what to keep.
            body: parsed.stored_body.unwrap_or(body),
            events: parsed.events,
            skipped,
            runs,
            replay_of,
            alert_updates,
        };
        (delivery, paths_pending)
    }

    /// The remediation-state changes that the alerts among `events` carry.
    pub fn alert_updates(&self, events: &[Event]) -> Vec<AlertUpdate> {
        if !events.iter().any(|e| matches!(e, Event::Alert(_))) {
            return Vec::new();
        }
        let pipelines = self.pipelines();
        let cancel_pipelines: Vec<String> = pipelines
            .iter()
            .filter(|p| p.remediation.is_some_and(|r| r.cancel_on_resolved))
            .map(|p| p.name.clone())
            .collect();
        events
            .iter()
            .filter_map(|e| match e {
                Event::Alert(a) => Some(AlertUpdate {
                    fingerprint: a.fingerprint.clone(),
                    status: a.status.as_str().to_string(),
                    starts_at: a.starts_at.clone(),
                    cancel_pipelines: cancel_pipelines.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// After new runs are committed: under `on_new_event: cancel`, stop the
    /// older running runs of their groups; then wake the scheduler.
    pub fn runs_queued(&self, recorded: &Recorded) {
        for id in &recorded.cancel_running {
            if self.active.cancel(
                *id,
                crate::scheduler::StopReason::Cancelled(
                    "resolved: the alert resolved while the remediation ran".to_string(),
                ),
            ) {
                tracing::info!(run = id, "alert resolved; stopping its remediation");
            }
        }
        if !recorded.suppressed.is_empty() {
            tracing::warn!(runs = ?recorded.suppressed, "remediation suppressed by max_runs");
            self.wake_scheduler();
        }
        // Only a run whose group is idle can start now; the end of whatever
        // holds a busy group wakes the scheduler anyway (it is removed from
        // the active set before that wake, so no run is left waiting). Under
        // a burst of pushes to one pipeline this spares the scheduler a
        // queue read per delivery.
        let mut startable = false;
        for run in &recorded.runs {
            let Some(pipeline) = self.pipeline(&run.pipeline) else {
                startable = true;
                continue;
            };
            if pipeline.on_new_event == OnNewEvent::Cancel {
                let reason = format!(
                    "cancelled: run {} of concurrency group {} replaces it (on_new_event: cancel)",
                    run.id, pipeline.concurrency_group
                );
                let stopped =
                    self.active
                        .cancel_older_in_group(&pipeline.concurrency_group, run.id, &reason);
                if !stopped.is_empty() {
                    tracing::info!(run = run.id, cancelled = ?stopped, "newer event cancels running runs");
                }
            }
            startable |= !self.active.group_active(&pipeline.concurrency_group);
        }
        if !recorded.superseded.is_empty() {
            // Each superseded run records why, by which run; the API shows it.
            tracing::debug!(superseded = ?recorded.superseded, "newer event superseded queued runs");
        }
        if startable {
            self.wake_scheduler();
        }
    }

    /// Directory of one run's log and files.
    pub fn run_dir(&self, run: i64) -> PathBuf {
        self.config.data_dir.join("runs").join(run.to_string())
    }

    /// Every secret value hookd knows, for redaction from run logs.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .config
            .sources
            .values()
            .flat_map(|s| s.credentials.secrets())
            .collect();
        if let Some(t) = &self.config.admin_token {
            out.push(t.expose().to_string());
        }
        out
    }
}

/// Indexes a validated pipeline set for the matcher (about 0.1 s at 10,000
/// pipelines: reload calls it on its blocking loading thread).
/// An index that cannot be built in full is logged; matching stays exact.
pub fn indexed(pipelines: Vec<Pipeline>) -> PipelineSet {
    let set: PipelineSet = pipelines.into_iter().collect();
    if let Some(e) = set.index_error() {
        let cause = std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::warn!(error = %e, cause, "pipeline index incomplete; matching is slower");
    }
    set
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(config: DaemonConfig, pipelines: Vec<Pipeline>) -> anyhow::Result<()> {
    for s in config.sources.values() {
        if s.credentials.is_empty() {
            tracing::warn!(
                source = %s.name,
                "source has no credentials configured: it accepts loopback senders only"
            );
        }
    }
    // Steps' orphaned grandchildren become our children so that a step's
    // process group can be reaped completely (see runner).
    if let Err(e) = crate::runner::adopt_orphans() {
        tracing::warn!(error = %e, "cannot become a child subreaper; killed grandchildren of steps may linger as zombies");
    }
    if config.admin_token.is_none() {
        if config.listen.ip().is_loopback() {
            tracing::info!("no admin_token_file configured: the API serves loopback clients only");
        } else {
            tracing::warn!(
                listen = %config.listen,
                "no admin_token_file configured while listening beyond loopback: the API and UI serve direct loopback clients only; set admin_token_file to use them remotely"
            );
        }
    }
    crate::metrics::install().context("cannot set up metrics")?;
    crate::metrics::config_loaded(true, crate::clock::now_ms(), false);
    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&data_dir))
        .await
        .context("store start-up task failed")?
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let store = Arc::new(store);
    let policies: std::collections::HashMap<String, (u32, std::time::Duration, bool)> = pipelines
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                (
                    p.retry.attempts,
                    p.retry.backoff,
                    p.on_new_event != OnNewEvent::Queue,
                ),
            )
        })
        .collect();
    let retry: RetryPolicy = Box::new(move |pipeline, attempt| {
        let (attempts, backoff, only_if_no_newer) = policies.get(pipeline)?;
        (attempt < i64::from(*attempts)).then(|| RetryPlan {
            not_before: crate::clock::now_ms()
                + i64::try_from(crate::scheduler::retry_delay(*backoff, attempt).as_millis())
                    .unwrap_or(0),
            only_if_no_newer: *only_if_no_newer,
        })
    });
    let recovered = store
        .recover(crate::clock::now_ms(), retry)
        .await
        .context("cannot recover runs left running")?;
    for r in &recovered {
        // The previous process died; its steps may still be running. Stop
        // them before anything of their group can start again.
        let (id, pgids) = (r.id, r.pgids.clone());
        let killed = tokio::task::spawn_blocking(move || {
            pgids
                .iter()
                .map(|pgid| crate::runner::kill_leftover_group(*pgid, id))
                .sum::<usize>()
        })
        .await
        .unwrap_or(0);
        tracing::warn!(
            run = r.id,
            retry = ?r.retry,
            leftover_processes_killed = killed,
            "run was running when hookd stopped; marked interrupted"
        );
    }

    let shared = Arc::new(Shared::new(config, pipelines, store.clone()));
    let scheduler = Scheduler::new(Arc::clone(&shared));
    let scheduler_task = tokio::spawn(Arc::clone(&scheduler).run());
    let retention_task = tokio::spawn(Arc::clone(&scheduler).retention_loop());
    let escalation_task = tokio::spawn(Arc::clone(&scheduler).escalation_loop());

    let bound = crate::server::bind(Arc::clone(&shared))
        .with_context(|| format!("cannot listen on {}", shared.config.listen))?;
    let handle = bound.server.handle();
    let server_task = tokio::spawn(bound.server);
    tracing::info!(
        addr = %bound.addr,
        pipelines = shared.pipelines().len(),
        data_dir = %shared.config.data_dir.display(),
        "hookd listening on http://{}",
        bound.addr
    );
    shared.wake_scheduler();

    // Operator side: hot reload, systemd readiness and watchdog, metrics upkeep.
    let background = tokio_util::sync::CancellationToken::new();
    let reload_task = tokio::spawn(crate::reload::watch(
        Arc::clone(&shared),
        background.clone(),
    ));
    let watchdog_task = crate::systemd::watchdog_interval()
        .map(|every| tokio::spawn(crate::systemd::watchdog(every, background.clone())));
    let upkeep_task = tokio::spawn(metrics_upkeep(background.clone()));
    crate::systemd::ready(&format!(
        "serving {} pipelines on http://{}",
        shared.pipelines().len(),
        bound.addr
    ));

    let signal = wait_for_signal().await?;
    crate::systemd::stopping();
    background.cancel();
    let _ = reload_task.await;
    if let Some(t) = watchdog_task {
        let _ = t.await;
    }
    let _ = upkeep_task.await;
    tracing::info!(signal, "shutting down: no new webhooks, no new runs");
    handle.stop(true).await;
    scheduler.shutdown().await;
    let _ = scheduler_task.await;
    let _ = retention_task.await;
    let _ = escalation_task.await;
    let _ = server_task.await;
    tokio::task::spawn_blocking(move || store.close())
        .await
        .context("store close task failed")?;
    tracing::info!("hookd stopped");
    Ok(())
}

/// Runs the metrics recorder's housekeeping every 5 s until `stop`.
async fn metrics_upkeep(stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => crate::metrics::upkeep(),
            _ = stop.cancelled() => return,
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
