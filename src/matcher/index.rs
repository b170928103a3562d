//! [`PipelineSet`]: the pipelines in load order plus the index the matcher
//! reads, built once per load (start-up and each hot reload), so that an
//! event is evaluated in full only against its candidate triggers.
//!
//! Every trigger has a global id: pipeline order, then `on:` order, so
//! sorting ids sorts by pipeline and trigger. The index answers, per event:
//! - push: the push triggers whose `repository:` glob matches (one pass of a
//!   `GlobSet` over the distinct repository patterns) and the push triggers
//!   without `repository:`; every other push trigger fails on its
//!   repository (or earlier, on `sources:` or a deletion) and its reason
//!   follows from the glob set's answer, kept with the outcome;
//! - alert: the alert triggers; manual: the manual triggers. Every other
//!   trigger fails on its kind alone.
//!
//! Invariant: the glob set is built from the very `Glob`s the pipelines'
//! [`Pattern`](crate::config::Pattern)s compiled, so its answer is theirs.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use globset::{Candidate, GlobSet, GlobSetBuilder};

use crate::config::{Pipeline, Trigger};

/// The index could not be built in full; matching stays correct, slower.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot index the {patterns} repository patterns in one glob set; every push trigger is evaluated in full"
)]
pub struct IndexError {
    /// How many distinct repository patterns there are.
    patterns: usize,
    /// What globset said.
    #[source]
    source: globset::Error,
}

/// The loaded pipelines, in load order, and their matching index.
pub struct PipelineSet {
    pipelines: Vec<Arc<Pipeline>>,
    by_name: HashMap<String, usize>,
    /// Global id of each pipeline's first trigger, plus the total at the end.
    first_trigger: Vec<u32>,
    /// The pipeline of each trigger.
    trigger_pipeline: Vec<u32>,
    /// The repository pattern id of each push trigger that has `repository:`.
    trigger_repo: Vec<Option<u32>>,
    /// The distinct repository patterns; `None` when it could not be built.
    repos: Option<GlobSet>,
    /// The push triggers of each repository pattern, ascending.
    repo_triggers: Vec<Vec<u32>>,
    /// Push triggers evaluated for every push: those without `repository:`
    /// (and all of them when the glob set could not be built), ascending.
    push_always: Vec<u32>,
    /// Alert triggers, ascending.
    alert_triggers: Vec<u32>,
    /// Manual triggers, ascending.
    manual_triggers: Vec<u32>,
    error: Option<IndexError>,
}

impl std::fmt::Debug for PipelineSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineSet")
            .field("pipelines", &self.pipelines.len())
            .field("triggers", &self.trigger_pipeline.len())
            .field("repository_patterns", &self.repo_triggers.len())
            .field("error", &self.error)
            .finish()
    }
}

impl Default for PipelineSet {
    fn default() -> Self {
        PipelineSet::new(Vec::new())
    }
}

impl Deref for PipelineSet {
    type Target = [Arc<Pipeline>];

    fn deref(&self) -> &[Arc<Pipeline>] {
        &self.pipelines
    }
}

impl FromIterator<Pipeline> for PipelineSet {
    fn from_iter<I: IntoIterator<Item = Pipeline>>(iter: I) -> Self {
        PipelineSet::new(iter.into_iter().map(Arc::new).collect())
    }
}

impl PipelineSet {
    /// Indexes `pipelines` (kept in this order). Never fails: when the
    /// repository glob set cannot be built, push triggers are all evaluated
    /// in full and [`PipelineSet::index_error`] says why.
    pub fn new(pipelines: Vec<Arc<Pipeline>>) -> PipelineSet {
        PipelineSet::build(pipelines, true)
    }

    /// A set whose push triggers are all evaluated in full, as when the
    /// glob set cannot be built (tests of that path).
    #[cfg(test)]
    pub(super) fn unindexed(pipelines: Vec<Arc<Pipeline>>) -> PipelineSet {
        PipelineSet::build(pipelines, false)
    }

    fn build(pipelines: Vec<Arc<Pipeline>>, index_repos: bool) -> PipelineSet {
        let mut by_name = HashMap::with_capacity(pipelines.len());
        let mut first_trigger = Vec::with_capacity(pipelines.len() + 1);
        let mut trigger_pipeline = Vec::new();
        let mut trigger_repo = Vec::new();
        let mut pattern_ids: HashMap<&globset::Glob, u32> = HashMap::new();
        let mut globs = Vec::new();
        let mut repo_triggers: Vec<Vec<u32>> = Vec::new();
        let mut push_always = Vec::new();
        let mut alert_triggers = Vec::new();
        let mut manual_triggers = Vec::new();
        for (pi, p) in pipelines.iter().enumerate() {
            by_name.entry(p.name.clone()).or_insert(pi);
            first_trigger.push(id(trigger_pipeline.len()));
            for trigger in &p.triggers {
                let tid = id(trigger_pipeline.len());
                trigger_pipeline.push(id(pi));
                let mut repo = None;
                match trigger {
                    Trigger::Push(t) => match &t.repository {
                        Some(pattern) => {
                            let next = id(globs.len());
                            let pid = *pattern_ids.entry(pattern.glob()).or_insert(next);
                            if pid == next {
                                globs.push(pattern.glob().clone());
                                repo_triggers.push(Vec::new());
                            }
                            repo_triggers[pid as usize].push(tid);
                            repo = Some(pid);
                        }
                        None => push_always.push(tid),
                    },
                    Trigger::Alert(_) => alert_triggers.push(tid),
                    Trigger::Manual => manual_triggers.push(tid),
                }
                trigger_repo.push(repo);
            }
        }
        first_trigger.push(id(trigger_pipeline.len()));
        let mut builder = GlobSetBuilder::new();
        for g in globs {
            builder.add(g);
        }
        let built = if index_repos {
            builder.build().map(Some)
        } else {
            Ok(None)
        };
        let (repos, error) = match built {
            Ok(Some(set)) => (Some(set), None),
            Ok(None) | Err(_) => {
                // Correct without the index: every push trigger is a candidate
                // and each repository pattern is matched on its own.
                for ids in &repo_triggers {
                    push_always.extend_from_slice(ids);
                }
                push_always.sort_unstable();
                trigger_repo.iter_mut().for_each(|r| *r = None);
                let patterns = repo_triggers.len();
                let error = built.err().map(|source| IndexError { patterns, source });
                (None, error)
            }
        };
        PipelineSet {
            pipelines,
            by_name,
            first_trigger,
            trigger_pipeline,
            trigger_repo,
            repos,
            repo_triggers,
            push_always,
            alert_triggers,
            manual_triggers,
            error,
        }
    }

    /// The pipelines in load order.
    pub fn pipelines(&self) -> &[Arc<Pipeline>] {
        &self.pipelines
    }

    /// One pipeline by name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Pipeline>> {
        self.by_name.get(name).map(|&i| &self.pipelines[i])
    }

    /// Why the index is incomplete, if it is (matching is still exact).
    pub fn index_error(&self) -> Option<&IndexError> {
        self.error.as_ref()
    }

    /// Global id of trigger 0 of pipeline `pipeline`.
    pub(super) fn first_trigger(&self, pipeline: usize) -> u32 {
        self.first_trigger[pipeline]
    }

    /// The pipeline of trigger `tid`, and the trigger's index in its `on:`.
    pub(super) fn locate(&self, tid: u32) -> (usize, usize) {
        let pi = self.trigger_pipeline[tid as usize] as usize;
        (pi, (tid - self.first_trigger[pi]) as usize)
    }

    /// The repository pattern id of trigger `tid`, if the glob set has it.
    pub(super) fn repo_pattern(&self, tid: u32) -> Option<u32> {
        self.trigger_repo.get(tid as usize).copied().flatten()
    }

    /// The push triggers to evaluate for a push to `repository`, ascending,
    /// and which repository patterns matched (`None` without a glob set).
    /// `buf` is scratch space for the glob set's answer.
    pub(super) fn push_candidates(
        &self,
        repository: &str,
        buf: &mut Vec<usize>,
    ) -> (Vec<u32>, Option<Bits>) {
        let Some(repos) = &self.repos else {
            return (self.push_always.clone(), None);
        };
        repos.matches_candidate_into(&Candidate::new(repository), buf);
        let mut bits = Bits::new(self.repo_triggers.len());
        let mut candidates = self.push_always.clone();
        for &pid in buf.iter() {
            bits.insert(pid);
            candidates.extend_from_slice(&self.repo_triggers[pid]);
        }
        if !buf.is_empty() {
            candidates.sort_unstable();
        }
        (candidates, Some(bits))
    }

    /// Every alert trigger, ascending.
    pub(super) fn alert_triggers(&self) -> &[u32] {
        &self.alert_triggers
    }

    /// Every manual trigger, ascending.
    pub(super) fn manual_triggers(&self) -> &[u32] {
        &self.manual_triggers
    }
}

/// A trigger, pipeline or pattern id. Each trigger takes far more than a
/// byte of memory, so there are never more than `u32::MAX` of them.
fn id(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Which repository patterns matched one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn insert(&mut self, i: usize) {
        if let Some(word) = self.0.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    /// Is pattern `i` among the matched ones?
    pub(super) fn contains(&self, i: u32) -> bool {
        let i = i as usize;
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}
