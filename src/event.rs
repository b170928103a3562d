//! The normalized events that sources produce and the matcher consumes.
//!
//! A delivery (one authenticated HTTP request) yields zero or more events.
//! Events carry only what pipelines match on and what commands receive; the
//! raw payload stays with the delivery. Everything here is provider-neutral:
//! `source` knows GitHub's field names, nothing past it does.

use serde::{Deserialize, Serialize};

/// The 40-zero object id forges send for "no commit" (branch creation's
/// `before`, deletion's `after`).
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// True when `sha` is absent in the forge's sense: empty or all zeros.
pub fn is_zero_sha(sha: &str) -> bool {
    sha.is_empty() || sha.bytes().all(|b| b == b'0')
}

/// One normalized event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A ref (branch or tag) moved, was created or was deleted.
    Push(PushEvent),
    /// Started by an operator (`hookd trigger`, the API).
    Manual(ManualEvent),
    /// A delivery that carries nothing to run (ping, unsupported event type).
    Ignored(IgnoredEvent),
}

impl Event {
    /// The trigger word of this event (`push`, `manual`, `ignored`).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Push(_) => "push",
            Event::Manual(_) => "manual",
            Event::Ignored(_) => "ignored",
        }
    }
}

/// Which namespace a pushed ref lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefKind {
    /// `refs/heads/*`
    Branch,
    /// `refs/tags/*`
    Tag,
    /// Anything else (`refs/notes/*`, `refs/pull/*`, …).
    Other,
}

/// A push to one ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// Repository as the forge names it: `owner/name` (GitLab: full group path).
    pub repository: String,
    /// The full ref, e.g. `refs/heads/main`.
    pub git_ref: String,
    /// Branch or tag.
    pub ref_kind: RefKind,
    /// The short name: `main` for `refs/heads/main`, `v1` for `refs/tags/v1`.
    pub ref_name: String,
    /// Commit before the push; `None` when the ref was created.
    pub before: Option<String>,
    /// Commit after the push; `None` when the ref was deleted.
    pub after: Option<String>,
    /// URL to clone the repository from, as the forge announced it.
    pub clone_url: Option<String>,
    /// Who pushed (login or name), when the forge says.
    pub pusher: Option<String>,
    /// True when the forge flagged a force push.
    pub forced: bool,
}

impl PushEvent {
    /// Builds a push event from a full ref name and two possibly-zero shas.
    pub fn new(
        repository: String,
        git_ref: String,
        before: &str,
        after: &str,
        clone_url: Option<String>,
        pusher: Option<String>,
    ) -> PushEvent {
        let (ref_kind, ref_name) = split_ref(&git_ref);
        let some_sha = |s: &str| (!is_zero_sha(s)).then(|| s.to_ascii_lowercase());
        PushEvent {
            repository,
            ref_kind,
            ref_name,
            git_ref,
            before: some_sha(before),
            after: some_sha(after),
            clone_url,
            pusher,
            forced: false,
        }
    }

    /// The ref was deleted: there is no commit to run.
    pub fn is_deletion(&self) -> bool {
        self.after.is_none()
    }

    /// The ref did not exist before this push.
    pub fn is_creation(&self) -> bool {
        self.before.is_none()
    }
}

/// Splits `refs/heads/x` / `refs/tags/x` into kind and short name.
pub fn split_ref(git_ref: &str) -> (RefKind, String) {
    if let Some(b) = git_ref.strip_prefix("refs/heads/") {
        (RefKind::Branch, b.to_string())
    } else if let Some(t) = git_ref.strip_prefix("refs/tags/") {
        (RefKind::Tag, t.to_string())
    } else {
        (RefKind::Other, git_ref.to_string())
    }
}

/// An operator-started run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualEvent {
    /// The ref to check out (defaults to the pipeline's `repo.ref`).
    pub git_ref: Option<String>,
    /// An exact commit to check out, overriding `git_ref`.
    pub commit: Option<String>,
    /// Who asked, if known.
    pub requested_by: Option<String>,
}

/// A delivery that was authenticated and stored but runs nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredEvent {
    /// Why it runs nothing, e.g. `event type "issues" is not handled by github sources`.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_split_into_kind_and_name() {
        assert_eq!(
            split_ref("refs/heads/release/1.x"),
            (RefKind::Branch, "release/1.x".into())
        );
        assert_eq!(split_ref("refs/tags/v1"), (RefKind::Tag, "v1".into()));
        assert_eq!(
            split_ref("refs/pull/1/head"),
            (RefKind::Other, "refs/pull/1/head".into())
        );
    }

    #[test]
    fn zero_shas_mean_creation_and_deletion() {
        let created = PushEvent::new(
            "a/b".into(),
            "refs/heads/x".into(),
            ZERO_SHA,
            "AB12",
            None,
            None,
        );
        assert!(created.is_creation() && !created.is_deletion());
        assert_eq!(created.after.as_deref(), Some("ab12"));
        let deleted = PushEvent::new(
            "a/b".into(),
            "refs/heads/x".into(),
            "ab",
            ZERO_SHA,
            None,
            None,
        );
        assert!(deleted.is_deletion());
    }
}
