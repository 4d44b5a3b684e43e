//! The store against the real ClickHouse: migrations, row round trips, reads, retention.

use std::borrow::Cow;

use caracal_store::{
    reader::{MetricsFilter, TraceQuery},
    retention::{days_from_civil, RetentionConfig},
    rows::{DependencyRow, SpanMetricsRow, SpanRow, TraceSpanRow},
    Store,
};

async fn insert_spans(store: &Store, rows: &[SpanRow<'_>]) {
    let mut insert = store
        .client()
        .insert::<SpanRow<'static>>("spans")
        .await
        .unwrap();
    for row in rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let mut insert = store
        .client()
        .insert::<TraceSpanRow<'static>>("spans_by_trace")
        .await
        .unwrap();
    for row in rows {
        let blob = format!("blob of {}", row.name);
        let trace_row = TraceSpanRow {
            tenant: row.tenant,
            trace_id: row.trace_id,
            start: row.start,
            start_ns: row.start_ns,
            span: blob.as_bytes(),
        };
        insert.write(&trace_row).await.unwrap();
    }
    insert.end().await.unwrap();
}
use caracal_testkit::test_store;

#[tokio::test]
async fn migrations_are_idempotent_and_recorded() {
    let store = test_store("store_migrations").await;
    let latest = caracal_store::migrate::latest_version();
    assert_eq!(store.schema_version().await.unwrap(), Some(latest));
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "second run applies nothing"
    );
    store.check_schema().await.unwrap();
    // Every statement ran but nothing was recorded (an interrupted run, or two processes
    // migrating at once): running again is harmless, the ADD COLUMN included.
    let database = store.database().to_owned();
    store
        .client()
        .query(&format!("TRUNCATE TABLE {database}.schema_migrations"))
        .execute()
        .await
        .unwrap();
    assert_eq!(store.schema_version().await.unwrap(), None);
    assert_eq!(
        store.migrate().await.unwrap().len(),
        caracal_store::migrate::MIGRATIONS.len(),
        "every migration applied again"
    );
    assert_eq!(store.schema_version().await.unwrap(), Some(latest));
    store.drop_database().await.unwrap();
    assert!(
        store.check_schema().await.is_err(),
        "a missing schema is reported"
    );
}

fn sample_row<'a>(
    attr_values: &'a [Cow<'a, str>],
    keys: &'a [&'a str],
    trace_id: [u8; 16],
    start_seconds: u32,
) -> SpanRow<'a> {
    SpanRow {
        tenant: "default",
        trace_id,
        span_id: [2; 8],
        parent_span_id: [3; 8],
        trace_state: "k=v",
        flags: 1,
        service_name: "svc",
        name: "GET /ünïcode",
        kind: 2,
        status_code: 2,
        status_message: "boom",
        start: start_seconds,
        start_ns: u64::from(start_seconds) * 1_000_000_000 + 123,
        duration_ns: 4_500,
        attr_keys: keys,
        attr_values,
        attr_types: &[0, 2],
        dropped_attributes_count: 1,
        resource_keys: keys,
        resource_values: attr_values,
        resource_types: &[0, 2],
        scope_name: "lib",
        scope_version: "1.0",
        scope_keys: &[],
        scope_values: &[],
        scope_types: &[],
        events_time_ns: &[5, 6],
        events_name: &["e1", "e2"],
        events_dropped_attributes_count: &[0, 1],
        event_attr_index: &[1, 1],
        event_attr_keys: keys,
        event_attr_values: attr_values,
        event_attr_types: &[0, 2],
        dropped_events_count: 2,
        links_trace_id: &[[9; 16]],
        links_span_id: &[[8; 8]],
        links_trace_state: &["x=y"],
        links_flags: &[1],
        links_dropped_attributes_count: &[0],
        link_attr_index: &[0],
        link_attr_keys: &["opentracing.ref_type"],
        link_attr_values: &[Cow::Borrowed("follows_from")],
        link_attr_types: &[0],
        dropped_links_count: 3,
    }
}

#[tokio::test]
async fn span_rows_round_trip_and_are_found() {
    let store = test_store("store_spans").await;
    let keys = ["a", "n"];
    let values = [Cow::Borrowed("x'\"\\y"), Cow::Owned("42".to_owned())];
    let start_seconds = 1_700_000_000;
    insert_spans(
        &store,
        &[
            sample_row(&values, &keys, [1; 16], start_seconds),
            sample_row(&values, &keys, [7; 16], start_seconds + 5),
        ],
    )
    .await;

    let spans = store.get_traces("default", &[[1; 16]]).await.unwrap();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].trace_id, [1; 16]);
    assert_eq!(spans[0].span, "blob of GET /ünïcode".as_bytes());
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Columns {
        attr_values: Vec<String>,
        event_attr_index: Vec<u16>,
        duration_ns: u64,
    }
    let Columns { attr_values, event_attr_index, duration_ns } = store
        .client()
        .query("SELECT attr_values, event_attr_index, duration_ns FROM spans WHERE trace_id = unhex(?)")
        .bind("01010101010101010101010101010101")
        .fetch_one::<Columns>()
        .await
        .unwrap();
    assert_eq!(attr_values, vec!["x'\"\\y".to_owned(), "42".to_owned()]);
    assert_eq!((event_attr_index, duration_ns), (vec![1, 1], 4_500));
    assert!(store
        .get_traces("other-tenant", &[[1; 16]])
        .await
        .unwrap()
        .is_empty());

    let query = TraceQuery {
        tenant: "default".into(),
        service: Some("svc".into()),
        tags: vec![
            ("a".into(), "x'\"\\y".into()),
            ("error".into(), "true".into()),
        ],
        start_ns: 1_699_999_000_000_000_000,
        end_ns: 1_700_001_000_000_000_000,
        min_duration_ns: Some(4_500),
        limit: 10,
        ..Default::default()
    };
    // Newest first.
    assert_eq!(
        store.find_trace_ids(&query).await.unwrap(),
        vec![[7; 16], [1; 16]]
    );
    let other_tenant = TraceQuery {
        tenant: "other".into(),
        ..query.clone()
    };
    assert!(store
        .find_trace_ids(&other_tenant)
        .await
        .unwrap()
        .is_empty());
    let too_slow = TraceQuery {
        min_duration_ns: Some(4_501),
        ..query
    };
    assert!(store.find_trace_ids(&too_slow).await.unwrap().is_empty());
}

fn metrics_row(
    bucket: u32,
    instance: &str,
    count: u64,
    keys: Vec<u64>,
    counts: Vec<u64>,
) -> SpanMetricsRow {
    SpanMetricsRow {
        tenant: "default".into(),
        bucket,
        service: "svc".into(),
        instance: instance.into(),
        operation: "op".into(),
        kind: 2,
        status: 0,
        count,
        errors: 1,
        sum_ns: 100 * count,
        min_ns: keys[0],
        max_ns: *keys.last().unwrap(),
        hist_keys: keys,
        hist_counts: counts,
    }
}

#[tokio::test]
async fn aggregates_merge_across_rows_and_rollups() {
    let store = test_store("store_aggregates").await;
    let hour = 1_700_002_800; // a whole hour
    let mut insert = store
        .client()
        .insert::<SpanMetricsRow>("span_metrics_input")
        .await
        .unwrap();
    insert
        .write(&metrics_row(hour, "svc-1", 2, vec![10, 20], vec![1, 1]))
        .await
        .unwrap();
    insert
        .write(&metrics_row(
            hour + 10,
            "svc-2",
            3,
            vec![20, 30],
            vec![2, 1],
        ))
        .await
        .unwrap();
    insert
        .write(&metrics_row(hour + 70, "svc-1", 1, vec![5], vec![1]))
        .await
        .unwrap();
    insert.end().await.unwrap();
    let mut insert = store
        .client()
        .insert::<DependencyRow>("dependency_input")
        .await
        .unwrap();
    insert
        .write(&DependencyRow {
            tenant: "default".into(),
            bucket: hour,
            parent: "a".into(),
            child: "b".into(),
            child_type: "service".into(),
            calls: 4,
            errors: 1,
            sum_ns: 40,
            hist_keys: vec![10],
            hist_counts: vec![4],
        })
        .await
        .unwrap();
    insert.end().await.unwrap();

    // Every resolution gives the same totals; the hour table is read for whole hours.
    let service = MetricsFilter {
        service: "svc",
        ..MetricsFilter::default()
    };
    for step in [10, 60, 3_600] {
        let points = store
            .span_metrics("default", &service, (hour, hour + 3_600, step))
            .await
            .unwrap();
        let count: u64 = points.iter().map(|point| point.count).sum();
        assert_eq!(count, 6, "step {step}");
    }
    let minute = store
        .span_metrics(
            "default",
            &MetricsFilter {
                operation: Some("op"),
                kind: Some(2),
                ..service
            },
            (hour, hour + 120, 60),
        )
        .await
        .unwrap();
    assert_eq!(minute.len(), 2);
    assert_eq!(
        (minute[0].count, minute[0].min_ns, minute[0].max_ns),
        (5, 10, 30)
    );
    assert_eq!(
        (minute[0].hist_keys.clone(), minute[0].hist_counts.clone()),
        (vec![10, 20, 30], vec![1, 3, 1])
    );

    // Per instance, by minute and by hour: each instance's rows only.
    let instance = |name| MetricsFilter {
        instance: Some(name),
        ..service
    };
    let by_minute =
        |points: Vec<caracal_store::reader::MetricsPoint>| -> Vec<(u32, u64, u64, u64)> {
            points
                .iter()
                .map(|point| (point.ts - hour, point.count, point.min_ns, point.max_ns))
                .collect()
        };
    let svc_1 = store
        .span_metrics("default", &instance("svc-1"), (hour, hour + 3_600, 60))
        .await
        .unwrap();
    assert_eq!(by_minute(svc_1), [(0, 2, 10, 20), (60, 1, 5, 5)]);
    let svc_2 = store
        .span_metrics("default", &instance("svc-2"), (hour, hour + 3_600, 3_600))
        .await
        .unwrap();
    assert_eq!(by_minute(svc_2.clone()), [(0, 3, 20, 30)]);
    assert_eq!(
        (svc_2[0].hist_keys.clone(), svc_2[0].hist_counts.clone()),
        (vec![20, 30], vec![2, 1])
    );
    assert!(store
        .span_metrics("default", &instance("svc-3"), (hour, hour + 3_600, 60))
        .await
        .unwrap()
        .is_empty());

    let edges = store
        .dependencies("default", hour, hour + 60)
        .await
        .unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!((edges[0].calls, edges[0].errors), (4, 1));
    assert_eq!(
        store.services("default").await.unwrap(),
        vec!["svc".to_owned()]
    );
    assert_eq!(
        store
            .operations("default", "svc", Some(2))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store.services("other").await.unwrap().is_empty());
}

#[tokio::test]
async fn retention_drops_only_expired_partitions() {
    let store = test_store("store_retention").await;
    let keys: [&str; 2] = ["a", "n"];
    let values = [Cow::Borrowed("x"), Cow::Borrowed("1")];
    let old_day = 1_600_000_000; // 2020-09-13
    let new_day = 1_700_000_000; // 2023-11-14
    insert_spans(
        &store,
        &[
            sample_row(&values, &keys, [1; 16], old_day),
            sample_row(&values, &keys, [2; 16], new_day),
        ],
    )
    .await;
    let today = days_from_civil(2023, 11, 20);
    let dropped = store
        .drop_expired_partitions("spans", 7, today)
        .await
        .unwrap();
    assert_eq!(dropped, vec!["20200913".to_owned()]);
    let dropped_total = store
        .apply_retention(&RetentionConfig::default(), today)
        .await;
    assert_eq!(dropped_total, 1, "the copy ordered by trace id expires too");
    assert!(store
        .get_traces("default", &[[1; 16]])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.get_traces("default", &[[2; 16]]).await.unwrap().len(),
        1
    );
}
