//! Reads: trace search, trace by id, services and operations, dependencies, RED metrics.
//!
//! Contract for every method: the tenant is always part of the filter, so a caller sees
//! only its own tenant's data; values are bound, never formatted into SQL; each call is
//! one read-only query bounded by [`crate::QUERY_TIMEOUT`].

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::{rows::StoredTraceSpan, Result, Store};

/// A bound value: text or a number.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum BindValue {
    /// Text.
    Text(String),
    /// Unsigned number.
    Number(u64),
}

/// SQL text with `?` placeholders and the values that fill them, in order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BoundSql {
    /// SQL with `?` placeholders.
    pub sql: String,
    /// Values, in placeholder order.
    pub binds: Vec<BindValue>,
}

impl BoundSql {
    fn push(&mut self, text: &str) {
        self.sql.push_str(text);
    }

    fn text(&mut self, sql: &str, value: &str) {
        self.sql.push_str(sql);
        self.binds.push(BindValue::Text(value.to_owned()));
    }

    fn number(&mut self, sql: &str, value: u64) {
        self.sql.push_str(sql);
        self.binds.push(BindValue::Number(value));
    }

    /// The SQL with every placeholder replaced by a literal, for compatibility checks
    /// against other ClickHouse versions (never for execution with untrusted values:
    /// the client binds those).
    pub fn render(&self, fields: &str) -> String {
        let mut rendered = String::with_capacity(self.sql.len());
        let mut values = self.binds.iter();
        let mut rest = self.sql.as_str();
        while let Some(position) = rest.find('?') {
            rendered.push_str(&rest[..position]);
            rest = &rest[position + 1..];
            if let Some(after) = rest.strip_prefix("fields") {
                rendered.push_str(fields);
                rest = after;
                continue;
            }
            match values.next() {
                Some(BindValue::Number(number)) => rendered.push_str(&number.to_string()),
                Some(BindValue::Text(text)) => {
                    rendered.push('\'');
                    rendered.push_str(&text.replace('\\', "\\\\").replace('\'', "\\'"));
                    rendered.push('\'');
                }
                None => rendered.push('?'),
            }
        }
        rendered.push_str(rest);
        rendered
    }

    fn into_query(self, client: &clickhouse::Client) -> clickhouse::query::Query {
        let mut query = client.query(&self.sql);
        for value in self.binds {
            query = query.bind(value);
        }
        query
    }
}

/// A trace search, with Jaeger's semantics: one span must match every condition, and
/// the traces holding such spans come back newest first.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    /// Tenant to search in.
    pub tenant: String,
    /// Service of the matching span.
    pub service: Option<String>,
    /// Operation (span name) of the matching span.
    pub operation: Option<String>,
    /// Span kind of the matching span (OTLP number).
    pub span_kind: Option<u8>,
    /// Tags the matching span must carry: span, resource, scope, event or link
    /// attributes, or the synthetic `error`, `span.kind`, `otel.status_code`,
    /// `otel.status_description`, `otel.scope.name` and `otel.scope.version` tags.
    pub tags: Vec<(String, String)>,
    /// Earliest span start, Unix nanoseconds.
    pub start_ns: u64,
    /// Latest span start, Unix nanoseconds.
    pub end_ns: u64,
    /// Minimum duration of the matching span.
    pub min_duration_ns: Option<u64>,
    /// Maximum duration of the matching span.
    pub max_duration_ns: Option<u64>,
    /// Maximum number of traces.
    pub limit: u32,
}

/// Attribute columns searched for a tag, as (keys, values) pairs.
const TAG_COLUMNS: [(&str, &str); 5] = [
    ("attr_keys", "attr_values"),
    ("resource_keys", "resource_values"),
    ("scope_keys", "scope_values"),
    ("event_attr_keys", "event_attr_values"),
    ("link_attr_keys", "link_attr_values"),
];

/// Builds the search for matching trace ids (exposed for SQL snapshot tests).
pub fn trace_search_sql(database: &str, query: &TraceQuery) -> BoundSql {
    let mut sql = BoundSql::default();
    sql.push("SELECT trace_id, max(start_ns) AS latest FROM ");
    sql.push(database);
    sql.text(".spans WHERE tenant = ?", &query.tenant);
    let start_seconds = query.start_ns / 1_000_000_000;
    let end_seconds = query.end_ns.div_ceil(1_000_000_000);
    sql.number(" AND start >= toDateTime(?)", start_seconds);
    sql.number(" AND start <= toDateTime(?)", end_seconds);
    sql.number(" AND start_ns >= ?", query.start_ns);
    sql.number(" AND start_ns <= ?", query.end_ns);
    if let Some(service) = &query.service {
        sql.text(" AND service_name = ?", service);
    }
    if let Some(operation) = &query.operation {
        sql.text(" AND name = ?", operation);
    }
    if let Some(kind) = query.span_kind {
        sql.number(" AND kind = ?", u64::from(kind));
    }
    if let Some(min) = query.min_duration_ns {
        sql.number(" AND duration_ns >= ?", min);
    }
    if let Some(max) = query.max_duration_ns {
        sql.number(" AND duration_ns <= ?", max);
    }
    for (key, value) in &query.tags {
        sql.push(" AND (");
        for (index, (keys, values)) in TAG_COLUMNS.iter().enumerate() {
            if index > 0 {
                sql.push(" OR ");
            }
            sql.text("arrayExists((tag_key, tag_value) -> tag_key = ?", key);
            sql.text(" AND tag_value = ?, ", value);
            sql.push(keys);
            sql.push(", ");
            sql.push(values);
            sql.push(")");
        }
        synthetic_tag_condition(&mut sql, key, value);
        sql.push(")");
    }
    sql.number(
        " GROUP BY trace_id ORDER BY latest DESC LIMIT ?",
        u64::from(query.limit),
    );
    sql
}

/// Tags that Jaeger derives from span fields rather than attributes.
fn synthetic_tag_condition(sql: &mut BoundSql, key: &str, value: &str) {
    use caracal_model::span::{SpanKind, StatusCode};
    match key {
        "error" if value.eq_ignore_ascii_case("true") => {
            sql.number(" OR status_code = ?", StatusCode::Error as u64);
        }
        "span.kind" => {
            if let Some(kind) = SpanKind::from_jaeger_name(value) {
                sql.number(" OR kind = ?", kind as u64);
            }
        }
        "otel.status_code" => {
            let code = match value.to_ascii_uppercase().as_str() {
                "OK" => Some(StatusCode::Ok),
                "ERROR" => Some(StatusCode::Error),
                _ => None,
            };
            if let Some(code) = code {
                sql.number(" OR status_code = ?", code as u64);
            }
        }
        "otel.status_description" => sql.text(" OR status_message = ?", value),
        "otel.scope.name" => sql.text(" OR scope_name = ?", value),
        "otel.scope.version" => sql.text(" OR scope_version = ?", value),
        _ => {}
    }
}

/// One matching trace from a search.
#[derive(Debug, Clone, Row, Deserialize)]
struct TraceHit {
    trace_id: [u8; 16],
    #[allow(dead_code)]
    latest: u64,
}

/// An operation of a service.
#[derive(Debug, Clone, Row, Deserialize, PartialEq, Eq)]
pub struct Operation {
    /// Span name.
    pub operation: String,
    /// OTLP span kind number.
    pub kind: u8,
}

/// One instance of a service with its spans over a window.
#[derive(Debug, Clone, Row, Deserialize, Serialize, PartialEq, Eq)]
pub struct InstanceSummary {
    /// Instance name.
    pub instance: String,
    /// Spans.
    pub count: u64,
    /// Failed spans.
    pub errors: u64,
}

/// A dependency edge summed over a window.
#[derive(Debug, Clone, Row, Deserialize, PartialEq, Eq)]
pub struct DependencyEdge {
    /// Calling service.
    pub parent: String,
    /// Called service, database or queue.
    pub child: String,
    /// What the child is: `service`, `database`, `messaging` or `peer`.
    pub child_type: String,
    /// Number of calls.
    pub calls: u64,
    /// Number of failed calls.
    pub errors: u64,
}

/// One time step of RED metrics, with its merged latency histogram.
#[derive(Debug, Clone, Row, Deserialize, PartialEq)]
pub struct MetricsPoint {
    /// Step start, Unix seconds.
    pub ts: u32,
    /// Spans.
    pub count: u64,
    /// Failed spans.
    pub errors: u64,
    /// Sum of durations.
    pub sum_ns: u64,
    /// Shortest duration.
    pub min_ns: u64,
    /// Longest duration.
    pub max_ns: u64,
    /// Histogram bucket keys.
    pub hist_keys: Vec<u64>,
    /// Histogram bucket counts.
    pub hist_counts: Vec<u64>,
}

/// Rollup resolutions, coarsest first: (table suffix, seconds).
pub const RESOLUTIONS: [(&str, u32); 4] = [("1d", 86_400), ("1h", 3_600), ("1m", 60), ("10s", 10)];

/// Resolutions of the per-instance RED tables, coarsest first.
pub const INSTANCE_RESOLUTIONS: [(&str, u32); 2] = [("1h", 3_600), ("1m", 60)];

/// The coarsest rollup whose buckets tile `[start, end)` in steps of `step` exactly.
pub fn resolution_for(start: u32, end: u32, step: u32) -> (&'static str, u32) {
    resolution_among(&RESOLUTIONS, start, end, step)
}

/// The finest of `resolutions` (coarsest first).
fn finest(resolutions: &[(&'static str, u32)]) -> (&'static str, u32) {
    resolutions.last().copied().unwrap_or(("10s", 10))
}

/// The coarsest of `resolutions` (coarsest first) that tiles `[start, end)` in steps of
/// `step` exactly, else the finest.
fn resolution_among(
    resolutions: &[(&'static str, u32)],
    start: u32,
    end: u32,
    step: u32,
) -> (&'static str, u32) {
    resolutions
        .iter()
        .copied()
        .find(|(_, seconds)| {
            step.is_multiple_of(*seconds)
                && start.is_multiple_of(*seconds)
                && end.is_multiple_of(*seconds)
        })
        .unwrap_or_else(|| finest(resolutions))
}

/// Every span of the given traces, ordered by trace then start.
pub fn get_traces_sql(database: &str, tenant: &str, trace_ids: &[[u8; 16]]) -> BoundSql {
    let mut sql = BoundSql::default();
    sql.push("SELECT ?fields FROM ");
    sql.push(database);
    sql.text(".spans_by_trace WHERE tenant = ? AND trace_id IN (", tenant);
    for (index, trace_id) in trace_ids.iter().enumerate() {
        if index > 0 {
            sql.push(", ");
        }
        sql.text("unhex(?)", &caracal_model::ids::TraceId(*trace_id).to_hex());
    }
    // Ordered by the blob last, so copies of a span are neighbours.
    sql.push(") ORDER BY trace_id, start_ns, span");
    sql
}

/// Every service name of a tenant.
pub fn services_sql(database: &str, tenant: &str) -> BoundSql {
    let mut sql = BoundSql::default();
    sql.push("SELECT DISTINCT service FROM ");
    sql.push(database);
    sql.text(".operations WHERE tenant = ? ORDER BY service", tenant);
    sql
}

/// Operations of a service, optionally of one kind.
pub fn operations_sql(database: &str, tenant: &str, service: &str, kind: Option<u8>) -> BoundSql {
    let mut sql = BoundSql::default();
    sql.push("SELECT operation, kind FROM ");
    sql.push(database);
    sql.text(".operations WHERE tenant = ?", tenant);
    sql.text(" AND service = ?", service);
    if let Some(kind) = kind {
        sql.number(" AND kind = ?", u64::from(kind));
    }
    sql.push(" GROUP BY operation, kind ORDER BY operation, kind");
    sql
}

/// Dependency edges with calls in `[start, end)` (Unix seconds).
pub fn dependencies_sql(database: &str, tenant: &str, start: u32, end: u32) -> BoundSql {
    let (suffix, seconds) = resolution_for(start - start % 10, end.div_ceil(10) * 10, 10);
    let mut sql = BoundSql::default();
    sql.push("SELECT parent, child, child_type, sumMerge(calls) AS calls, sumMerge(errors) AS errors FROM ");
    sql.push(database);
    sql.push(".dependencies_");
    sql.push(suffix);
    sql.text(" WHERE tenant = ?", tenant);
    sql.number(
        " AND ts >= toDateTime(?)",
        u64::from(start - start % seconds),
    );
    sql.number(" AND ts < toDateTime(?)", u64::from(end));
    sql.push(" GROUP BY parent, child, child_type ORDER BY parent, child");
    sql
}

/// The named instances of a service with spans in `[start, end)` (Unix seconds, read by
/// whole minutes, or whole hours when both are on the hour), by name.
pub fn instances_sql(
    database: &str,
    tenant: &str,
    service: &str,
    start: u32,
    end: u32,
) -> BoundSql {
    let (_, minute) = finest(&INSTANCE_RESOLUTIONS);
    let start = start - start % minute;
    let end = end.div_ceil(minute).saturating_mul(minute);
    let (suffix, _) =
        resolution_among(&INSTANCE_RESOLUTIONS, start, end, end.saturating_sub(start));
    let mut sql = BoundSql::default();
    sql.push("SELECT instance, sumMerge(count) AS count, sumMerge(errors) AS errors FROM ");
    sql.push(database);
    sql.push(".span_metrics_instance_");
    sql.push(suffix);
    sql.text(" WHERE tenant = ?", tenant);
    sql.text(" AND service = ? AND instance != ''", service);
    sql.number(" AND ts >= toDateTime(?)", u64::from(start));
    sql.number(" AND ts < toDateTime(?)", u64::from(end));
    sql.push(" GROUP BY instance ORDER BY instance");
    sql
}

/// Which RED metrics to read: a service, optionally narrowed to one instance, one
/// operation and one span kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsFilter<'a> {
    /// Service.
    pub service: &'a str,
    /// One instance of the service (read from the per-instance tables, whose finest
    /// resolution is one minute).
    pub instance: Option<&'a str>,
    /// One operation.
    pub operation: Option<&'a str>,
    /// One span kind (OTLP number).
    pub kind: Option<u8>,
}

impl MetricsFilter<'_> {
    /// The rollup tables this filter reads (name prefix) and their resolutions, coarsest
    /// first: the per-instance ones with an instance, else the service's.
    fn rollups(&self) -> (&'static str, &'static [(&'static str, u32)]) {
        match self.instance {
            Some(_) => (".span_metrics_instance_", &INSTANCE_RESOLUTIONS),
            None => (".span_metrics_", &RESOLUTIONS),
        }
    }

    /// The finest step, in seconds, these metrics can be read at: 60 for one instance,
    /// 10 for a service.
    pub fn finest_step(&self) -> u32 {
        finest(self.rollups().1).1
    }
}

/// RED metrics per `step` seconds over `[start, end)` from the coarsest exact rollup.
pub fn span_metrics_sql(
    database: &str,
    tenant: &str,
    filter: &MetricsFilter<'_>,
    (start, end, step): (u32, u32, u32),
) -> BoundSql {
    let (table, resolutions) = filter.rollups();
    let (suffix, _) = resolution_among(resolutions, start, end, step);
    let mut sql = BoundSql::default();
    sql.number("SELECT toUInt32(intDiv(toUInt32(ts), ?)", u64::from(step));
    sql.number(
        " * ?) AS step_ts, sumMerge(count) AS count, sumMerge(errors) AS errors, ",
        u64::from(step),
    );
    sql.push(
        "sumMerge(sum_ns) AS sum_ns, minMerge(min_ns) AS min_ns, maxMerge(max_ns) AS max_ns, ",
    );
    sql.push("sumMapMerge(hist) AS hist FROM ");
    sql.push(database);
    sql.push(table);
    sql.push(suffix);
    sql.text(" WHERE tenant = ?", tenant);
    sql.text(" AND service = ?", filter.service);
    if let Some(instance) = filter.instance {
        sql.text(" AND instance = ?", instance);
    }
    if let Some(operation) = filter.operation {
        sql.text(" AND operation = ?", operation);
    }
    if let Some(kind) = filter.kind {
        sql.number(" AND kind = ?", u64::from(kind));
    }
    sql.number(" AND ts >= toDateTime(?)", u64::from(start));
    sql.number(" AND ts < toDateTime(?)", u64::from(end));
    sql.push(" GROUP BY step_ts ORDER BY step_ts");
    sql
}

impl Store {
    /// Trace ids matching a search, newest first.
    pub async fn find_trace_ids(&self, query: &TraceQuery) -> Result<Vec<[u8; 16]>> {
        let sql = trace_search_sql(self.database(), query);
        let hits: Vec<TraceHit> = sql.into_query(self.client()).fetch_all().await?;
        Ok(hits.into_iter().map(|hit| hit.trace_id).collect())
    }

    /// Every span of the given traces (as span blobs), ordered by trace then start.
    ///
    /// A span stored twice (a spool replay of a batch ClickHouse had taken after all,
    /// or a client's retry) is returned once: `spans_by_trace` collapses such copies
    /// when it merges, and until then they are dropped here.
    pub async fn get_traces(
        &self,
        tenant: &str,
        trace_ids: &[[u8; 16]],
    ) -> Result<Vec<StoredTraceSpan>> {
        if trace_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = get_traces_sql(self.database(), tenant, trace_ids);
        let mut spans: Vec<StoredTraceSpan> = sql.into_query(self.client()).fetch_all().await?;
        spans.dedup_by(|later, earlier| {
            later.trace_id == earlier.trace_id && later.span == earlier.span
        });
        Ok(spans)
    }

    /// Every service name, sorted.
    pub async fn services(&self, tenant: &str) -> Result<Vec<String>> {
        let sql = services_sql(self.database(), tenant);
        Ok(sql.into_query(self.client()).fetch_all().await?)
    }

    /// The named instances of a service with spans in `[start, end)` (Unix seconds).
    pub async fn instances(
        &self,
        tenant: &str,
        service: &str,
        (start, end): (u32, u32),
    ) -> Result<Vec<InstanceSummary>> {
        let sql = instances_sql(self.database(), tenant, service, start, end);
        Ok(sql.into_query(self.client()).fetch_all().await?)
    }

    /// Operations of a service, optionally of one span kind, sorted by name.
    pub async fn operations(
        &self,
        tenant: &str,
        service: &str,
        kind: Option<u8>,
    ) -> Result<Vec<Operation>> {
        let sql = operations_sql(self.database(), tenant, service, kind);
        Ok(sql.into_query(self.client()).fetch_all().await?)
    }

    /// Dependency edges with calls in `[start, end)` (Unix seconds).
    pub async fn dependencies(
        &self,
        tenant: &str,
        start: u32,
        end: u32,
    ) -> Result<Vec<DependencyEdge>> {
        let sql = dependencies_sql(self.database(), tenant, start, end);
        Ok(sql.into_query(self.client()).fetch_all().await?)
    }

    /// RED metrics of a service (or one of its operations, or one span kind) per `step`
    /// seconds over `window = (start, end, step)`, `[start, end)` in Unix seconds, read
    /// from the coarsest rollup that tiles the window.
    pub async fn span_metrics(
        &self,
        tenant: &str,
        filter: &MetricsFilter<'_>,
        window: (u32, u32, u32),
    ) -> Result<Vec<MetricsPoint>> {
        let sql = span_metrics_sql(self.database(), tenant, filter, window);
        let rows: Vec<MetricsRowRaw> = sql.into_query(self.client()).fetch_all().await?;
        Ok(rows
            .into_iter()
            .map(|row| MetricsPoint {
                ts: row.step_ts,
                count: row.count,
                errors: row.errors,
                sum_ns: row.sum_ns,
                min_ns: row.min_ns,
                max_ns: row.max_ns,
                hist_keys: row.hist.0,
                hist_counts: row.hist.1,
            })
            .collect())
    }
}

#[derive(Debug, Row, Deserialize)]
struct MetricsRowRaw {
    step_ts: u32,
    count: u64,
    errors: u64,
    sum_ns: u64,
    min_ns: u64,
    max_ns: u64,
    hist: (Vec<u64>, Vec<u64>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_sql_snapshot() {
        let query = TraceQuery {
            tenant: "t".into(),
            service: Some("svc".into()),
            operation: Some("op".into()),
            tags: vec![("error".into(), "true".into())],
            start_ns: 1_500_000_000_000_000_000,
            end_ns: 1_500_000_100_000_000_001,
            min_duration_ns: Some(1000),
            limit: 20,
            ..Default::default()
        };
        let sql = trace_search_sql("db", &query);
        assert_eq!(
            sql.sql,
            "SELECT trace_id, max(start_ns) AS latest FROM db.spans WHERE tenant = ? \
             AND start >= toDateTime(?) AND start <= toDateTime(?) AND start_ns >= ? AND start_ns <= ? \
             AND service_name = ? AND name = ? AND duration_ns >= ? AND (\
             arrayExists((tag_key, tag_value) -> tag_key = ? AND tag_value = ?, attr_keys, attr_values) OR \
             arrayExists((tag_key, tag_value) -> tag_key = ? AND tag_value = ?, resource_keys, resource_values) OR \
             arrayExists((tag_key, tag_value) -> tag_key = ? AND tag_value = ?, scope_keys, scope_values) OR \
             arrayExists((tag_key, tag_value) -> tag_key = ? AND tag_value = ?, event_attr_keys, event_attr_values) OR \
             arrayExists((tag_key, tag_value) -> tag_key = ? AND tag_value = ?, link_attr_keys, link_attr_values) \
             OR status_code = ?) GROUP BY trace_id ORDER BY latest DESC LIMIT ?"
        );
        assert_eq!(sql.binds[1], BindValue::Number(1_500_000_000));
        assert_eq!(sql.binds[2], BindValue::Number(1_500_000_101));
        assert_eq!(sql.sql.matches('?').count(), sql.binds.len());
    }

    #[test]
    fn resolution_picks_coarsest_exact_tiling() {
        assert_eq!(resolution_for(0, 86_400, 86_400), ("1d", 86_400));
        assert_eq!(resolution_for(3_600, 7_200, 60), ("1m", 60));
        assert_eq!(resolution_for(3_600, 7_200, 3_600), ("1h", 3_600));
        assert_eq!(resolution_for(3_610, 7_200, 3_600), ("10s", 10));
        assert_eq!(resolution_for(60, 120, 30), ("10s", 10));
        let instance = |start, end, step| resolution_among(&INSTANCE_RESOLUTIONS, start, end, step);
        assert_eq!(instance(3_600, 7_200, 3_600), ("1h", 3_600));
        assert_eq!(instance(3_600, 7_200, 600), ("1m", 60));
        assert_eq!(instance(3_630, 7_200, 3_600), ("1m", 60));
    }

    #[test]
    fn instance_metrics_read_the_instance_tables() {
        let filter = MetricsFilter {
            service: "svc",
            instance: Some("svc-1"),
            operation: Some("op"),
            kind: None,
        };
        let sql = span_metrics_sql("db", "t", &filter, (3_600, 7_200, 60));
        assert!(sql.sql.contains("FROM db.span_metrics_instance_1m WHERE"));
        assert!(sql.sql.contains(" AND instance = ? AND operation = ?"));
        assert_eq!(sql.binds[4], BindValue::Text("svc-1".into()));
        let service = MetricsFilter {
            instance: None,
            ..filter
        };
        let sql = span_metrics_sql("db", "t", &service, (3_600, 7_200, 60));
        assert!(sql.sql.contains("FROM db.span_metrics_1m WHERE"));
        assert!(!sql.sql.contains("instance"));
        assert_eq!((filter.finest_step(), service.finest_step()), (60, 10));
    }

    #[test]
    fn instances_read_whole_minutes_or_hours() {
        let hours = instances_sql("db", "t", "svc", 3_600, 7_200);
        assert!(hours.sql.contains("FROM db.span_metrics_instance_1h WHERE"));
        let minutes = instances_sql("db", "t", "svc", 3_630, 7_201);
        assert!(minutes
            .sql
            .contains("FROM db.span_metrics_instance_1m WHERE"));
        assert_eq!(minutes.binds[2], BindValue::Number(3_600));
        assert_eq!(minutes.binds[3], BindValue::Number(7_260));
        assert!(minutes.sql.contains("AND instance != ''"));
    }
}
