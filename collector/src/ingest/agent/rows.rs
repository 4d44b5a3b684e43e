//! An agent report as rows of each table, after refusing the rows that cannot be
//! stored.
//!
//! The agent never sends such rows (it drops non-finite gauge values before they reach
//! a report); another client, a corrupted report or a clock gone wrong might. A refused
//! row costs only itself: the rest of the report is stored, and the answer says how
//! many rows were refused and why, as OTLP's partial success does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use caracal_model::bucket::BUCKET_SECONDS;
use caracal_model::histogram::bucket_key;
use caracal_model::span::{SpanKind, StatusCode};
use caracal_proto::{AgentReport, MetricKind, MAX_BUCKET_COUNT};
use caracal_store::rows::{
    AgentEventRow, AgentHeartbeatRow, AgentMetricRow, DependencyRow, SpanMetricsRow,
};

use crate::ingest::validate::MIN_START_NS;

/// Earliest accepted bucket or heartbeat time, Unix seconds: that of spans.
const MIN_TIME_S: u64 = MIN_START_NS / 1_000_000_000;

/// Why one row of an agent report was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowRejectReason {
    /// A bucket not on a 10-second boundary, or a bucket or heartbeat time before 2000
    /// or too far in the future.
    TimeOutOfRange,
    /// A span kind, status or metric kind the protocol does not define.
    UnknownEnumValue,
    /// Counts that contradict each other or the way aggregates are counted: no calls,
    /// errors on a row that is not an ERROR row (or fewer than its calls on one), a
    /// minimum above the maximum or outside the histogram's first bucket (the maximum
    /// outside its last), histogram keys out of order or counts that do not add up to
    /// the calls, a sum no set of calls between the minimum and the maximum could make.
    InconsistentCounts,
    /// A metric value that is not a finite number.
    NonFiniteValue,
}

impl RowRejectReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 4] = [
        Self::TimeOutOfRange,
        Self::UnknownEnumValue,
        Self::InconsistentCounts,
        Self::NonFiniteValue,
    ];

    /// Stable label, used in messages and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::TimeOutOfRange => "time_out_of_range",
            Self::UnknownEnumValue => "unknown_enum_value",
            Self::InconsistentCounts => "inconsistent_counts",
            Self::NonFiniteValue => "non_finite_value",
        }
    }
}

/// The rows [`refuse_invalid_rows`] refused, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RowValidation {
    /// Refused rows by reason (absent when none).
    pub rejected: BTreeMap<RowRejectReason, u64>,
}

impl RowValidation {
    /// Rows refused, all reasons.
    pub fn num_rejected(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// `rejected N agent rows: n reason ...`, or empty when nothing was refused.
    pub fn message(&self) -> String {
        let mut message = String::new();
        if !self.rejected.is_empty() {
            let _ = write!(message, "rejected {} agent rows:", self.num_rejected());
            for (reason, count) in &self.rejected {
                let _ = write!(message, " {count} {}", reason.label());
            }
        }
        message
    }

    /// Keeps the items of `rows` that `check` passes, counting the others.
    fn retain<T>(&mut self, rows: &mut Vec<T>, check: impl Fn(&T) -> Result<(), RowRejectReason>) {
        rows.retain(|row| match check(row) {
            Ok(()) => true,
            Err(reason) => {
                *self.rejected.entry(reason).or_default() += 1;
                false
            }
        });
    }
}

/// Removes from `report` the aggregates, event counts, metric values and heartbeat that
/// cannot be stored, and says what was removed. `max_time_s` is the latest bucket or
/// heartbeat time accepted (now plus the allowed clock skew), Unix seconds. Kept spans
/// are left to span validation.
pub fn refuse_invalid_rows(report: &mut AgentReport, max_time_s: u64) -> RowValidation {
    let bucket_in_range = |bucket: u32| {
        let time = u64::from(bucket);
        if bucket.is_multiple_of(BUCKET_SECONDS) && (MIN_TIME_S..=max_time_s).contains(&time) {
            Ok(())
        } else {
            Err(RowRejectReason::TimeOutOfRange)
        }
    };
    let known_status = |status: u32| {
        if status <= StatusCode::Error as u32 {
            Ok(())
        } else {
            Err(RowRejectReason::UnknownEnumValue)
        }
    };
    let mut validation = RowValidation::default();
    validation.retain(&mut report.aggregates, |aggregate| {
        bucket_in_range(aggregate.bucket)?;
        known_status(aggregate.status)?;
        if aggregate.kind > SpanKind::Consumer as u32 {
            return Err(RowRejectReason::UnknownEnumValue);
        }
        if aggregate_is_consistent(aggregate) {
            Ok(())
        } else {
            Err(RowRejectReason::InconsistentCounts)
        }
    });
    validation.retain(&mut report.events, |event| {
        bucket_in_range(event.bucket)?;
        known_status(event.status)?;
        if event.count == 0 {
            return Err(RowRejectReason::InconsistentCounts);
        }
        Ok(())
    });
    validation.retain(&mut report.metrics, |metric| {
        bucket_in_range(metric.bucket)?;
        if MetricKind::try_from(metric.kind).is_err() {
            return Err(RowRejectReason::UnknownEnumValue);
        }
        if metric.count == 0 {
            return Err(RowRejectReason::InconsistentCounts);
        }
        if !metric.value.is_finite() {
            return Err(RowRejectReason::NonFiniteValue);
        }
        Ok(())
    });
    let mut heartbeats: Vec<_> = report.heartbeat.take().into_iter().collect();
    validation.retain(&mut heartbeats, |heartbeat| {
        let time_s = heartbeat.time_unix_ms / 1_000;
        if !(MIN_TIME_S..=max_time_s).contains(&time_s) {
            return Err(RowRejectReason::TimeOutOfRange);
        }
        if !heartbeat.cpu_seconds.is_finite() {
            return Err(RowRejectReason::NonFiniteValue);
        }
        Ok(())
    });
    report.heartbeat = heartbeats.pop();
    validation
}

/// Whether an aggregate's numbers agree with each other and with how the agent counts,
/// so that merging it (sums, minimum, maximum, histogram) cannot spoil the stored
/// totals of its bucket, which cannot be undone:
/// - calls, and errors equal to the calls on an ERROR row and zero on any other (an
///   aggregate is per status, as the collector's own aggregation counts);
/// - a histogram of ascending bucket keys with counts from 1 to [`MAX_BUCKET_COUNT`]
///   adding up to the calls, whose first bucket holds the minimum and last bucket the maximum;
/// - a sum between calls times minimum and calls times maximum (saturating, as the
///   agent's sum does).
fn aggregate_is_consistent(aggregate: &caracal_proto::Aggregate) -> bool {
    let (keys, counts) = (&aggregate.hist_keys, &aggregate.hist_counts);
    let expected_errors = if aggregate.status == StatusCode::Error as u32 {
        aggregate.count
    } else {
        0
    };
    let histogram_count = counts.iter().try_fold(0u64, |sum, &count| {
        (1..=MAX_BUCKET_COUNT)
            .contains(&count)
            .then(|| sum.checked_add(count))
            .flatten()
    });
    let extremes_in_histogram = match (keys.first(), keys.last()) {
        (Some(&first), Some(&last)) => {
            bucket_key(aggregate.min_ns) == bucket_key(first)
                && bucket_key(aggregate.max_ns) == bucket_key(last)
        }
        _ => false,
    };
    aggregate.count > 0
        && aggregate.errors == expected_errors
        && aggregate.min_ns <= aggregate.max_ns
        && keys.len() == counts.len()
        && keys.windows(2).all(|pair| pair[0] < pair[1])
        && histogram_count == Some(aggregate.count)
        && extremes_in_histogram
        && aggregate.count.saturating_mul(aggregate.min_ns) <= aggregate.sum_ns
        && aggregate.sum_ns <= aggregate.count.saturating_mul(aggregate.max_ns)
}

/// A report as rows of each table.
#[derive(Debug, Default)]
pub(super) struct ReportRows {
    pub(super) metrics: Vec<SpanMetricsRow>,
    pub(super) edges: Vec<DependencyRow>,
    pub(super) events: Vec<AgentEventRow>,
    pub(super) metric_values: Vec<AgentMetricRow>,
    pub(super) heartbeats: Vec<AgentHeartbeatRow>,
}

fn narrow(number: u32) -> u8 {
    u8::try_from(number).unwrap_or(u8::MAX)
}

impl ReportRows {
    pub(super) fn from_report(tenant: &str, report: &AgentReport) -> Self {
        let tenant = tenant.to_owned();
        let mut rows = Self::default();
        for aggregate in &report.aggregates {
            rows.metrics.push(SpanMetricsRow {
                tenant: tenant.clone(),
                bucket: aggregate.bucket,
                service: report.service.clone(),
                instance: report.instance.clone(),
                operation: aggregate.name.clone(),
                kind: narrow(aggregate.kind),
                status: narrow(aggregate.status),
                count: aggregate.count,
                errors: aggregate.errors,
                sum_ns: aggregate.sum_ns,
                min_ns: aggregate.min_ns,
                max_ns: aggregate.max_ns,
                hist_keys: aggregate.hist_keys.clone(),
                hist_counts: aggregate.hist_counts.clone(),
            });
            if !aggregate.peer.is_empty() {
                rows.edges.push(DependencyRow {
                    tenant: tenant.clone(),
                    bucket: aggregate.bucket,
                    parent: report.service.clone(),
                    child: aggregate.peer.clone(),
                    child_type: if aggregate.peer_type.is_empty() {
                        "service".into()
                    } else {
                        aggregate.peer_type.clone()
                    },
                    calls: aggregate.count,
                    errors: aggregate.errors,
                    sum_ns: aggregate.sum_ns,
                    hist_keys: aggregate.hist_keys.clone(),
                    hist_counts: aggregate.hist_counts.clone(),
                });
            }
        }
        for event in &report.events {
            rows.events.push(AgentEventRow {
                tenant: tenant.clone(),
                bucket: event.bucket,
                service: report.service.clone(),
                event_type: event.event_type.clone(),
                name: event.name.clone(),
                status: narrow(event.status),
                count: event.count,
            });
        }
        for metric in &report.metrics {
            rows.metric_values.push(AgentMetricRow {
                tenant: tenant.clone(),
                bucket: metric.bucket,
                service: report.service.clone(),
                name: metric.name.clone(),
                kind: u8::try_from(metric.kind).unwrap_or(0),
                value: metric.value,
                count: metric.count,
            });
        }
        if let Some(heartbeat) = &report.heartbeat {
            rows.heartbeats.push(AgentHeartbeatRow {
                tenant,
                time: u32::try_from(heartbeat.time_unix_ms / 1_000).unwrap_or(u32::MAX),
                service: report.service.clone(),
                instance: report.instance.clone(),
                host: report.host.clone(),
                cpu_seconds: heartbeat.cpu_seconds,
                rss_bytes: heartbeat.rss_bytes,
                threads: heartbeat.threads,
                open_fds: heartbeat.open_fds,
                recorded: heartbeat.recorded,
                kept: heartbeat.kept,
                dropped_spans: heartbeat.dropped_spans,
                dropped_reports: heartbeat.dropped_reports,
                queue_depth: heartbeat.queue_depth,
                bytes_sent: heartbeat.bytes_sent,
                overflowed: heartbeat.overflowed,
            });
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use caracal_proto::{Aggregate, Heartbeat};

    use super::*;

    const NOW_S: u64 = 1_800_000_000;

    fn aggregate(bucket: u32) -> Aggregate {
        Aggregate {
            bucket,
            count: 2,
            sum_ns: 14,
            min_ns: 5,
            max_ns: 9,
            hist_keys: vec![5, 9],
            hist_counts: vec![1, 1],
            ..Aggregate::default()
        }
    }

    #[test]
    fn aggregates_that_would_spoil_the_merged_totals_are_refused() {
        let good = aggregate(NOW_S as u32);
        let failed = Aggregate {
            status: StatusCode::Error as u32,
            errors: 2,
            ..good.clone()
        };
        // A sum at the limit and a saturated one (the agent saturates) are consistent.
        let saturated = Aggregate {
            sum_ns: u64::MAX,
            min_ns: u64::MAX - 1,
            max_ns: u64::MAX,
            hist_keys: vec![bucket_key(u64::MAX)],
            hist_counts: vec![2],
            ..good.clone()
        };
        let bad = [
            // Errors on a row that is not an ERROR row, or not all calls of one.
            Aggregate {
                errors: 1,
                ..good.clone()
            },
            Aggregate {
                errors: 1,
                ..failed.clone()
            },
            // A maximum beyond the last bucket, a minimum before the first.
            Aggregate {
                max_ns: u64::MAX,
                ..good.clone()
            },
            Aggregate {
                min_ns: 4,
                ..good.clone()
            },
            // Keys out of order, repeated, a zero count, a count past the cap.
            Aggregate {
                hist_keys: vec![9, 5],
                ..good.clone()
            },
            Aggregate {
                hist_keys: vec![5, 5],
                ..good.clone()
            },
            Aggregate {
                hist_keys: vec![5, 7, 9],
                hist_counts: vec![1, 0, 1],
                ..good.clone()
            },
            Aggregate {
                count: MAX_BUCKET_COUNT + 2,
                hist_counts: vec![MAX_BUCKET_COUNT + 1, 1],
                sum_ns: u64::MAX,
                ..good.clone()
            },
            // Sums no calls between the minimum and the maximum could make.
            Aggregate {
                sum_ns: 9,
                ..good.clone()
            },
            Aggregate {
                sum_ns: 19,
                ..good.clone()
            },
            // No histogram at all.
            Aggregate {
                hist_keys: vec![],
                hist_counts: vec![],
                ..good.clone()
            },
        ];
        let mut report = AgentReport {
            aggregates: [good.clone(), failed.clone(), saturated.clone()]
                .into_iter()
                .chain(bad.iter().cloned())
                .collect(),
            ..AgentReport::default()
        };
        let validation = refuse_invalid_rows(&mut report, NOW_S);
        assert_eq!(report.aggregates, [good, failed, saturated]);
        assert_eq!(
            validation.message(),
            format!(
                "rejected {} agent rows: {} inconsistent_counts",
                bad.len(),
                bad.len()
            )
        );
    }

    #[test]
    fn a_heartbeat_with_a_non_finite_cpu_time_is_refused_as_such() {
        let mut report = AgentReport {
            heartbeat: Some(Heartbeat {
                time_unix_ms: NOW_S * 1_000,
                cpu_seconds: f64::NAN,
                ..Heartbeat::default()
            }),
            ..AgentReport::default()
        };
        let validation = refuse_invalid_rows(&mut report, NOW_S);
        assert!(report.heartbeat.is_none());
        assert_eq!(
            validation.message(),
            "rejected 1 agent rows: 1 non_finite_value"
        );
    }

    #[test]
    fn buckets_are_accepted_from_2000_to_the_skew_limit_on_the_grid() {
        let mut report = AgentReport {
            aggregates: [
                MIN_TIME_S - 10,
                MIN_TIME_S,
                NOW_S - 10,
                NOW_S,
                NOW_S + 10,
                NOW_S - 1,
            ]
            .into_iter()
            .map(|bucket| aggregate(bucket as u32))
            .collect(),
            heartbeat: Some(Heartbeat {
                time_unix_ms: NOW_S * 1_000 + 999,
                ..Heartbeat::default()
            }),
            ..AgentReport::default()
        };
        let validation = refuse_invalid_rows(&mut report, NOW_S);
        let kept: Vec<u64> = report
            .aggregates
            .iter()
            .map(|aggregate| u64::from(aggregate.bucket))
            .collect();
        assert_eq!(kept, [MIN_TIME_S, NOW_S - 10, NOW_S]);
        assert!(report.heartbeat.is_some());
        assert_eq!(
            validation.message(),
            "rejected 3 agent rows: 3 time_out_of_range"
        );
    }

    #[test]
    fn a_clean_report_has_no_message() {
        let mut report = AgentReport {
            aggregates: vec![aggregate(NOW_S as u32)],
            ..AgentReport::default()
        };
        let validation = refuse_invalid_rows(&mut report, NOW_S);
        assert_eq!(validation.num_rejected(), 0);
        assert_eq!(validation.message(), "");
        assert_eq!(report.aggregates.len(), 1);
    }
}
