//! Retention: ClickHouse 18.16 has no TTL, so old partitions are dropped by a job.
//!
//! Tables are partitioned by `toYYYYMMDD` (day) or `toYYYYMM` (month). A partition is
//! dropped once its last day is older than the table's retention.

use clickhouse::Row;
use serde::Deserialize;

use crate::{validate_identifier, Result, Store};

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The last day (days since epoch) a partition id covers, or `None` if the id is not a
/// `YYYYMMDD` or `YYYYMM` partition.
pub fn partition_last_day(partition_id: &str) -> Option<i64> {
    if !partition_id.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let number: i64 = partition_id.parse().ok()?;
    match partition_id.len() {
        8 => Some(days_from_civil(
            number / 10_000,
            (number / 100 % 100) as u32,
            (number % 100) as u32,
        )),
        6 => {
            let (year, month) = (number / 100, (number % 100) as u32);
            let (next_year, next_month) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            Some(days_from_civil(next_year, next_month, 1) - 1)
        }
        _ => None,
    }
}

/// Active partitions of a table; bind database and table.
pub const PARTITIONS_SQL: &str = "SELECT DISTINCT partition_id FROM system.parts \
     WHERE database = ? AND table = ? AND active ORDER BY partition_id";

/// Drops one partition; `partition_id` must be all digits (checked by the caller).
pub fn drop_partition_sql(database: &str, table: &str, partition_id: &str) -> String {
    format!("ALTER TABLE {database}.{table} DROP PARTITION {partition_id}")
}

#[derive(Debug, Row, Deserialize)]
struct PartitionRow {
    partition_id: String,
}

impl Store {
    /// Drops partitions of `table` whose last day is more than `days` days before
    /// `today` (days since epoch). Returns the partition ids dropped.
    pub async fn drop_expired_partitions(
        &self,
        table: &str,
        days: u32,
        today: i64,
    ) -> Result<Vec<String>> {
        validate_identifier(table)?;
        let partitions: Vec<PartitionRow> = self
            .client()
            .query(PARTITIONS_SQL)
            .bind(self.database())
            .bind(table)
            .fetch_all()
            .await?;
        let mut dropped = Vec::new();
        for partition in partitions {
            let Some(last_day) = partition_last_day(&partition.partition_id) else {
                continue;
            };
            if today - last_day > i64::from(days) {
                // The id is all digits (checked above), so it is safe as a literal.
                let sql = drop_partition_sql(self.database(), table, &partition.partition_id);
                self.client().query(&sql).execute().await?;
                tracing::info!(table, partition = %partition.partition_id, "dropped expired partition");
                dropped.push(partition.partition_id);
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(partition_last_day("19700102"), Some(1));
        assert_eq!(partition_last_day("197001"), Some(30));
        assert_eq!(
            partition_last_day("202002"),
            Some(days_from_civil(2020, 2, 29))
        );
        assert_eq!(partition_last_day("tuple()"), None);
        assert_eq!(partition_last_day("all"), None);
    }
}

/// Days each family of tables keeps; 0 keeps forever.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Raw spans (`spans`, `spans_by_trace`).
    pub spans_days: u32,
    /// 10-second aggregates.
    pub aggregates_10s_days: u32,
    /// Minute aggregates.
    pub aggregates_1m_days: u32,
    /// Hour aggregates.
    pub aggregates_1h_days: u32,
    /// Day aggregates.
    pub aggregates_1d_days: u32,
    /// Seconds between retention runs.
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            spans_days: 7,
            aggregates_10s_days: 2,
            aggregates_1m_days: 15,
            aggregates_1h_days: 90,
            aggregates_1d_days: 800,
            interval_secs: 3_600,
        }
    }
}

impl RetentionConfig {
    /// Every partitioned table with its retention in days.
    pub fn tables(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("spans", self.spans_days),
            ("spans_by_trace", self.spans_days),
            ("span_metrics_10s", self.aggregates_10s_days),
            ("span_metrics_1m", self.aggregates_1m_days),
            ("span_metrics_1h", self.aggregates_1h_days),
            ("span_metrics_1d", self.aggregates_1d_days),
            ("span_metrics_instance_1m", self.aggregates_1m_days),
            ("span_metrics_instance_1h", self.aggregates_1h_days),
            ("dependencies_10s", self.aggregates_10s_days),
            ("dependencies_1m", self.aggregates_1m_days),
            ("dependencies_1h", self.aggregates_1h_days),
            ("dependencies_1d", self.aggregates_1d_days),
            ("agent_events", self.aggregates_1m_days),
            ("agent_metrics", self.aggregates_1m_days),
            ("agent_heartbeats", self.aggregates_1m_days),
        ]
    }
}

impl Store {
    /// Applies retention to every table once; failures are logged and skipped.
    pub async fn apply_retention(&self, config: &RetentionConfig, today: i64) -> usize {
        let mut num_dropped = 0;
        for (table, days) in config.tables() {
            if days == 0 {
                continue;
            }
            match self.drop_expired_partitions(table, days, today).await {
                Ok(dropped) => num_dropped += dropped.len(),
                Err(error) => tracing::warn!(table, %error, "retention failed"),
            }
        }
        num_dropped
    }
}
