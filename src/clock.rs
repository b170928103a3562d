//! Wall-clock helpers: hookd stores Unix milliseconds and shows RFC 3339.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    to_ms(OffsetDateTime::now_utc())
}

/// A timestamp in Unix milliseconds.
pub fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds, e.g. `2026-11-27T13:55:15.123Z`.
pub fn rfc3339(ms: i64) -> String {
    format(OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A timestamp as RFC 3339 UTC with milliseconds.
pub fn format_time(t: OffsetDateTime) -> String {
    format(Some(t)).unwrap_or_default()
}

fn format(t: Option<OffsetDateTime>) -> Option<String> {
    t?.to_offset(time::UtcOffset::UTC).format(FORMAT).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_milliseconds() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }
}
