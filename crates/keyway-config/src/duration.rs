//! Durations as written in the configuration: `500ms`, `2s`, `1.5s`, `1m`, `0s`.
//!
//! Invariants: the grammar is `DIGITS [ "." DIGITS ] UNIT` with `UNIT` one of
//! `ms`, `s`, `m`, `h`, nothing else (no sign, no space, no exponent, no bare
//! number). Arithmetic is exact down to the nanosecond (fractions below it are
//! truncated) and never overflows: a value too large for [`Duration`] is an error.

use std::time::Duration;

const EXPECTED: &str = "expected a number with unit ms, s, m or h";

/// Parse a configuration duration such as `500ms`, `2s`, `1.5s`, `1m` or `0s`.
///
/// The error is a lowercase description of the expected form, meant to follow
/// `invalid duration "..." for KEY: `.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.starts_with('-') {
        return Err(format!("a duration cannot be negative; {EXPECTED}"));
    }
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    let unit_nanos: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "" if !number.is_empty() => return Err(format!("missing unit; {EXPECTED}")),
        _ => return Err(EXPECTED.to_string()),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let well_formed = !whole.is_empty()
        && (number.len() == whole.len() || !fraction.is_empty())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(EXPECTED.to_string());
    }
    let too_large = || "duration is too large".to_string();
    let mut nanos: u128 = 0;
    for digit in whole.bytes() {
        nanos = nanos
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(digit - b'0')))
            .ok_or_else(too_large)?;
        // Bounded early so the multiplication by the unit below cannot overflow.
        if nanos > u128::from(u64::MAX) {
            return Err(too_large());
        }
    }
    nanos *= unit_nanos;
    // 18 fraction digits are past a nanosecond for every unit (1h = 3.6e12 ns):
    // the rest cannot change the result, and ignoring it keeps this in u128.
    let mut scale: u128 = 1;
    let mut fraction_value: u128 = 0;
    for digit in fraction.bytes().take(18) {
        fraction_value = fraction_value * 10 + u128::from(digit - b'0');
        scale *= 10;
    }
    nanos += fraction_value * unit_nanos / scale;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_large())?;
    let subsec = u32::try_from(nanos % 1_000_000_000).map_err(|_| too_large())?;
    Ok(Duration::new(secs, subsec))
}

/// A duration as the configuration would write it, for messages: `250ms`,
/// `2s`, `1.5s`, `1m`.
pub(crate) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000 * MS;
    if nanos == 0 {
        "0s".to_string()
    } else if nanos.is_multiple_of(3_600 * S) {
        format!("{}h", nanos / (3_600 * S))
    } else if nanos.is_multiple_of(60 * S) {
        format!("{}m", nanos / (60 * S))
    } else if nanos.is_multiple_of(S) {
        format!("{}s", nanos / S)
    } else if nanos.is_multiple_of(MS) {
        format!("{}ms", nanos / MS)
    } else {
        let fraction = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> Duration {
        match parse_duration(s) {
            Ok(d) => d,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn accepts_each_unit() {
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2s"), Duration::from_secs(2));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("2h"), Duration::from_secs(7_200));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("0ms"), Duration::ZERO);
    }

    #[test]
    fn accepts_fractions() {
        assert_eq!(ok("1.5s"), Duration::from_millis(1_500));
        assert_eq!(ok("0.25s"), Duration::from_millis(250));
        assert_eq!(ok("1.5m"), Duration::from_secs(90));
        assert_eq!(ok("0.5ms"), Duration::from_micros(500));
        assert_eq!(ok("1.0000000001s"), Duration::from_secs(1));
        assert_eq!(ok("0.0000000000000000000001h"), Duration::ZERO);
        assert_eq!(ok("007s"), Duration::from_secs(7));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "", "5", "5x", "s", "ms", "-1s", "-0s", "+1s", "1 s", " 1s", "1s ", "1.s", ".5s",
            "1..5s", "1.2.3s", "1S", "1sec", "1e3ms", "1_000ms", "1m30s", "nan", "inf", "1µs",
            "١s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn error_messages_state_the_expected_form() {
        let e = parse_duration("5x").expect_err("5x is invalid");
        assert_eq!(e, "expected a number with unit ms, s, m or h");
        let e = parse_duration("5").expect_err("5 has no unit");
        assert!(e.starts_with("missing unit"), "{e}");
        let e = parse_duration("-5s").expect_err("negative");
        assert!(e.contains("negative"), "{e}");
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse_duration("18446744073709551615s").is_ok());
        assert!(parse_duration("18446744073709551616s").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
        assert!(parse_duration("99999999999999999999999999999999999999999s").is_err());
    }

    #[test]
    fn formats_like_the_config() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(7_200)), "2h");
        assert_eq!(format_duration(Duration::from_micros(1_500)), "0.0015s");
    }

    proptest! {
        #[test]
        fn round_trips_milliseconds(ms in 0u64..=u64::MAX / 1_000) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
        }

        #[test]
        fn round_trips_through_format(ms in 0u64..=u64::MAX / 1_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn round_trips_other_units(n in 0u64..=1_000_000_000) {
            prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
            prop_assert_eq!(parse_duration(&format!("{n}m")), Ok(Duration::from_secs(n * 60)));
            prop_assert_eq!(parse_duration(&format!("{n}h")), Ok(Duration::from_secs(n * 3_600)));
        }

        #[test]
        fn fractions_of_a_second_are_exact(whole in 0u64..1_000_000, millis in 0u32..1_000) {
            prop_assert_eq!(
                parse_duration(&format!("{whole}.{millis:03}s")),
                Ok(Duration::from_secs(whole) + Duration::from_millis(u64::from(millis)))
            );
        }

        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse_duration(&s);
        }

        #[test]
        fn never_panics_on_near_misses(s in "[-+0-9.]{0,30}(ms|s|m|h|x|)") {
            let _ = parse_duration(&s);
        }
    }
}
