//! What the fuzz targets share: the collector's validation run on every request a
//! decoder accepted, with checks of what validation promises.
//!
//! Layout:
//! - [`check_request`]: validation with the default limits and with tiny ones, the
//!   partial-success message, and the invariants of the result.
//! - [`count_spans`], [`normalize_generated`]: helpers of the targets' own checks.

use caracal_collector::ingest::{
    validate::{validate, AttributeLimits, TRUNCATION_MARKER},
    DecodeNotes, ExportOutcome,
};
use caracal_model::ids::{parent_span_id, SpanId, TraceId};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, AnyValue, KeyValue},
};

/// Latest accepted start in the second validation pass: 2030-01-01T00:00:00Z, a fixed
/// "now" so that runs are reproducible.
const FIXED_MAX_START_NS: u64 = 1_893_456_000_000_000_000;

/// Limits so small that nearly every key and value is cut, often inside a multi-byte
/// character, and every attribute set loses all but one attribute.
const TINY_LIMITS: AttributeLimits = AttributeLimits {
    max_attributes: 1,
    max_key_bytes: 1,
    max_value_bytes: 1,
};

/// Number of spans in `request`.
pub fn count_spans(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|resource_spans| &resource_spans.scope_spans)
        .map(|scope_spans| scope_spans.spans.len())
        .sum()
}

/// Validates copies of `request` as the collector does, twice (default limits and no
/// upper bound on start times; tiny limits and a fixed "now"), and panics if the result
/// breaks a promise of validation.
pub fn check_request(request: &ExportTraceServiceRequest, notes: &DecodeNotes) {
    let num_spans = count_spans(request);
    for (max_start_ns, limits) in [
        (u64::MAX, AttributeLimits::default()),
        (FIXED_MAX_START_NS, TINY_LIMITS),
    ] {
        let mut validated = request.clone();
        let mut report = validate(&mut validated, max_start_ns, &limits);
        let num_refused = report.num_rejected();
        assert_eq!(report.num_accepted as u64 + num_refused, num_spans as u64);
        assert_eq!(count_spans(&validated), report.num_accepted);
        check_valid(&validated, max_start_ns, &limits);

        report.add_malformed(notes);
        assert_eq!(
            report.num_rejected(),
            num_refused + notes.num_malformed_spans
        );
        let outcome = ExportOutcome {
            accepted: report.num_accepted as u64,
            rejected: report.num_rejected(),
            message: report.message(notes),
        };
        let is_clean = outcome.rejected == 0 && outcome.message.is_empty();
        assert_eq!(outcome.into_partial_success().is_none(), is_clean);

        // Kept spans stay kept when validated again.
        let again = validate(&mut validated, max_start_ns, &limits);
        assert_eq!(again.num_accepted, report.num_accepted);
        assert_eq!(again.num_rejected(), 0);
    }
}

/// Panics unless every span left in `request` is one validation may keep.
fn check_valid(request: &ExportTraceServiceRequest, max_start_ns: u64, limits: &AttributeLimits) {
    for resource_spans in &request.resource_spans {
        assert!(
            !resource_spans.scope_spans.is_empty(),
            "empty resource kept"
        );
        if let Some(resource) = &resource_spans.resource {
            check_attributes(&resource.attributes, limits);
        }
        for scope_spans in &resource_spans.scope_spans {
            assert!(!scope_spans.spans.is_empty(), "empty scope kept");
            if let Some(scope) = &scope_spans.scope {
                check_attributes(&scope.attributes, limits);
            }
            for span in &scope_spans.spans {
                assert!(TraceId::from_bytes(&span.trace_id).is_ok());
                assert!(SpanId::from_bytes(&span.span_id).is_ok());
                assert!(parent_span_id(&span.parent_span_id).is_ok());
                assert!(span.start_time_unix_nano <= max_start_ns);
                check_attributes(&span.attributes, limits);
                for event in &span.events {
                    check_attributes(&event.attributes, limits);
                }
                for link in &span.links {
                    check_attributes(&link.attributes, limits);
                }
            }
        }
    }
}

fn check_attributes(attributes: &[KeyValue], limits: &AttributeLimits) {
    assert!(attributes.len() <= limits.max_attributes);
    for attribute in attributes {
        check_text(&attribute.key, limits.max_key_bytes);
        if let Some(value) = &attribute.value {
            check_value(value, limits);
        }
    }
}

fn check_value(value: &AnyValue, limits: &AttributeLimits) {
    match &value.value {
        Some(Value::StringValue(text)) => check_text(text, limits.max_value_bytes),
        Some(Value::BytesValue(bytes)) => assert!(bytes.len() <= limits.max_value_bytes),
        Some(Value::ArrayValue(array)) => {
            for item in &array.values {
                check_value(item, limits);
            }
        }
        Some(Value::KvlistValue(list)) => check_attributes(&list.values, limits),
        _ => {}
    }
}

/// A text is within its limit, or was cut there and marked.
fn check_text(text: &str, max_bytes: usize) {
    if text.len() > max_bytes {
        let kept = text.strip_suffix(TRUNCATION_MARKER);
        assert!(
            kept.is_some_and(|kept| kept.len() <= max_bytes),
            "text over the limit and not truncated: {text:?}"
        );
    }
}

/// Clears what the generated OTLP types read but the collector's lenient decoder
/// deliberately skips (`KeyValue.key_strindex`, `Resource.entity_refs`), so the two
/// decoders' results can be compared.
///
/// Returns false when they cannot be: a value was `AnyValue.string_value_strindex`, a
/// profiles-only field that the lenient decoder skips as unknown (as OTLP asks of
/// receivers of other signals), so its value is whatever the other fields of that
/// `AnyValue` said, which the generated types no longer show.
pub fn normalize_generated(request: &mut ExportTraceServiceRequest) -> bool {
    let mut comparable = true;
    for resource_spans in &mut request.resource_spans {
        if let Some(resource) = &mut resource_spans.resource {
            resource.entity_refs.clear();
            comparable &= normalize_attributes(&mut resource.attributes);
        }
        for scope_spans in &mut resource_spans.scope_spans {
            if let Some(scope) = &mut scope_spans.scope {
                comparable &= normalize_attributes(&mut scope.attributes);
            }
            for span in &mut scope_spans.spans {
                comparable &= normalize_attributes(&mut span.attributes);
                for event in &mut span.events {
                    comparable &= normalize_attributes(&mut event.attributes);
                }
                for link in &mut span.links {
                    comparable &= normalize_attributes(&mut link.attributes);
                }
            }
        }
    }
    comparable
}

/// Clears `key_strindex`; false if a value was a string table reference.
fn normalize_attributes(attributes: &mut [KeyValue]) -> bool {
    let mut comparable = true;
    for attribute in attributes {
        attribute.key_strindex = 0;
        if let Some(value) = &mut attribute.value {
            comparable &= normalize_value(value);
        }
    }
    comparable
}

fn normalize_value(value: &mut AnyValue) -> bool {
    match &mut value.value {
        Some(Value::ArrayValue(array)) => array.values.iter_mut().all(normalize_value),
        Some(Value::KvlistValue(list)) => normalize_attributes(&mut list.values),
        Some(Value::StringValueStrindex(_)) => false,
        _ => true,
    }
}
