//! Alertmanager label matchers: `name="value"`, `name!="value"`,
//! `name=~"regex"`, `name!~"regex"`. Regexes are fully anchored, as in
//! Alertmanager (`severity=~"crit"` does not match `critical`). A label that
//! is absent has the empty value, so `team!="db"` matches alerts without a
//! `team` label and `team=""` matches only those.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// The comparison of one matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One compiled matcher.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// The value or regex as written (unquoted).
    pub value: String,
    regex: Option<Regex>,
}

impl fmt::Display for LabelMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

impl LabelMatcher {
    /// Parses one matcher, e.g. `severity=~"critical|page"`. The value may be
    /// double-quoted (with `\"`, `\\` and `\n` escapes) or bare.
    pub fn parse(text: &str) -> Result<LabelMatcher, String> {
        let text = text.trim();
        let name_end = text
            .find(['=', '!'])
            .ok_or_else(|| format!("{text:?} has no operator (=, !=, =~, !~)"))?;
        let name = text[..name_end].trim();
        let valid_name = {
            let mut chars = name.chars();
            matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
                && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        };
        if !valid_name {
            return Err(format!("{name:?} is not a label name"));
        }
        let rest = &text[name_end..];
        let (op, raw) = if let Some(r) = rest.strip_prefix("=~") {
            (MatchOp::Regex, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (MatchOp::Equal, r)
        } else {
            return Err(format!("{text:?}: expected =, !=, =~ or !~ after {name:?}"));
        };
        let value = unquote(raw.trim())?;
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid regex {value:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(LabelMatcher {
            name: name.to_string(),
            op,
            value,
            regex,
        })
    }

    /// Does the label set satisfy this matcher?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

fn unquote(raw: &str) -> Result<String, String> {
    let Some(inner) = raw.strip_prefix('"') else {
        if raw.contains('"') {
            return Err(format!("unbalanced quote in {raw:?}"));
        }
        return Ok(raw.to_string());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| format!("unterminated quote in {raw:?}"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c @ ('"' | '\\')) => out.push(c),
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => return Err(format!("dangling backslash in {raw:?}")),
            },
            '"' => return Err(format!("unescaped quote inside {raw:?}")),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn alertmanager_semantics() {
        let l = labels(&[
            ("alertname", "DiskFull"),
            ("severity", "critical"),
            ("instance", "db-3"),
        ]);
        let cases = [
            (r#"alertname="DiskFull""#, true),
            (r#"alertname = "DiskFull""#, true),
            ("alertname=DiskFull", true),
            (r#"alertname!="DiskFull""#, false),
            (r#"severity=~"critical|page""#, true),
            (r#"severity=~"crit""#, false),
            (r#"severity=~"crit.*""#, true),
            (r#"severity!~"warning|info""#, true),
            (r#"team!="db""#, true),
            (r#"team="""#, true),
            (r#"instance=~"db-\\d+""#, true),
        ];
        for (text, want) in cases {
            let m = LabelMatcher::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(m.matches(&l), want, "{text}");
        }
    }

    #[test]
    fn bad_matchers_are_explained() {
        for (text, want) in [
            ("severity", "has no operator"),
            ("1abc=\"x\"", "is not a label name"),
            ("a=~\"(\"", "invalid regex"),
            ("a=\"x", "unterminated quote"),
            ("a!x", "expected =, !=, =~ or !~"),
        ] {
            let err = LabelMatcher::parse(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn displays_as_written() {
        let m = LabelMatcher::parse(r#"severity=~"critical|page""#).expect("valid");
        assert_eq!(m.to_string(), r#"severity=~"critical|page""#);
    }
}
