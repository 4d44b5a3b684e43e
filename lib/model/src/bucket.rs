//! The 10-second buckets that aggregates are keyed by.

/// Width of the finest aggregation bucket, in seconds.
pub const BUCKET_SECONDS: u32 = 10;

/// Nanoseconds in one second.
pub const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Start (Unix seconds) of the 10-second bucket holding a Unix-nanosecond timestamp.
/// Saturates at the largest `DateTime` ClickHouse can store.
pub fn bucket_start(unix_nanos: u64) -> u32 {
    let seconds = (unix_nanos / NANOS_PER_SECOND).min(u64::from(u32::MAX));
    let seconds = seconds as u32;
    seconds - seconds % BUCKET_SECONDS
}

/// Unix seconds of a Unix-nanosecond timestamp, saturating at the `DateTime` range.
pub fn unix_seconds(unix_nanos: u64) -> u32 {
    (unix_nanos / NANOS_PER_SECOND).min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_to_ten_seconds() {
        assert_eq!(bucket_start(1_485_449_191_639_875_000), 1_485_449_190);
        assert_eq!(bucket_start(0), 0);
        assert_eq!(bucket_start(u64::MAX), u32::MAX - u32::MAX % 10);
    }
}
