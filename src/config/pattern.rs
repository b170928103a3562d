//! Filter patterns for branches, tags, repositories and paths, with GitHub
//! Actions' rules: `*` matches any characters except `/`, `**` matches any
//! characters including `/`, `?` one character, `[…]` a class; a pattern
//! starting with `!` excludes what earlier patterns included, and a later
//! positive pattern can include it again (the last pattern that matches
//! decides). Parsed (and so validated) when the pipeline is loaded; a
//! pattern without glob syntax (`main`, `acme/infra`) is compared as a
//! string and never becomes a regex, and a real glob is compiled into its
//! regex the first time it is asked to match, so a daemon that has not
//! matched anything yet has not paid for (or paged in) the regex engine.

use std::sync::OnceLock;

use globset::{Glob, GlobBuilder, GlobMatcher};

/// One parsed glob.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    case_insensitive: bool,
    /// No glob syntax at all: `is_match` is a string comparison.
    literal: bool,
    glob: Glob,
    /// `glob`'s regex, compiled on the first match of a non-literal pattern.
    matcher: OnceLock<GlobMatcher>,
}

impl Pattern {
    /// Parses `text`; `case_insensitive` for repository names.
    pub fn new(text: &str, case_insensitive: bool) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty pattern".into());
        }
        let glob = GlobBuilder::new(text)
            .literal_separator(true)
            .backslash_escape(true)
            .case_insensitive(case_insensitive)
            .build()
            .map_err(|e| format!("invalid glob {text:?}: {}", e.kind()))?;
        Ok(Pattern {
            text: text.to_string(),
            case_insensitive,
            // The characters globset's parser treats specially (`,` only
            // inside `{…}`); without them every character is a literal.
            literal: !text.contains(['*', '?', '[', '{', '}', '\\']),
            glob,
            matcher: OnceLock::new(),
        })
    }

    /// Does `value` match?
    pub fn is_match(&self, value: &str) -> bool {
        if self.literal {
            // What globset's regex for an all-literal glob does: it is built
            // with `(?-u)`, so `case_insensitive` folds ASCII letters only.
            return if self.case_insensitive {
                value.eq_ignore_ascii_case(&self.text)
            } else {
                value == self.text
            };
        }
        self.matcher
            .get_or_init(|| self.glob.compile_matcher())
            .is_match(value)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The compiled glob, with the options it was built with: a `GlobSet`
    /// built from these matches exactly what [`Pattern::is_match`] does.
    pub fn glob(&self) -> &globset::Glob {
        &self.glob
    }
}

/// An ordered list of patterns with `!` negation.
#[derive(Debug, Clone)]
pub struct PatternList {
    items: Vec<(bool, Pattern)>,
}

impl PatternList {
    /// Parses every pattern; returns the index and message of each bad one.
    pub fn new<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        case_insensitive: bool,
    ) -> Result<PatternList, Vec<(usize, String)>> {
        let mut items = Vec::new();
        let mut errors = Vec::new();
        for (i, text) in texts.into_iter().enumerate() {
            let (negated, body) = match text.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, text),
            };
            match Pattern::new(body, case_insensitive) {
                Ok(p) => items.push((negated, p)),
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() && !items.is_empty() && items.iter().all(|(neg, _)| *neg) {
            errors.push((
                0,
                "every pattern starts with '!': add at least one pattern that includes something"
                    .to_string(),
            ));
        }
        if errors.is_empty() {
            Ok(PatternList { items })
        } else {
            Err(errors)
        }
    }

    /// Does `value` pass the list? The last matching pattern decides.
    pub fn is_match(&self, value: &str) -> bool {
        let mut result = false;
        for (negated, p) in &self.items {
            if p.is_match(value) {
                result = !negated;
            }
        }
        result
    }

    /// The patterns as written, e.g. `[main, release/*]`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .items
            .iter()
            .map(|(neg, p)| format!("{}{}", if *neg { "!" } else { "" }, p.as_str()))
            .collect();
        format!("[{}]", parts.join(", "))
    }

    /// True when the list is one literal pattern equal to `value` (used by indexes).
    pub fn literals(&self) -> Option<Vec<&str>> {
        self.items
            .iter()
            .map(|(neg, p)| {
                let literal = !neg && p.literal;
                literal.then(|| p.as_str())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> PatternList {
        PatternList::new(p.iter().copied(), false).expect("valid patterns")
    }

    #[test]
    fn github_actions_filter_rules() {
        // (patterns, value, expected)
        let cases: &[(&[&str], &str, bool)] = &[
            (&["main"], "main", true),
            (&["main"], "main2", false),
            (&["*"], "main", true),
            (&["*"], "release/1", false),
            (&["**"], "release/1/x", true),
            (&["release/*"], "release/1", true),
            (&["release/*"], "release/1/hotfix", false),
            (&["release/**"], "release/1/hotfix", true),
            (&["feature-*"], "feature-x", true),
            (&["v*"], "v1.2.3", true),
            (&["v[12].*"], "v2.0", true),
            (&["v[12].*"], "v3.0", false),
            (
                &["release/**", "!release/**-alpha"],
                "release/1-alpha",
                false,
            ),
            (&["release/**", "!release/**-alpha"], "release/1", true),
            (&["*", "!main", "main"], "main", true),
            (&["$(touch x)"], "$(touch x)", true),
        ];
        for (patterns, value, expected) in cases {
            assert_eq!(
                list(patterns).is_match(value),
                *expected,
                "{patterns:?} against {value:?}"
            );
        }
    }

    #[test]
    fn repository_patterns_ignore_case() {
        let l = PatternList::new(["acme/*"], true).expect("valid");
        assert!(l.is_match("Acme/Infra"));
        assert!(!l.is_match("acme/infra/sub"));
    }

    #[test]
    fn bad_patterns_are_reported_by_index() {
        let err = PatternList::new(["main", "[oops", ""], false).expect_err("invalid");
        assert_eq!(err.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2]);
        assert!(PatternList::new(["!main"], false).is_err());
    }

    #[test]
    fn literal_patterns_match_as_their_globs_do() {
        // The string comparison of a literal pattern against the glob's own
        // compiled regex, over values that differ by case, separators,
        // prefixes and non-ASCII letters.
        let values = [
            "main",
            "Main",
            "MAIN",
            "main2",
            "mai",
            "",
            "release/1",
            "Release/1",
            "acme/infra",
            "Acme/Infra",
            "acme/infra/sub",
            "straße",
            "STRASSE",
            "Straße",
            "\u{212a}elvin",
            "kelvin",
            "a,b",
            "a]b",
            "ümlaut",
            "Ümlaut",
        ];
        for text in [
            "main",
            "release/1",
            "acme/infra",
            "straße",
            "kelvin",
            "a,b",
            "a]b",
            "ümlaut",
        ] {
            for case_insensitive in [false, true] {
                let p = Pattern::new(text, case_insensitive).expect("valid");
                assert!(p.literal, "{text:?} is a literal");
                let regex = p.glob.compile_matcher();
                for v in values {
                    assert_eq!(
                        p.is_match(v),
                        regex.is_match(v),
                        "{text:?} (case_insensitive: {case_insensitive}) against {v:?}"
                    );
                }
                assert!(
                    p.matcher.get().is_none(),
                    "a literal never compiles a regex"
                );
            }
        }
        for text in ["rel/*", "v?", "[ab]", "{a,b}", "a\\*"] {
            let p = Pattern::new(text, false).expect("valid");
            assert!(!p.literal, "{text:?} is a glob");
            assert!(
                p.matcher.get().is_none(),
                "compiled only when first matched"
            );
            p.is_match("x");
            assert!(p.matcher.get().is_some());
        }
    }

    #[test]
    fn literals_are_recognised() {
        assert_eq!(list(&["main", "dev"]).literals(), Some(vec!["main", "dev"]));
        assert_eq!(list(&["main", "rel/*"]).literals(), None);
    }
}
