//! The bad-input corpus: every file under `tests/bad_inputs/<decoder>/` goes to that
//! decoder, then (if it decoded) to validation, and the outcome must be the one its
//! folder's `expected.txt` names.
//!
//! Files named `ok_*` must decode and `err_*` must be refused; `expected.txt` says more
//! about each: for a refusal, a piece of the error message; for a decode, what
//! validation kept and refused. A file without a line there (a new fuzzer find, say)
//! fails the test, and so does a line without a file. `make_inputs.py` beside the
//! folders writes most of the files; `README.md` there says how to add one.
//!
//! Each file is decoded on a thread with the stack a tokio thread has in the collector,
//! so input nested deep enough to overflow it fails here as it would crash there.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use caracal_collector::ingest::{
    agent::rows::refuse_invalid_rows,
    otlp_json::decode_json,
    validate::{validate, AttributeLimits},
    zipkin::decode::decode_spans,
    DecodeNotes,
};
use caracal_proto::AgentReport;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Stack of tokio's worker and blocking threads, where the collector decodes.
const DECODER_STACK_BYTES: usize = 2 * 1024 * 1024;

/// Latest accepted span start: a fixed "now", 2030-01-01T00:00:00Z.
const MAX_START_NS: u64 = 1_893_456_000_000_000_000;

/// The file naming each file's expected outcome, in every folder.
const EXPECTED_FILE: &str = "expected.txt";

#[derive(Debug, Clone, Copy)]
enum Decoder {
    OtlpProtobuf,
    OtlpJson,
    ZipkinJson,
    AgentProtocol,
}

/// What a decoder produced: the request for the ingest path, the decoder's notes, and
/// a summary of anything else it read (an agent report's aggregates, and which of its
/// rows validation refused).
type Decoded = (ExportTraceServiceRequest, DecodeNotes, String);

impl Decoder {
    /// Decodes `body` as the decoder's receiver does (after decompression); an agent
    /// report yields the kept spans it hands to the ingest path.
    fn decode(self, body: &[u8]) -> Result<Decoded, String> {
        match self {
            Self::OtlpProtobuf => caracal_model::lenient::decode_export_request(body)
                .map(|decoded| {
                    let notes = DecodeNotes::invalid_utf8(decoded.num_invalid_utf8);
                    (decoded.request, notes, String::new())
                })
                .map_err(|error| error.to_string()),
            Self::OtlpJson => decode_json(body)
                .map(|(request, notes)| (request, notes, String::new()))
                .map_err(|error| error.to_string()),
            Self::ZipkinJson => decode_spans(body)
                .map(|(request, notes)| (request, notes, String::new()))
                .map_err(|error| error.to_string()),
            Self::AgentProtocol => AgentReport::decode(body)
                .map(|mut report| {
                    let num_hist_keys: usize = report
                        .aggregates
                        .iter()
                        .map(|aggregate| aggregate.hist_keys.len())
                        .sum();
                    let mut summary = format!(
                        " aggregates={} hist_keys={num_hist_keys} events={} metrics={} heartbeat={}",
                        report.aggregates.len(),
                        report.events.len(),
                        report.metrics.len(),
                        report.heartbeat.is_some(),
                    );
                    // Then what row validation refused of it, by reason.
                    let validation = refuse_invalid_rows(&mut report, MAX_START_NS / 1_000_000_000);
                    for (reason, count) in &validation.rejected {
                        let _ = write!(summary, " {}={count}", reason.label());
                    }
                    let request = ExportTraceServiceRequest {
                        resource_spans: report.kept_spans,
                    };
                    (request, DecodeNotes::default(), summary)
                })
                .map_err(|error| error.to_string()),
        }
    }
}

/// One line of what happened to `body`: `err: <message>`, or `ok` followed by the
/// span count, what validation kept and refused by reason, what was repaired, and for
/// an agent report what else it carried.
fn outcome(decoder: Decoder, body: &[u8]) -> String {
    let (mut request, notes, summary) = match decoder.decode(body) {
        Ok(decoded) => decoded,
        Err(message) => return format!("err: {message}"),
    };
    let num_spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|resource_spans| &resource_spans.scope_spans)
        .map(|scope_spans| scope_spans.spans.len())
        .sum();
    let mut report = validate(&mut request, MAX_START_NS, &AttributeLimits::default());
    report.add_malformed(&notes);
    let mut line = format!("ok spans={num_spans} accepted={}", report.num_accepted);
    for (reason, count) in &report.rejected {
        let _ = write!(line, " {}={count}", reason.label());
    }
    for (label, count) in [
        ("invalid_utf8", notes.num_invalid_utf8),
        ("negative_durations", report.num_negative_durations),
        ("truncated", report.num_truncated),
        ("attributes_dropped", report.num_attributes_dropped),
    ] {
        if count > 0 {
            let _ = write!(line, " {label}={count}");
        }
    }
    line.push_str(&summary);
    // The partial-success message speaks exactly when something was refused or repaired.
    let is_clean = report.rejected.is_empty()
        && notes.num_invalid_utf8 == 0
        && report.num_negative_durations == 0
        && report.num_truncated == 0
        && report.num_attributes_dropped == 0;
    let message = report.message(&notes);
    assert_eq!(message.is_empty(), is_clean, "{line}: {message:?}");
    line
}

/// Runs `outcome` on a thread with the collector's decoding stack; a panic is an
/// outcome too (and always a failure).
fn outcome_on_decoder_stack(decoder: Decoder, body: Vec<u8>) -> String {
    let thread = std::thread::Builder::new()
        .name("decoder".into())
        .stack_size(DECODER_STACK_BYTES)
        .spawn(move || outcome(decoder, &body))
        .expect("failed to start a decoder thread");
    thread
        .join()
        .unwrap_or_else(|_panic| "panicked (see the message above)".into())
}

/// Whether `actual` is what `expected` asks: `err <text>` wants a refusal whose message
/// contains `<text>`; anything else must equal the `ok` line exactly.
fn matches(expected: &str, actual: &str) -> bool {
    match expected.strip_prefix("err") {
        Some(needle) => actual
            .strip_prefix("err: ")
            .is_some_and(|message| message.contains(needle.trim())),
        None => expected == actual,
    }
}

fn read_expected(folder: &Path) -> BTreeMap<String, String> {
    let path = folder.join(EXPECTED_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (file, expected) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("{}: not `file: outcome`: {line}", path.display()));
            (file.to_owned(), expected.trim().to_owned())
        })
        .collect()
}

/// Feeds every file of `tests/bad_inputs/<folder>` to `decoder` and checks each
/// outcome against `expected.txt`, naming every file that differs.
fn check_folder(folder: &str, decoder: Decoder) {
    let folder: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "bad_inputs", folder]
        .iter()
        .collect();
    let expected = read_expected(&folder);
    let mut files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", folder.display()))
        .map(|entry| entry.expect("cannot read a directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name != EXPECTED_FILE)
        .collect();
    files.sort();
    assert!(files.len() >= 10, "too few inputs in {}", folder.display());

    let mut failures = Vec::new();
    for file in &files {
        let body = std::fs::read(folder.join(file)).expect("cannot read an input");
        let actual = outcome_on_decoder_stack(decoder, body);
        let Some(expected) = expected.get(file) else {
            failures.push(format!(
                "{file}: no line in {EXPECTED_FILE}; got `{actual}`"
            ));
            continue;
        };
        let prefix_agrees = match file.split('_').next() {
            Some("ok") => expected.starts_with("ok "),
            Some("err") => expected.starts_with("err"),
            _ => true,
        };
        if !prefix_agrees {
            failures.push(format!("{file}: the name contradicts `{expected}`"));
        } else if !matches(expected, &actual) {
            failures.push(format!("{file}: expected `{expected}`, got `{actual}`"));
        }
    }
    for file in expected.keys() {
        if !files.contains(file) {
            failures.push(format!(
                "{file}: in {EXPECTED_FILE} but there is no such file"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs in {} differ:\n{}",
        failures.len(),
        files.len(),
        folder.display(),
        failures.join("\n")
    );
}

#[test]
fn otlp_protobuf_bad_inputs() {
    check_folder("otlp_protobuf", Decoder::OtlpProtobuf);
}

#[test]
fn otlp_json_bad_inputs() {
    check_folder("otlp_json", Decoder::OtlpJson);
}

#[test]
fn zipkin_json_bad_inputs() {
    check_folder("zipkin_json", Decoder::ZipkinJson);
}

#[test]
fn agent_protocol_bad_inputs() {
    check_folder("agent_protocol", Decoder::AgentProtocol);
}

#[test]
fn expectations_are_matched_as_documented() {
    assert!(matches(
        "err recursion limit",
        "err: recursion limit reached"
    ));
    assert!(!matches("err recursion limit", "err: buffer underflow"));
    assert!(!matches("err recursion limit", "ok spans=0 accepted=0"));
    assert!(matches("ok spans=1 accepted=1", "ok spans=1 accepted=1"));
    assert!(!matches(
        "ok spans=1 accepted=1",
        "ok spans=1 accepted=1 invalid_utf8=1"
    ));
    assert!(!matches(
        "ok spans=0 accepted=0",
        "err: ok spans=0 accepted=0"
    ));
}
