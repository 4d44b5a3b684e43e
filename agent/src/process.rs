//! Health of the instrumented process, read from `/proc/self` (Linux; zeros elsewhere).

/// Clock ticks per second of `/proc/self/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// One sample of the process's resources.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ProcessSample {
    pub(crate) cpu_seconds: f64,
    pub(crate) rss_bytes: u64,
    pub(crate) threads: u32,
    pub(crate) open_fds: u32,
}

/// Reads the current sample; missing files read as zeros.
pub(crate) fn sample() -> ProcessSample {
    let mut sample = ProcessSample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        sample.cpu_seconds = cpu_seconds(&stat).unwrap_or(0.0);
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            if let Some(value) = line.strip_prefix("VmRSS:") {
                sample.rss_bytes = first_number(value).unwrap_or(0) * 1024;
            } else if let Some(value) = line.strip_prefix("Threads:") {
                sample.threads = first_number(value).unwrap_or(0) as u32;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        sample.open_fds = entries.count() as u32;
    }
    sample
}

fn first_number(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// User plus system time from `/proc/self/stat` (fields 14 and 15, counted after the
/// parenthesised command name, which may contain spaces).
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "42 (my (odd) app) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(cpu_seconds("garbage"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn samples_this_process() {
        let sample = sample();
        assert!(
            sample.rss_bytes > 0 && sample.threads >= 1 && sample.open_fds >= 3,
            "{sample:?}"
        );
    }
}
