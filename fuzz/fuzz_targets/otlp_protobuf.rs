//! OTLP/protobuf export requests, as OTLP/gRPC and OTLP/HTTP receive them (after
//! decompression): the collector's lenient decoder, then validation.

#![no_main]

use caracal_collector::ingest::DecodeNotes;
use caracal_fuzz::{check_request, normalize_generated};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let lenient = caracal_model::lenient::decode_export_request(data);
    // The generated types are the reference: whatever they read, the lenient decoder
    // reads too, with nothing to repair, and (but for the fields it skips on purpose)
    // to the same request.
    if let Ok(mut strict) = ExportTraceServiceRequest::decode(data) {
        let Ok(decoded) = &lenient else {
            panic!("lenient decoder refused what the generated types read")
        };
        assert_eq!(decoded.num_invalid_utf8, 0);
        if normalize_generated(&mut strict) {
            assert_eq!(decoded.request, strict);
        }
    }
    if let Ok(decoded) = lenient {
        check_request(
            &decoded.request,
            &DecodeNotes::invalid_utf8(decoded.num_invalid_utf8),
        );
    }
});
