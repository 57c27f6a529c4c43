//! Calendar arithmetic shared by the machines that print dates (`stamp`'s ctime, the
//! `Date` header of `http`): days since the Unix epoch to a proleptic Gregorian date.
//! Written by hand because a date crate would be the only dependency for two formats.

/// The proleptic Gregorian date `(year, month 1..=12, day 1..=31)` of the day `days`
/// after 1970-01-01 (negative: before). Howard Hinnant's `civil_from_days`: count in
/// 400-year eras of 146 097 days, with years starting on 1 March so that the leap day
/// falls at the end of the year.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from 1 March, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day of the week of the day `days` after 1970-01-01: 0 is Sunday. (That day was a
/// Thursday.)
pub fn weekday(days: i64) -> usize {
    (days + 4).rem_euclid(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_from_days_agrees_with_counting_day_by_day() {
        // Walk from 1 January 1600 across 800 years (two whole 400-year cycles, through
        // the epoch) with a month-length table, and compare every day.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1600_i64, 1_u32, 1_u32);
        let start = -135_140; // 1600-01-01 counted from 1970-01-01
        for days in start..start + 292_194 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        assert_eq!((y, m, d), (2400, 1, 1));
    }

    #[test]
    fn weekdays() {
        assert_eq!(weekday(0), 4, "1970-01-01 was a Thursday");
        assert_eq!(weekday(-1), 3);
        assert_eq!(weekday(20_779), 0, "2026-11-22 is a Sunday");
    }
}
