//! Timestamps: milliseconds since the Unix epoch inside the system (D1 columns, leases,
//! delays), RFC 3339 in UTC at its edges (API bodies, queue messages), as JavaScript's
//! `Date.prototype.toISOString` writes it.

const DAY_MS: i64 = 86_400_000;

/// `2026-11-29T12:00:00.000Z` for a time in ms since the epoch.
pub fn format_ms(ms: u64) -> String {
    let ms = ms as i64;
    let (days, rest) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (y, m, d) = civil_from_days(days);
    let (h, rest) = (rest / 3_600_000, rest % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (the form [`format_ms`] and JavaScript write) to ms
/// since the epoch. Anything else gives `None`: times before 1970, and impossible dates and
/// times (`2025-02-31`, February 29 of a common year, month 13, hour 24, second 60: JavaScript
/// never writes a leap second), which would otherwise be read as a later valid date.
pub fn parse_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, min, s) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let milli = match (b[19], b.len()) {
        (b'Z', 20) => 0,
        (b'.', n) if n >= 22 && b[n - 1] == b'Z' => {
            let fraction = text.get(20..n - 1)?;
            let ms = digits(20..(n - 1).min(23))?;
            if !fraction.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            ms * 10_i64.pow(3u32.saturating_sub(fraction.len().min(3) as u32))
        }
        _ => return None,
    };
    if !(1..=12).contains(&m)
        || !(1..=days_in_month(y, m)).contains(&d)
        || h > 23
        || min > 59
        || s > 59
    {
        return None;
    }
    let days = days_from_civil(y, m, d);
    let ms = days * DAY_MS + h * 3_600_000 + min * 60_000 + s * 1000 + milli;
    u64::try_from(ms).ok()
}

/// Days in month `m` (1 to 12) of year `y` (Gregorian leap years).
fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of a day number.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Howard Hinnant's `days_from_civil`: the day number of a date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Days since 1970-01-01 of a date, counting month by month; `None` if there is no such
    /// day.
    fn naive_day(y: i64, m: i64, d: i64) -> Option<u64> {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = |y: i64, m: i64| match m {
            2 => 28 + u64::from(leap(y)),
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if !(1..=12).contains(&m) || d < 1 || d as u64 > month_len(y, m) {
            return None;
        }
        let mut days = 0;
        for year in 1970..y {
            days += 365 + u64::from(leap(year));
        }
        for month in 1..m {
            days += month_len(y, month);
        }
        Some(days + d as u64 - 1)
    }

    #[test]
    fn known_dates() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_764_417_600_123), "2025-11-29T12:00:00.123Z");
        assert_eq!(
            parse_ms("2025-11-29T12:00:00.123Z"),
            Some(1_764_417_600_123)
        );
        assert_eq!(parse_ms("2025-11-29T12:00:00Z"), Some(1_764_417_600_000));
        assert_eq!(parse_ms("2025-11-29T12:00:00.5Z"), Some(1_764_417_600_500));
        assert_eq!(
            parse_ms("2024-02-29T00:00:00.000Z"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "",
            "2025-11-29",
            "2025-11-29T12:00:00.123",
            "2025-13-01T00:00:00Z",
            "x025-11-29T12:00:00Z",
            "2025-11-29T12:00:00.Z",
            "2025-11-29T12:00:00+01:00",
            // Impossible dates and times, which must not roll over into valid ones.
            "2025-02-31T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2025-04-31T00:00:00Z",
            "2025-00-10T00:00:00Z",
            "2025-01-00T00:00:00Z",
            "2025-01-32T00:00:00Z",
            "2025-11-29T24:00:00Z",
            "2025-11-29T12:60:00Z",
            "2025-11-29T12:00:60Z",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(ms in 0u64..253_402_300_799_999) {
            prop_assert_eq!(parse_ms(&format_ms(ms)), Some(ms));
        }

        /// Every `YYYY-MM-DD` with fields in 0..=99 parses exactly when a naive calendar (days
        /// counted one by one from 1970, no formula shared with the parser) has that date.
        #[test]
        fn dates_agree_with_a_naive_calendar(y in 1970i64..2400, m in 0i64..14, d in 0i64..33) {
            let text = format!("{y:04}-{m:02}-{d:02}T00:00:00Z");
            prop_assert_eq!(parse_ms(&text), naive_day(y, m, d).map(|days| days * DAY_MS as u64));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse_ms(&s);
        }
    }
}
