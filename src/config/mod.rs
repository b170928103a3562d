//! Daemon configuration (`hookd.yaml`) and pipeline definitions (`pipelines/*.yaml`).
//!
//! Two layers, as everywhere in hookd's config: `Raw*` structs mirror the YAML
//! (every struct denies unknown fields; values that need checking are kept
//! `Spanned` so errors can point at them), then `validate` turns them into the
//! typed config or returns *every* error found, each naming file, line,
//! column and field. Only validated types leave this module.

mod daemon;
mod label_matcher;
mod pattern;
mod pipeline;

pub use daemon::{
    AlertMapping, BasicAuth, Credentials, DaemonConfig, DeliveryIdPlace, GenericConfig,
    HmacAlgorithm, HmacConfig, PushMapping, Retention, Secret, SignatureEncoding, SourceConfig,
    SourceKind, StoreConfig, TokenPlace, DEFAULT_CONFIG_FILE,
};
pub use label_matcher::{LabelMatcher, MatchOp};
pub use pattern::{Pattern, PatternList};
pub use pipeline::{
    load_pipelines, parse_pipeline, AlertStatusFilter, AlertTrigger, OnNewEvent, Pipeline,
    PushTrigger, Remediation, Repo, Retry, Step, StepCommand, Trigger, WorkspaceMode,
};

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

/// One configuration problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, 0 when the problem concerns the whole file.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    /// What is wrong, starting with the field path when there is one
    /// (`steps[1].timeout: invalid duration "10 mins"`).
    pub message: String,
}

impl ConfigError {
    /// An error about a whole file (unreadable, missing).
    pub fn file(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }

    /// An error at a YAML location.
    pub fn at(file: &Path, loc: Location, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        }
    }

    /// Converts a YAML parse / type error into a located error.
    fn from_yaml(file: &Path, err: &serde_saphyr::Error) -> ConfigError {
        let options = serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        };
        let rendered = err.render_with_options(options);
        let mut message = rendered.trim().trim_start_matches("error: ").to_string();
        // The renderer prefixes "line L column C: "; we print the location ourselves.
        if let Some(rest) = message.strip_prefix("line ") {
            if let Some((_, tail)) = rest.split_once(": ") {
                message = tail.to_string();
            }
        }
        // Some messages end with the location again; it is printed once, in front.
        if let Some(i) = message.rfind(" at line ") {
            if message[i..].contains(", column ") {
                message.truncate(i);
            }
        }
        let (line, column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// All problems found while loading, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors for one file while validating it.
pub(crate) struct Errors<'a> {
    file: &'a Path,
    list: Vec<ConfigError>,
}

impl<'a> Errors<'a> {
    pub(crate) fn new(file: &'a Path) -> Self {
        Errors {
            file,
            list: Vec::new(),
        }
    }

    pub(crate) fn at(&mut self, loc: Location, message: impl Into<String>) {
        self.list.push(ConfigError::at(self.file, loc, message));
    }

    pub(crate) fn whole(&mut self, message: impl Into<String>) {
        self.list.push(ConfigError::file(self.file, message));
    }

    pub(crate) fn into_vec(self) -> Vec<ConfigError> {
        self.list
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Parses a duration field such as `10m` or `1h 30m`; zero is refused.
    pub(crate) fn duration(&mut self, field: &str, value: &Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(value.value.trim()) {
            Ok(d) if d.is_zero() => {
                self.at(
                    value.referenced,
                    format!("{field}: duration must be greater than zero"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.at(
                    value.referenced,
                    format!(
                        "{field}: invalid duration {:?} ({e}); write e.g. 90s, 10m or 1h30m",
                        value.value
                    ),
                );
                None
            }
        }
    }
}

/// Parses YAML text into a raw config struct, locating any error in `file`.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| ConfigError::from_yaml(file, &e))
}

/// Resolves `p` against the directory of the file that named it.
pub(crate) fn resolve_path(base_dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// True for a valid environment variable name.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// True for names used in paths and URLs (pipelines, sources):
/// ASCII letters, digits, `.`, `_` and `-`, not starting with `.`.
pub(crate) fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
