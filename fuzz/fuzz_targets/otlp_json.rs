//! OTLP/JSON export requests, as OTLP/HTTP receives them (after decompression): the
//! receiver's JSON decoder, then validation.

#![no_main]

use caracal_collector::ingest::otlp_json::decode_json;
use caracal_fuzz::check_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((request, notes)) = decode_json(data) {
        check_request(&request, &notes);
    }
});
