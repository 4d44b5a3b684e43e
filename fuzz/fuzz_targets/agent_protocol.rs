//! Agent reports, as the agent receiver decodes them (tonic's prost codec, after
//! decompression); their rows are validated, and kept spans take the OTLP path,
//! validation included.

#![no_main]

use caracal_collector::ingest::{agent::rows::refuse_invalid_rows, DecodeNotes};
use caracal_fuzz::check_request;
use caracal_proto::AgentReport;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(mut report) = AgentReport::decode(data) else {
        return;
    };
    // Every row left must be one the tables can take (see `rows.rs`).
    let count_rows = |report: &AgentReport| {
        report.aggregates.len()
            + report.events.len()
            + report.metrics.len()
            + usize::from(report.heartbeat.is_some())
    };
    let num_rows = count_rows(&report);
    let validation = refuse_invalid_rows(&mut report, u64::from(u32::MAX));
    assert_eq!(count_rows(&report) + validation.num_rejected() as usize, num_rows);
    for aggregate in &report.aggregates {
        assert!(aggregate.errors <= aggregate.count && aggregate.min_ns <= aggregate.max_ns);
        assert_eq!(aggregate.hist_keys.len(), aggregate.hist_counts.len());
        assert!(aggregate.hist_keys.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(aggregate.count.saturating_mul(aggregate.min_ns) <= aggregate.sum_ns);
        assert!(aggregate.sum_ns <= aggregate.count.saturating_mul(aggregate.max_ns));
    }
    assert!(report.metrics.iter().all(|metric| metric.value.is_finite()));
    // What `AgentReportService::store_report` hands to the ingest path.
    let kept = ExportTraceServiceRequest {
        resource_spans: report.kept_spans,
    };
    check_request(&kept, &DecodeNotes::default());
});
