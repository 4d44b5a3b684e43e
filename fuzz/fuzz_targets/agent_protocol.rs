//! Agent reports, as the agent receiver decodes them (tonic's prost codec, after
//! decompression); kept spans then take the OTLP path, validation included.

#![no_main]

use caracal_collector::ingest::DecodeNotes;
use caracal_fuzz::check_request;
use caracal_proto::AgentReport;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = AgentReport::decode(data) else {
        return;
    };
    // What `AgentReportService::store_report` hands to the ingest path.
    let kept = ExportTraceServiceRequest {
        resource_spans: report.kept_spans,
    };
    check_request(&kept, &DecodeNotes::default());
});
