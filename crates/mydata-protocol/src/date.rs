//! Calendar dates in the forms the platform and DPs use (spec D12), and UTC instants.
//!
//! The core never reads the clock: callers pass a [`UnixTime`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IdKind, Result};

/// An instant as UTC seconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ` or a plain integer of seconds.
    pub fn parse(s: &str) -> Result<Self> {
        if let Ok(n) = s.parse::<i64>() {
            return Ok(UnixTime(n));
        }
        let bad = || {
            Error::invalid(
                IdKind::Date,
                "expected unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ",
            )
        };
        let (date, time) = match s.split_once('T') {
            Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
            None => (s, None),
        };
        let d: CivilDate = date.parse()?;
        let secs = match time {
            None => 0,
            Some(t) => {
                let parts: Vec<&str> = t.split(':').collect();
                if parts.len() != 3 || parts.iter().any(|p| p.len() != 2) {
                    return Err(bad());
                }
                let n: Vec<i64> = parts
                    .iter()
                    .map(|p| p.parse::<i64>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| bad())?;
                if n[0] > 23 || n[1] > 59 || n[2] > 60 {
                    return Err(bad());
                }
                n[0] * 3600 + n[1] * 60 + n[2]
            }
        };
        Ok(UnixTime(d.days_since_epoch() * 86_400 + secs))
    }
}

impl fmt::Display for UnixTime {
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400);
        let s = self.0.rem_euclid(86_400);
        let d = CivilDate::from_days_since_epoch(days);
        write!(
            f,
            "{}T{:02}:{:02}:{:02}Z",
            d.iso(),
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// A proleptic Gregorian calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilDate {
    year: i32,
    month: u8,
    day: u8,
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// The date forms a DP template may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateFormat {
    /// `0770101`: ROC year in 3 digits, month, day.
    Roc7,
    /// `077/01/01`.
    RocSlash,
    /// `19880101`.
    Gregorian8,
    /// `1988-01-01`.
    Iso,
    /// `1988/01/01`.
    GregorianSlash,
}

impl CivilDate {
    /// A date from its parts, checked against the calendar.
    pub fn new(year: i32, month: u8, day: u8) -> Result<Self> {
        if !(1..=9999).contains(&year) {
            return Err(Error::invalid(IdKind::Date, "year out of range"));
        }
        if !(1..=12).contains(&month) {
            return Err(Error::invalid(IdKind::Date, "month must be 01-12"));
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(Error::invalid(IdKind::Date, "no such day in that month"));
        }
        Ok(CivilDate { year, month, day })
    }

    /// A date from a ROC (民國) year, month and day; ROC year 1 is 1912.
    pub fn from_roc(roc_year: i32, month: u8, day: u8) -> Result<Self> {
        if roc_year < 1 {
            return Err(Error::invalid(
                IdKind::Date,
                "ROC years before 1 (1912) are not supported",
            ));
        }
        Self::new(roc_year + 1911, month, day)
    }

    /// Parses a ROC date: `0770101`, `770101` (ROC year below 100), `077/01/01` or `77/01/01`.
    pub fn parse_roc(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                IdKind::Date,
                "expected a ROC date such as 0770101 or 077/01/01",
            )
        };
        let digits = |p: &str| -> Result<i32> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        if !s.is_ascii() {
            return Err(bad());
        }
        let (y, m, d) = if s.contains('/') {
            let parts: Vec<&str> = s.split('/').collect();
            if parts.len() != 3
                || !(2..=3).contains(&parts[0].len())
                || parts[1].len() != 2
                || parts[2].len() != 2
            {
                return Err(bad());
            }
            (digits(parts[0])?, digits(parts[1])?, digits(parts[2])?)
        } else {
            match s.len() {
                7 => (digits(&s[..3])?, digits(&s[3..5])?, digits(&s[5..])?),
                6 => (digits(&s[..2])?, digits(&s[2..4])?, digits(&s[4..])?),
                _ => return Err(bad()),
            }
        };
        Self::from_roc(
            y,
            u8::try_from(m).map_err(|_| bad())?,
            u8::try_from(d).map_err(|_| bad())?,
        )
    }

    /// Gregorian year.
    pub fn year(&self) -> i32 {
        self.year
    }
    /// Month 1–12.
    pub fn month(&self) -> u8 {
        self.month
    }
    /// Day of month.
    pub fn day(&self) -> u8 {
        self.day
    }
    /// ROC year (Gregorian − 1911).
    pub fn roc_year(&self) -> i32 {
        self.year - 1911
    }

    /// `YYYY-MM-DD`.
    pub fn iso(&self) -> String {
        self.render(DateFormat::Iso)
    }

    /// Renders the date in one of the DP template forms. Dates before 1912 render ROC forms with year 000.
    pub fn render(&self, f: DateFormat) -> String {
        let (y, m, d) = (self.year, self.month, self.day);
        let r = self.roc_year().max(0);
        match f {
            DateFormat::Roc7 => format!("{r:03}{m:02}{d:02}"),
            DateFormat::RocSlash => format!("{r:03}/{m:02}/{d:02}"),
            DateFormat::Gregorian8 => format!("{y:04}{m:02}{d:02}"),
            DateFormat::Iso => format!("{y:04}-{m:02}-{d:02}"),
            DateFormat::GregorianSlash => format!("{y:04}/{m:02}/{d:02}"),
        }
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(&self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` days after 1970-01-01.
    pub fn from_days_since_epoch(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        CivilDate { year, month, day }
    }
}

impl FromStr for CivilDate {
    type Err = Error;
    /// Parses a Gregorian `YYYY-MM-DD`, `YYYY/MM/DD` or `YYYYMMDD`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid(IdKind::Date, "expected YYYY-MM-DD, YYYY/MM/DD or YYYYMMDD");
        if !s.is_ascii() {
            return Err(bad());
        }
        let b = s.as_bytes();
        let (y, m, d) = match b.len() {
            10 if (b[4] == b'-' && b[7] == b'-') || (b[4] == b'/' && b[7] == b'/') => {
                (&s[..4], &s[5..7], &s[8..])
            }
            8 => (&s[..4], &s[4..6], &s[6..]),
            _ => return Err(bad()),
        };
        let num = |p: &str| -> Result<u32> {
            if !p.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        Self::new(num(y)? as i32, num(m)? as u8, num(d)? as u8)
    }
}

impl fmt::Display for CivilDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.iso())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_forms() {
        let d = CivilDate::parse_roc("0770101").unwrap();
        assert_eq!((d.year(), d.month(), d.day()), (1988, 1, 1));
        assert_eq!(CivilDate::parse_roc("770101").unwrap(), d);
        assert_eq!(CivilDate::parse_roc("077/01/01").unwrap(), d);
        assert_eq!(CivilDate::parse_roc("77/01/01").unwrap(), d);
        assert_eq!(CivilDate::parse_roc("1130229").unwrap().iso(), "2024-02-29");
        for bad in [
            "1120229",
            "0771301",
            "0770132",
            "0000101",
            "077011",
            "07701011",
            "077-01-01",
            "7/01/01",
            "a770101",
            "077/1/01",
            "+770101",
        ] {
            assert!(CivilDate::parse_roc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_every_format() {
        let d = CivilDate::new(1988, 1, 1).unwrap();
        assert_eq!(d.render(DateFormat::Roc7), "0770101");
        assert_eq!(d.render(DateFormat::RocSlash), "077/01/01");
        assert_eq!(d.render(DateFormat::Gregorian8), "19880101");
        assert_eq!(d.render(DateFormat::Iso), "1988-01-01");
        assert_eq!(d.render(DateFormat::GregorianSlash), "1988/01/01");
        assert_eq!(
            CivilDate::new(2024, 12, 31)
                .unwrap()
                .render(DateFormat::Roc7),
            "1131231"
        );
    }

    #[test]
    fn gregorian_parse_and_calendar_rules() {
        assert_eq!(
            "1988-01-01".parse::<CivilDate>().unwrap(),
            CivilDate::new(1988, 1, 1).unwrap()
        );
        assert_eq!(
            "1988/01/01".parse::<CivilDate>().unwrap().iso(),
            "1988-01-01"
        );
        assert_eq!("19880101".parse::<CivilDate>().unwrap().iso(), "1988-01-01");
        assert!("2000-02-29".parse::<CivilDate>().is_ok());
        assert!("1900-02-29".parse::<CivilDate>().is_err());
        assert!("2023-04-31".parse::<CivilDate>().is_err());
        assert!("1988-1-01".parse::<CivilDate>().is_err());
        assert!("1988-01/01".parse::<CivilDate>().is_err());
        assert!("19王0101".parse::<CivilDate>().is_err());
        assert!("1988-0王1".parse::<CivilDate>().is_err());
        assert!(UnixTime::parse("2026-01-01T0王:00Z").is_err());
        assert!(UnixTime::parse("王").is_err());
        assert!(CivilDate::from_roc(0, 1, 1).is_err());
    }

    #[test]
    fn epoch_days_round_trip() {
        assert_eq!(CivilDate::new(1970, 1, 1).unwrap().days_since_epoch(), 0);
        assert_eq!(
            CivilDate::new(2000, 3, 1).unwrap().days_since_epoch(),
            11_017
        );
        for days in (-800_000..800_000).step_by(997) {
            assert_eq!(
                CivilDate::from_days_since_epoch(days).days_since_epoch(),
                days
            );
        }
    }

    #[test]
    fn unix_time_parse_and_display() {
        assert_eq!(
            UnixTime::parse("1700000000").unwrap(),
            UnixTime(1_700_000_000)
        );
        assert_eq!(
            UnixTime::parse("2026-01-01").unwrap(),
            UnixTime(1_767_225_600)
        );
        assert_eq!(
            UnixTime::parse("2026-01-01T01:02:03Z").unwrap(),
            UnixTime(1_767_225_600 + 3723)
        );
        assert_eq!(
            UnixTime(1_767_225_600 + 3723).to_string(),
            "2026-01-01T01:02:03Z"
        );
        assert!(UnixTime::parse("2026-01-01T01:02:03").is_err());
        assert!(UnixTime::parse("2026-01-01T25:00:00Z").is_err());
        assert!(UnixTime::parse("yesterday").is_err());
    }
}
