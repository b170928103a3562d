//! The matcher as it was before the index: every pipeline evaluated
//! linearly, every reason formatted on the spot. Kept verbatim (test-only)
//! as the oracle the indexed matcher is compared against, matches and
//! reason texts alike.

use std::sync::Arc;

use super::Skip;
use crate::config::{AlertStatusFilter, AlertTrigger, Pipeline, PushTrigger, Trigger};
use crate::event::{AlertEvent, AlertStatus, Event, PushEvent, RefKind};

/// One pipeline to run for one event: (pipeline, event, trigger, paths_pending).
pub type Match = (usize, usize, usize, bool);

/// What the linear matcher answered.
#[derive(Debug, Default)]
pub struct Outcome {
    pub matches: Vec<Match>,
    pub skipped: Vec<Skip>,
}

/// Matches every event of a delivery from `source` against every pipeline.
pub fn match_events(source: &str, events: &[Event], pipelines: &[Arc<Pipeline>]) -> Outcome {
    let mut out = Outcome::default();
    for (pi, pipeline) in pipelines.iter().enumerate() {
        for (ei, event) in events.iter().enumerate() {
            match match_one(source, event, pipeline) {
                Ok(trigger) => out.matches.push((
                    pi,
                    ei,
                    trigger,
                    path_filters(source, event, pipeline).is_some(),
                )),
                Err(reason) => {
                    let reason = if events.len() > 1 {
                        format!("event {ei} ({}): {reason}", describe(event))
                    } else {
                        reason
                    };
                    out.skipped.push(Skip {
                        pipeline: pipeline.name.clone(),
                        reason,
                    });
                }
            }
        }
    }
    out
}

/// Which trigger of `pipeline` matches `event`, or why none does.
pub fn match_one(source: &str, event: &Event, pipeline: &Pipeline) -> Result<usize, String> {
    if let Event::Ignored(ignored) = event {
        return Err(ignored.reason.clone());
    }
    let mut reasons = Vec::with_capacity(pipeline.triggers.len());
    for (ti, trigger) in pipeline.triggers.iter().enumerate() {
        let verdict = match (trigger, event) {
            (Trigger::Push(t), Event::Push(p)) => match_push(source, t, p),
            (Trigger::Alert(t), Event::Alert(a)) => match_alert(source, t, a),
            (Trigger::Alert(_), other) => Err(format!("{} event, trigger is alert", other.kind())),
            (Trigger::Manual, Event::Manual(_)) => Ok(()),
            (Trigger::Manual, _) => {
                Err("manual trigger: only `hookd trigger` or the API starts it".to_string())
            }
            (Trigger::Push(_), other) => Err(format!("{} event, trigger is push", other.kind())),
        };
        match verdict {
            Ok(()) => return Ok(ti),
            Err(r) => reasons.push(r),
        }
    }
    if reasons.len() == 1 {
        Err(reasons.remove(0))
    } else {
        Err(reasons
            .iter()
            .enumerate()
            .map(|(i, r)| format!("on[{i}]: {r}"))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// The push triggers of `pipeline` that match `event`, when every one of them
/// filters on changed paths (the run then depends on the changed files);
/// `None` when some matching trigger has no path filter (it runs anyway), the
/// event is not a push, or it is a tag push (path filters do not apply).
pub fn path_filters<'p>(
    source: &str,
    event: &Event,
    pipeline: &'p Pipeline,
) -> Option<Vec<&'p PushTrigger>> {
    let Event::Push(push) = event else {
        return None;
    };
    if push.ref_kind == RefKind::Tag {
        return None;
    }
    let mut filters = Vec::new();
    for trigger in &pipeline.triggers {
        if let Trigger::Push(t) = trigger {
            if match_push(source, t, push).is_ok() {
                if !t.has_path_filter() {
                    return None;
                }
                filters.push(t.as_ref());
            }
        }
    }
    (!filters.is_empty()).then_some(filters)
}

fn match_push(source: &str, t: &PushTrigger, p: &PushEvent) -> Result<(), String> {
    if let Some(sources) = &t.sources {
        if !sources.iter().any(|s| s == source) {
            return Err(format!(
                "source {source:?} is not in sources [{}]",
                sources.join(", ")
            ));
        }
    }
    if p.is_deletion() {
        return Err(format!("{} was deleted; deletions never run", p.git_ref));
    }
    if let Some(repo) = &t.repository {
        if !repo.is_match(&p.repository) {
            return Err(format!(
                "repository {:?} does not match {:?}",
                p.repository,
                repo.as_str()
            ));
        }
    }
    let name = &p.ref_name;
    match (p.ref_kind, &t.branches, &t.tags) {
        (RefKind::Branch, Some(b), _) if !b.is_match(name) => Err(format!(
            "branch {name:?} matches none of branches {}",
            b.describe()
        )),
        (RefKind::Branch, None, Some(_)) => Err(format!(
            "branch {name:?} pushed, but the trigger filters only tags"
        )),
        (RefKind::Tag, _, Some(tags)) if !tags.is_match(name) => Err(format!(
            "tag {name:?} matches none of tags {}",
            tags.describe()
        )),
        (RefKind::Tag, Some(_), None) => Err(format!(
            "tag {name:?} pushed, but the trigger filters only branches"
        )),
        (RefKind::Other, _, _) => Err(format!("ref {:?} is neither a branch nor a tag", p.git_ref)),
        _ => Ok(()),
    }
}

fn match_alert(source: &str, t: &AlertTrigger, a: &AlertEvent) -> Result<(), String> {
    if let Some(sources) = &t.sources {
        if !sources.iter().any(|s| s == source) {
            return Err(format!(
                "source {source:?} is not in sources [{}]",
                sources.join(", ")
            ));
        }
    }
    let wanted = matches!(
        (t.status, a.status),
        (AlertStatusFilter::Any, _)
            | (AlertStatusFilter::Firing, AlertStatus::Firing)
            | (AlertStatusFilter::Resolved, AlertStatus::Resolved)
    );
    if !wanted {
        let want = match t.status {
            AlertStatusFilter::Firing => "firing",
            AlertStatusFilter::Resolved => "resolved",
            AlertStatusFilter::Any => "any",
        };
        return Err(format!(
            "alert {:?} is {}, the trigger wants {want}",
            a.name,
            a.status.as_str()
        ));
    }
    match t.matchers.iter().find(|m| !m.matches(&a.labels)) {
        None => Ok(()),
        Some(m) => Err(format!(
            "alert {:?}: matcher {m} does not hold ({} is {})",
            a.name,
            m.name,
            a.labels
                .get(&m.name)
                .map_or_else(|| "absent".to_string(), |v| format!("{v:?}"))
        )),
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Push(p) => format!("push to {}", p.git_ref),
        Event::Alert(a) => format!("alert {} {}", a.name, a.status.as_str()),
        other => other.kind().to_string(),
    }
}
