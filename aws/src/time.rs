//! UTC time as AWS writes it: `20150830T123600Z` in signatures, `2015-08-30T12:36:00Z` in
//! credential expirations, `Sun, 30 Aug 2015 12:36:00 GMT` in HTTP `Date` headers. Seconds since
//! the Unix epoch inside; the civil-date conversion is Howard Hinnant's `days_from_civil`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A moment in UTC, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcTime(pub i64);

impl UtcTime {
    pub fn now() -> UtcTime {
        UtcTime::from_system(SystemTime::now())
    }

    pub fn from_system(time: SystemTime) -> UtcTime {
        match time.duration_since(UNIX_EPOCH) {
            Ok(d) => UtcTime(d.as_secs() as i64),
            Err(e) => UtcTime(-(e.duration().as_secs() as i64)),
        }
    }

    pub fn plus(self, seconds: i64) -> UtcTime {
        UtcTime(self.0 + seconds)
    }

    /// Seconds from `self` to `later` (negative when `later` is earlier).
    pub fn seconds_until(self, later: UtcTime) -> i64 {
        later.0 - self.0
    }

    pub fn until(self, later: UtcTime) -> Duration {
        Duration::from_secs(self.seconds_until(later).max(0) as u64)
    }

    fn parts(self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
    }

    /// `20150830T123600Z`
    pub fn amz_date(self) -> String {
        let (y, mo, d, h, mi, s) = self.parts();
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
    }

    /// `20150830`
    pub fn date(self) -> String {
        let (y, mo, d, ..) = self.parts();
        format!("{y:04}{mo:02}{d:02}")
    }

    /// `2015-08-30T12:36:00Z`
    pub fn rfc3339(self) -> String {
        let (y, mo, d, h, mi, s) = self.parts();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }

    /// `2015-08-30T12:36:00Z`, with optional fractional seconds and a `Z` or `+00:00` zone.
    pub fn parse_rfc3339(text: &str) -> Option<UtcTime> {
        let text = text.trim();
        let b = text.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u32>().ok();
        let (y, mo, d, h, mi, s) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
        let mut rest = &text[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            rest = &frac[digits..];
        }
        let offset = match rest {
            "Z" | "z" | "+00:00" | "-00:00" => 0,
            _ => {
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let (oh, om) = rest[1..].split_once(':')?;
                sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
            }
        };
        UtcTime::from_civil(y as i64, mo, d, h, mi, s).map(|t| t.plus(-offset))
    }

    /// The HTTP `Date` format, `Sun, 30 Aug 2015 12:36:00 GMT`.
    pub fn parse_http_date(text: &str) -> Option<UtcTime> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [_, day, month, year, clock, zone] = words[..] else { return None };
        if zone != "GMT" {
            return None;
        }
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
        let mut hms = clock.split(':').map(|p| p.parse::<u32>().ok());
        let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
        UtcTime::from_civil(year.parse().ok()?, month, day.parse().ok()?, h, mi, s)
    }

    fn from_civil(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<UtcTime> {
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        Some(UtcTime(days * 86_400 + (h * 3600 + mi * 60 + s) as i64))
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_the_aws_forms() {
        let t = UtcTime::parse_rfc3339("2015-08-30T12:36:00Z").unwrap();
        assert_eq!(t.0, 1_440_938_160);
        assert_eq!(t.amz_date(), "20150830T123600Z");
        assert_eq!(t.date(), "20150830");
        assert_eq!(t.rfc3339(), "2015-08-30T12:36:00Z");
        assert_eq!(UtcTime::parse_rfc3339("2015-08-30T12:36:00.123Z"), Some(t));
        assert_eq!(UtcTime::parse_rfc3339("2015-08-30T14:36:00+02:00"), Some(t));
        assert_eq!(UtcTime::parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"), Some(t));
        assert_eq!(UtcTime(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(UtcTime::parse_rfc3339("2024-02-29T23:59:59Z").unwrap().plus(1).rfc3339(), "2024-03-01T00:00:00Z");
    }

    #[test]
    fn garbage_is_none() {
        for bad in [
            "",
            "2015-08-30",
            "2015-13-30T12:36:00Z",
            "2015-08-30T12:36:00",
            "xxxx-08-30T12:36:00Z",
            "2015-08-30T12:36:00.Z",
            "ü",
        ] {
            assert_eq!(UtcTime::parse_rfc3339(bad), None, "{bad:?}");
        }
        for bad in ["", "Sun, 30 Aug 2015 12:36:00 PST", "Sun, 30 Foo 2015 12:36:00 GMT", "Sun, 30 Aug 2015 12:36 GMT"]
        {
            assert_eq!(UtcTime::parse_http_date(bad), None, "{bad:?}");
        }
    }
}
