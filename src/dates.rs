//! The date formats mkv speaks: `20130524T000000Z` (SigV4), HTTP dates (S3's
//! `Last-Modified`, `If-Modified-Since`; nginx's listings; a copy's `Date`, which nginx
//! gives the file it writes) and ISO 8601 with milliseconds (S3 listings); all UTC, pure.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month, day) of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u32, |acc, &c| acc * 10 + (c - b'0') as u32))
}

fn to_unix(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86400 + (h * 3600 + mi * 60 + s) as i64)
}

/// `YYYYMMDD'T'HHMMSS'Z'` (SigV4's `X-Amz-Date`) → Unix seconds.
pub fn parse_amz_date(s: &[u8]) -> Option<i64> {
    if s.len() != 16 || s[8] != b'T' || s[15] != b'Z' {
        return None;
    }
    to_unix(
        digits(&s[0..4])? as i64,
        digits(&s[4..6])?,
        digits(&s[6..8])?,
        digits(&s[9..11])?,
        digits(&s[11..13])?,
        digits(&s[13..15])?,
    )
}

/// Unix seconds → `YYYYMMDD'T'HHMMSS'Z'`.
pub fn amz_date(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86400));
    let t = secs.rem_euclid(86400);
    format!("{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z", t / 3600, t / 60 % 60, t % 60)
}

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// An HTTP date → Unix seconds: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) and the two
/// obsolete forms. A date that does not parse is ignored by the conditional headers, as
/// RFC 9110 says.
pub fn parse_http_date(s: &[u8]) -> Option<i64> {
    let s = s.trim_ascii();
    // RFC 9110 §5.6.7: a recipient accepts all three forms, though only the first is sent
    imf_fixdate(s).or_else(|| rfc850(s)).or_else(|| asctime(s))
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`; a two-digit year from 70 is 19xx, else 20xx.
fn rfc850(s: &[u8]) -> Option<i64> {
    let comma = s.iter().position(|&b| b == b',')?;
    let r = s.get(comma + 1..)?.strip_prefix(b" ")?;
    if r.len() != 22 || r[2] != b'-' || r[6] != b'-' || r[9] != b' ' || &r[18..] != b" GMT" {
        return None;
    }
    let yy = digits(&r[7..9])? as i64;
    let year = if yy >= 70 { 1900 + yy } else { 2000 + yy };
    let (h, mi, sec) = clock(&r[10..18])?;
    to_unix(year, month(&r[3..6])?, digits(&r[..2])?, h, mi, sec)
}

/// C's asctime: `Sun Nov  6 08:49:37 1994` (the day padded with a space).
fn asctime(s: &[u8]) -> Option<i64> {
    if s.len() != 24 || s[3] != b' ' || s[7] != b' ' || s[10] != b' ' || s[19] != b' ' {
        return None;
    }
    let (h, mi, sec) = clock(&s[11..19])?;
    to_unix(digits(&s[20..])? as i64, month(&s[4..7])?, digits(s[8..10].trim_ascii_start())?, h, mi, sec)
}

/// IMF-fixdate, the form HTTP sends.
fn imf_fixdate(s: &[u8]) -> Option<i64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT": the weekday is not checked against the date
    if s.len() != 29 || &s[3..5] != b", " || &s[25..] != b" GMT" || s[7] != b' ' || s[11] != b' ' || s[16] != b' ' {
        return None;
    }
    let (h, mi, sec) = clock(&s[17..25])?;
    to_unix(digits(&s[12..16])? as i64, month(&s[8..11])?, digits(&s[5..7])?, h, mi, sec)
}

/// `Nov` → 11.
fn month(name: &[u8]) -> Option<u32> {
    MONTHS.iter().position(|m| name == *m).map(|i| i as u32 + 1)
}

/// `08:49:37` → (8, 49, 37).
fn clock(t: &[u8]) -> Option<(u32, u32, u32)> {
    if t.len() != 8 || t[2] != b':' || t[5] != b':' {
        return None;
    }
    Some((digits(&t[..2])?, digits(&t[3..5])?, digits(&t[6..])?))
}

/// Unix seconds → IMF-fixdate, for `Last-Modified`.
pub fn http_date(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let (y, mo, d) = civil_from_days(days);
    let t = secs.rem_euclid(86400);
    let month = std::str::from_utf8(MONTHS[mo as usize - 1]).unwrap_or("Jan");
    format!(
        "{}, {d:02} {month} {y:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// Unix milliseconds → `2009-10-12T17:50:30.000Z`, as listings write `LastModified`: in
/// whole seconds, as S3 does and as `Last-Modified` says it. A listing with the
/// milliseconds disagreed with HEAD, and `aws s3 sync --exact-timestamps` (which sets a
/// downloaded file's mtime in whole seconds) downloaded every file again on every run.
pub fn iso8601_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86400));
    let t = secs.rem_euclid(86400);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.000Z", t / 3600, t / 60 % 60, t % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date(b"20130524T000000Z"), Some(1369353600));
        assert_eq!(parse_amz_date(b"20150830T123600Z"), Some(1440938160));
        assert_eq!(amz_date(1369353600), "20130524T000000Z");
        for bad in [
            &b"20130524T000000"[..],
            b"20130524 000000Z",
            b"20131324T000000Z",
            b"20130230T000000Z",
            b"2013O524T000000Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad:?}");
        }
        assert_eq!(parse_amz_date(b"20240229T235959Z"), Some(1709251199));
    }

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date(b"Fri, 24 May 2013 00:00:00 GMT"), Some(1369353600));
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // the two obsolete forms a recipient must still accept (RFC 9110 §5.6.7)
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), Some(784111777));
        assert_eq!(parse_http_date(b"Thu Feb 29 23:59:59 2024"), Some(1709251199));
        assert_eq!(parse_http_date(b"Thursday, 29-Feb-24 23:59:59 GMT"), Some(1709251199));
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 UTC"), None);
        assert_eq!(parse_http_date(b"Sun Nov 6 08:49:37 1994"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Foo 1994 08:49:37 GMT"), None);
        for secs in [0, 951782400, 1369353600, 1709251199, 4102444800] {
            assert_eq!(parse_http_date(http_date(secs).as_bytes()), Some(secs));
            assert_eq!(parse_amz_date(amz_date(secs).as_bytes()), Some(secs));
        }
    }

    #[test]
    fn iso8601() {
        assert_eq!(iso8601_ms(1255369830000), "2009-10-12T17:50:30.000Z");
        assert_eq!(iso8601_ms(1369353600923), "2013-05-24T00:00:00.000Z");
    }
}
