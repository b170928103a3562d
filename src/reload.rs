//! Hot reload of the pipelines, on SIGHUP and on changes in `pipelines_dir`.
//!
//! A reload loads and validates every pipeline file ([`load_pipelines`], on a
//! blocking thread). If all are valid the new set replaces the old one in one
//! swap of the `Arc` the server and the scheduler read; runs already running
//! keep the definition they started with. If any is invalid nothing changes:
//! every error is logged with file:line:col, and the failure shows in
//! `/readyz` (still `200`: hookd keeps serving the previous, valid set) and
//! in the `hookd_config_last_reload_successful` metric.
//!
//! Changes in the directory are watched with `notify` and debounced
//! ([`DEBOUNCE`]), so an editor's write-rename-chmod sequence is one reload.
//! Only the pipelines are reloaded; `hookd.yaml` (listen address, sources,
//! data dir) is read at start-up only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::load_pipelines;
use crate::daemon::{indexed, Shared};

/// Quiet time after the last change before a watched change reloads.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The outcome of the last load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// When it ended, Unix ms.
    pub at_ms: i64,
    /// What started it (`start-up`, `SIGHUP`, `change in pipelines_dir`).
    pub cause: String,
    /// Every error, `file:line:col: message`; empty on success.
    pub errors: Vec<String>,
    /// Pipelines serving after it.
    pub pipelines: usize,
}

impl ReloadOutcome {
    /// True when the new set was taken.
    pub fn succeeded(&self) -> bool {
        self.errors.is_empty()
    }
}

/// What `/readyz` reports about reloads.
#[derive(Debug, Default)]
pub struct ReloadState {
    last: Mutex<Option<ReloadOutcome>>,
}

impl ReloadState {
    /// The last load's outcome (`None` before the first reload).
    pub fn last(&self) -> Option<ReloadOutcome> {
        self.last.lock().map(|l| l.clone()).unwrap_or(None)
    }

    fn set(&self, outcome: ReloadOutcome) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(outcome);
        }
    }
}

/// Loads the pipelines again and swaps them in if all are valid; returns the outcome.
pub async fn reload(shared: &Shared, cause: &str) -> ReloadOutcome {
    let config = shared.config.clone();
    let loaded = tokio::task::spawn_blocking(move || load_pipelines(&config).map(indexed))
        .await
        .map_err(|e| vec![format!("pipeline loading task failed: {e}")])
        .and_then(|r| r.map_err(|errs| errs.0.iter().map(|e| e.to_string()).collect()));
    let at_ms = now_ms();
    let outcome = match loaded {
        Ok(pipelines) => {
            let count = pipelines.len();
            shared.set_pipelines(pipelines);
            tracing::info!(cause, pipelines = count, "pipelines reloaded");
            ReloadOutcome {
                at_ms,
                cause: cause.to_string(),
                errors: Vec::new(),
                pipelines: count,
            }
        }
        Err(errors) => {
            let serving = shared.pipelines().len();
            for e in &errors {
                tracing::error!(cause, error = %e, "invalid pipeline; keeping the previous set");
            }
            tracing::error!(
                cause,
                errors = errors.len(),
                pipelines = serving,
                "pipeline reload failed; still serving the previous pipelines"
            );
            ReloadOutcome {
                at_ms,
                cause: cause.to_string(),
                errors,
                pipelines: serving,
            }
        }
    };
    crate::metrics::config_loaded(outcome.succeeded(), at_ms, true);
    shared.reload.set(outcome.clone());
    // New pipelines may match queued runs that waited for them.
    shared.wake_scheduler();
    outcome
}

/// Reloads on SIGHUP and on (debounced) changes in `pipelines_dir` until `stop`.
pub async fn watch(shared: Arc<Shared>, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by signal is off");
            None
        }
    };
    let (tx, mut changes) = mpsc::channel::<()>(1);
    let dir = shared.config.pipelines_dir.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if is_change(&event.kind) {
                // A full channel already holds a pending change.
                let _ = tx.try_send(());
            }
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let _watcher = match watcher {
        Ok(w) => {
            tracing::info!(dir = %dir.display(), "watching the pipelines directory for changes");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the pipelines directory; reload with SIGHUP");
            None
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                crate::systemd::reloading();
                let outcome = reload(&shared, "SIGHUP").await;
                crate::systemd::ready(&status_line(&outcome));
            }
            Some(()) = changes.recv() => {
                // Debounce: wait until the directory has been quiet for DEBOUNCE.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        more = changes.recv() => if more.is_none() { break },
                        _ = tokio::time::sleep(DEBOUNCE) => break,
                    }
                }
                reload(&shared, "change in pipelines_dir").await;
            }
        }
    }
}

/// The status line systemd shows for a load outcome.
pub fn status_line(outcome: &ReloadOutcome) -> String {
    if outcome.succeeded() {
        format!("serving {} pipelines", outcome.pipelines)
    } else {
        format!(
            "serving {} pipelines; last reload failed with {} error(s)",
            outcome.pipelines,
            outcome.errors.len()
        )
    }
}

fn is_change(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// The reload part of `/readyz`'s body.
pub fn readiness_text(state: &ReloadState) -> String {
    match state.last() {
        None => String::new(),
        Some(o) if o.succeeded() => format!(
            "last reload: ok at {} ({}), {} pipelines\n",
            crate::clock::rfc3339(o.at_ms),
            o.cause,
            o.pipelines
        ),
        Some(o) => {
            let mut s = format!(
                "last reload: FAILED at {} ({}); still serving the previous {} pipelines:\n",
                crate::clock::rfc3339(o.at_ms),
                o.cause,
                o.pipelines
            );
            for e in &o.errors {
                s.push_str("  ");
                s.push_str(e);
                s.push('\n');
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_every_error_of_a_failed_reload() {
        let state = ReloadState::default();
        assert_eq!(readiness_text(&state), "");
        state.set(ReloadOutcome {
            at_ms: 1_700_000_000_000,
            cause: "SIGHUP".into(),
            errors: vec![
                "/p/a.yaml:3:5: unknown field `colour`".into(),
                "/p/b.yaml:1:1: missing field `steps`".into(),
            ],
            pipelines: 2,
        });
        assert_eq!(
            readiness_text(&state),
            "last reload: FAILED at 2023-11-14T22:13:20.000Z (SIGHUP); still serving the previous 2 pipelines:\n  /p/a.yaml:3:5: unknown field `colour`\n  /p/b.yaml:1:1: missing field `steps`\n"
        );
        state.set(ReloadOutcome {
            at_ms: 1_700_000_000_000,
            cause: "change in pipelines_dir".into(),
            errors: vec![],
            pipelines: 3,
        });
        assert!(readiness_text(&state).starts_with("last reload: ok at"));
    }
}
