//! Go duration strings (`4.5us`, `120ms`, `1.2s`, `1h30m`), as Jaeger's API takes them.

/// Parses a Go duration string into nanoseconds. A bare number is taken as microseconds,
/// as the Jaeger UI sometimes sends.
pub fn parse_go_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(micros) = text.parse::<f64>() {
        return (micros >= 0.0 && micros.is_finite()).then(|| (micros * 1_000.0).round() as u64);
    }
    let mut total: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|character: char| !(character.is_ascii_digit() || character == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|character: char| character.is_ascii_digit() || character == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * nanos_per_unit;
    }
    (total.is_finite() && total < u64::MAX as f64).then(|| total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<u64>) {
        assert_eq!(parse_go_duration(text), expected, "{text}");
    }

    #[test]
    fn go_durations() {
        check("4.5us", Some(4_500));
        check("120ms", Some(120_000_000));
        check("1.2s", Some(1_200_000_000));
        check("1h30m", Some(5_400_000_000_000));
        check("2µs", Some(2_000));
        check("10ns", Some(10));
        check("1500", Some(1_500_000));
        check("", None);
        check("ms", None);
        check("5 parsecs", None);
        check("-1s", None);
    }
}
