//! Human-written durations (`90s`, `5m`, `24h`, `30d`) for configuration files and flags.
//!
//! Owns parsing and printing only; what range a duration may take is the validator's concern.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration as written by a human: an integer followed by `ms`, `s`, `m`, `h` or `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a duration; write a whole number followed by ms, s, m, h or d (e.g. 90s, 5m, 24h)")]
pub struct DurationParseError(pub String);

impl FromStr for HumanDuration {
    type Err = DurationParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| DurationParseError(text.to_string()))?;
        let (digits, unit) = trimmed.split_at(split);
        let value: u64 = digits
            .parse()
            .map_err(|_| DurationParseError(text.to_string()))?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(DurationParseError(text.to_string())),
        };
        let millis = value
            .checked_mul(millis_per_unit)
            .ok_or_else(|| DurationParseError(text.to_string()))?;
        Ok(HumanDuration(Duration::from_millis(millis)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        let units: [(u128, &str); 4] = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ];
        for (size, unit) in units {
            if millis != 0 && millis % size == 0 {
                return write!(f, "{}{}", millis / size, unit);
            }
        }
        write!(f, "{millis}ms")
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(
            "90s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            "5m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            "24h".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(86_400)
        );
        assert_eq!(
            "30d".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(2_592_000)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn refuses_what_a_human_would_not_mean() {
        for bad in [
            "",
            "5",
            "m",
            "-5s",
            "5 minutes",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn prints_back_in_the_largest_unit() {
        assert_eq!(HumanDuration::secs(300).to_string(), "5m");
        assert_eq!(HumanDuration::secs(90).to_string(), "90s");
    }
}
