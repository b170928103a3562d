//! Skips: why a pipeline does not run for an event, kept structured and
//! turned into text only where it is shown or stored (the 202 answer, the
//! delivery record, `hookd explain`).
//!
//! A skip is a pipeline index, an event index and, per trigger, a [`Miss`]:
//! a small code whose text borrows the pipeline's filters and the event's
//! fields. [`Reason`] writes the text; [`SkipList`] carries the skips of one
//! delivery to the store and serializes them exactly as `Vec<`[`Skip`]`>`
//! does, so stored deliveries and API answers look as they always did.

use std::fmt::{self, Display, Write as _};
use std::sync::Arc;

use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

use super::index::PipelineSet;
use super::{derived_miss, EventFacts, Match};
use crate::config::{AlertStatusFilter, Pipeline, Trigger};
use crate::event::Event;

/// A pipeline that did not run, and why: the stored and serialized form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    /// Pipeline name.
    pub pipeline: String,
    /// Why not, e.g. `branch "dev" matches none of branches [main]`.
    pub reason: String,
}

/// Why one trigger does not match one event. The text is written by
/// [`Reason`], from the trigger and the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The delivery's source is not in the trigger's `sources:`.
    NotInSources,
    /// The push deleted its ref.
    Deleted,
    /// The repository does not match `repository:`.
    Repository,
    /// The branch matches none of `branches:`.
    Branch,
    /// A branch was pushed; the trigger has only `tags:`.
    BranchButOnlyTags,
    /// The tag matches none of `tags:`.
    Tag,
    /// A tag was pushed; the trigger has only `branches:`.
    TagButOnlyBranches,
    /// The ref is neither `refs/heads/*` nor `refs/tags/*`.
    OtherRef,
    /// The alert's status is not the one the trigger wants.
    AlertStatus,
    /// The alert matcher with this index does not hold.
    AlertMatcher(u32),
    /// The event is of another kind than the (push or alert) trigger.
    WrongKind,
    /// A manual trigger: only an operator starts it.
    ManualOnly,
    /// The event starts nothing (its own reason says why).
    Ignored,
    /// Never recorded: a trigger the index passed over always has a miss.
    /// Written as `… does not match` should that ever be wrong.
    Unexplained,
}

/// Where a [`Reason`] finds the [`Miss`] of each trigger.
pub(super) enum Misses<'a> {
    /// One per trigger, as `match_one` found them.
    Listed(Vec<Miss>),
    /// From an indexed outcome: stored for the candidates, derived for the rest.
    Indexed {
        set: &'a PipelineSet,
        facts: &'a EventFacts,
        first: u32,
    },
}

/// Why one pipeline does not run for one event; `Display` writes the text
/// of the contract (`on[0]: …; on[1]: …` when it has several triggers,
/// prefixed with `event 2 (push to refs/heads/x): ` in a delivery of
/// several events).
pub struct Reason<'a> {
    pub(super) source: &'a str,
    pub(super) pipeline: &'a Pipeline,
    pub(super) event: &'a Event,
    /// `Some(i)` when the delivery has several events: the text names event `i`.
    pub(super) numbered: Option<usize>,
    pub(super) misses: Misses<'a>,
}

impl Reason<'_> {
    fn miss(&self, trigger: usize) -> Miss {
        match &self.misses {
            Misses::Listed(v) => v.get(trigger).copied().unwrap_or(Miss::WrongKind),
            Misses::Indexed { set, facts, first } => {
                let tid = first + trigger as u32;
                facts.stored(tid).unwrap_or_else(|| {
                    derived_miss(
                        set,
                        facts,
                        tid,
                        self.source,
                        &self.pipeline.triggers[trigger],
                        self.event,
                    )
                })
            }
        }
    }
}

impl Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.numbered {
            write!(f, "event {i} (")?;
            describe(f, self.event)?;
            f.write_str("): ")?;
        }
        if let Event::Ignored(ignored) = self.event {
            return f.write_str(&ignored.reason);
        }
        let triggers = &self.pipeline.triggers;
        if triggers.len() == 1 {
            return write_miss(f, self.miss(0), self.source, &triggers[0], self.event);
        }
        for (i, trigger) in triggers.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "on[{i}]: ")?;
            write_miss(f, self.miss(i), self.source, trigger, self.event)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// `push to refs/heads/main`, `alert HighLoad firing`, `manual`.
fn describe(f: &mut fmt::Formatter<'_>, event: &Event) -> fmt::Result {
    match event {
        Event::Push(p) => write!(f, "push to {}", p.git_ref),
        Event::Alert(a) => write!(f, "alert {} {}", a.name, a.status.as_str()),
        other => f.write_str(other.kind()),
    }
}

fn write_miss(
    f: &mut fmt::Formatter<'_>,
    miss: Miss,
    source: &str,
    trigger: &Trigger,
    event: &Event,
) -> fmt::Result {
    let sources = match trigger {
        Trigger::Push(t) => t.sources.as_deref(),
        Trigger::Alert(t) => t.sources.as_deref(),
        Trigger::Manual => None,
    };
    match (miss, trigger, event) {
        (Miss::Ignored, _, Event::Ignored(ignored)) => f.write_str(&ignored.reason),
        (Miss::ManualOnly, _, _) => {
            f.write_str("manual trigger: only `hookd trigger` or the API starts it")
        }
        (Miss::WrongKind, Trigger::Alert(_), e) => {
            write!(f, "{} event, trigger is alert", e.kind())
        }
        (Miss::WrongKind, _, e) => write!(f, "{} event, trigger is push", e.kind()),
        (Miss::NotInSources, _, _) => {
            write!(f, "source {source:?} is not in sources [")?;
            for (i, s) in sources.unwrap_or_default().iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                f.write_str(s)?;
            }
            f.write_char(']')
        }
        (Miss::Deleted, _, Event::Push(p)) => {
            write!(f, "{} was deleted; deletions never run", p.git_ref)
        }
        (Miss::Repository, Trigger::Push(t), Event::Push(p)) => write!(
            f,
            "repository {:?} does not match {:?}",
            p.repository,
            t.repository.as_ref().map_or("", |r| r.as_str())
        ),
        (Miss::Branch, Trigger::Push(t), Event::Push(p)) => write!(
            f,
            "branch {:?} matches none of branches {}",
            p.ref_name,
            t.branches
                .as_ref()
                .map(|b| b.describe())
                .unwrap_or_default()
        ),
        (Miss::BranchButOnlyTags, _, Event::Push(p)) => write!(
            f,
            "branch {:?} pushed, but the trigger filters only tags",
            p.ref_name
        ),
        (Miss::Tag, Trigger::Push(t), Event::Push(p)) => write!(
            f,
            "tag {:?} matches none of tags {}",
            p.ref_name,
            t.tags.as_ref().map(|b| b.describe()).unwrap_or_default()
        ),
        (Miss::TagButOnlyBranches, _, Event::Push(p)) => write!(
            f,
            "tag {:?} pushed, but the trigger filters only branches",
            p.ref_name
        ),
        (Miss::OtherRef, _, Event::Push(p)) => {
            write!(f, "ref {:?} is neither a branch nor a tag", p.git_ref)
        }
        (Miss::AlertStatus, Trigger::Alert(t), Event::Alert(a)) => {
            let want = match t.status {
                AlertStatusFilter::Firing => "firing",
                AlertStatusFilter::Resolved => "resolved",
                AlertStatusFilter::Any => "any",
            };
            write!(
                f,
                "alert {:?} is {}, the trigger wants {want}",
                a.name,
                a.status.as_str()
            )
        }
        (Miss::AlertMatcher(i), Trigger::Alert(t), Event::Alert(a)) => {
            let Some(m) = t.matchers.get(i as usize) else {
                return write!(f, "alert {:?}: a matcher does not hold", a.name);
            };
            write!(
                f,
                "alert {:?}: matcher {m} does not hold ({} is ",
                a.name, m.name
            )?;
            match a.labels.get(&m.name) {
                Some(v) => write!(f, "{v:?})"),
                None => f.write_str("absent)"),
            }
        }
        // A miss never pairs with a trigger or event of another kind; say
        // something true rather than panic if it ever did.
        (_, _, e) => write!(f, "{} event does not match", e.kind()),
    }
}

/// One skip of an outcome: pipeline `pipeline` does not run for event
/// `event`, because of `reason` (text on demand).
#[derive(Debug)]
pub struct Skipped<'a> {
    /// Index of the pipeline in the set.
    pub pipeline: usize,
    /// Index of the event in the delivery.
    pub event: usize,
    /// The pipeline's name.
    pub name: &'a str,
    /// Why it does not run.
    pub reason: Reason<'a>,
}

impl Skipped<'_> {
    /// The stored form, with the reason's text.
    pub fn to_skip(&self) -> Skip {
        Skip {
            pipeline: self.name.to_string(),
            reason: self.reason.to_string(),
        }
    }
}

impl Serialize for Skipped<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Skip", 2)?;
        st.serialize_field("pipeline", self.name)?;
        st.serialize_field("reason", &AsText(&self.reason))?;
        st.end()
    }
}

/// Serializes a `Display` value as a string, written straight into the output.
struct AsText<'a, T>(&'a T);

impl<T: Display> Serialize for AsText<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// The skips of one outcome, in pipeline order then event order: every
/// (pipeline, event) pair that is not a match.
pub struct SkipIter<'a> {
    pub(super) source: &'a str,
    pub(super) events: &'a [Event],
    pub(super) set: &'a PipelineSet,
    /// Sorted by pipeline, then event.
    pub(super) matches: &'a [Match],
    /// One per event.
    pub(super) facts: &'a [EventFacts],
    pub(super) pipeline: usize,
    pub(super) event: usize,
    pub(super) next_match: usize,
}

impl<'a> Iterator for SkipIter<'a> {
    type Item = Skipped<'a>;

    fn next(&mut self) -> Option<Skipped<'a>> {
        if self.events.is_empty() {
            return None;
        }
        loop {
            if self.event == self.events.len() {
                self.event = 0;
                self.pipeline += 1;
            }
            let (pi, ei) = (self.pipeline, self.event);
            let pipeline = self.set.pipelines().get(pi)?;
            self.event += 1;
            if let Some(m) = self.matches.get(self.next_match) {
                if (m.pipeline, m.event) == (pi, ei) {
                    self.next_match += 1;
                    continue;
                }
            }
            let (event, facts) = (&self.events[ei], self.facts.get(ei)?);
            return Some(Skipped {
                pipeline: pi,
                event: ei,
                name: &pipeline.name,
                reason: Reason {
                    source: self.source,
                    pipeline,
                    event,
                    numbered: (self.events.len() > 1).then_some(ei),
                    misses: Misses::Indexed {
                        set: self.set,
                        facts,
                        first: self.set.first_trigger(pi),
                    },
                },
            });
        }
    }
}

/// The skips of one delivery as the store records them and the 202 answer
/// lists them: the matcher's, with their text written only when serialized,
/// then any added later (guard rails). Serializes exactly as a `Vec<Skip>`.
#[derive(Clone, Default)]
pub struct SkipList {
    matched: Option<Arc<Matched>>,
    extra: Vec<Skip>,
}

/// An outcome that owns what its reasons borrow.
pub(super) struct Matched {
    pub(super) set: Arc<PipelineSet>,
    pub(super) source: String,
    pub(super) events: Vec<Event>,
    pub(super) matches: Vec<Match>,
    pub(super) facts: Vec<EventFacts>,
}

impl SkipList {
    pub(super) fn from_matched(matched: Matched) -> SkipList {
        SkipList {
            matched: Some(Arc::new(matched)),
            extra: Vec::new(),
        }
    }

    /// Adds a skip after the matcher's.
    pub fn push(&mut self, skip: Skip) {
        self.extra.push(skip);
    }

    /// How many skips there are.
    pub fn len(&self) -> usize {
        let matched = self.matched.as_ref().map_or(0, |m| {
            (m.set.len() * m.events.len()).saturating_sub(m.matches.len())
        });
        matched + self.extra.len()
    }

    /// True when nothing was skipped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every skip with its text.
    pub fn to_vec(&self) -> Vec<Skip> {
        let mut out = Vec::with_capacity(self.len());
        if let Some(m) = &self.matched {
            out.extend(m.iter().map(|s| s.to_skip()));
        }
        out.extend(self.extra.iter().cloned());
        out
    }
}

impl Matched {
    fn iter(&self) -> SkipIter<'_> {
        SkipIter {
            source: &self.source,
            events: &self.events,
            set: &self.set,
            matches: &self.matches,
            facts: &self.facts,
            pipeline: 0,
            event: 0,
            next_match: 0,
        }
    }
}

impl From<Vec<Skip>> for SkipList {
    fn from(extra: Vec<Skip>) -> SkipList {
        SkipList {
            matched: None,
            extra,
        }
    }
}

impl Serialize for SkipList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        if let Some(m) = &self.matched {
            for skip in m.iter() {
                seq.serialize_element(&skip)?;
            }
        }
        for skip in &self.extra {
            seq.serialize_element(skip)?;
        }
        seq.end()
    }
}

impl fmt::Debug for SkipList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

impl PartialEq for SkipList {
    fn eq(&self, other: &SkipList) -> bool {
        self.to_vec() == other.to_vec()
    }
}

impl Eq for SkipList {}
