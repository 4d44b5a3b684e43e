//! Zipkin v2 JSON span lists, as the Zipkin receiver gets them (after decompression):
//! the conversion to OTLP, then validation.

#![no_main]

use caracal_collector::ingest::zipkin::decode::decode_spans;
use caracal_fuzz::{check_request, count_spans};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((request, notes)) = decode_spans(data) else {
        return;
    };
    // Every list element is either a span or counted as malformed.
    let elements: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(data).expect("the decoder read a JSON array");
    assert_eq!(
        count_spans(&request) as u64 + notes.num_malformed_spans,
        elements.len() as u64
    );
    assert_eq!(
        notes.first_malformed_opt.is_some(),
        notes.num_malformed_spans > 0
    );
    check_request(&request, &notes);
});
