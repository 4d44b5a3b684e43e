//! Span validation: drops invalid spans from a request and says why.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use caracal_model::ids::{parent_span_id, SpanId, TraceId};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, AnyValue, KeyValue},
    trace::v1::Span,
};

/// Earliest accepted span start: 2000-01-01T00:00:00Z. Older starts are clock errors.
pub const MIN_START_NS: u64 = 946_684_800_000_000_000;

/// Why one span was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    /// The decoder could not read the span at all (a Zipkin span of the wrong shape).
    MalformedSpan,
    /// Trace id of the wrong length or all zero.
    InvalidTraceId,
    /// Span id of the wrong length or all zero.
    InvalidSpanId,
    /// Parent span id of the wrong length.
    InvalidParentSpanId,
    /// Start missing, before 2000, or too far in the future.
    TimestampOutOfRange,
}

impl RejectReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 5] = [
        Self::MalformedSpan,
        Self::InvalidTraceId,
        Self::InvalidSpanId,
        Self::InvalidParentSpanId,
        Self::TimestampOutOfRange,
    ];

    /// Stable label, used in messages and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::MalformedSpan => "malformed_span",
            Self::InvalidTraceId => "invalid_trace_id",
            Self::InvalidSpanId => "invalid_span_id",
            Self::InvalidParentSpanId => "invalid_parent_span_id",
            Self::TimestampOutOfRange => "timestamp_out_of_range",
        }
    }
}

/// What a decoder noticed before validation, reported together with its findings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DecodeNotes {
    /// Strings whose invalid UTF-8 was replaced with U+FFFD.
    pub num_invalid_utf8: u64,
    /// Spans the decoder could not read at all, refused as [`RejectReason::MalformedSpan`].
    pub num_malformed_spans: u64,
    /// Why the first of them could not be read.
    pub first_malformed_opt: Option<String>,
}

impl DecodeNotes {
    /// Notes of a decoder that repaired `num_invalid_utf8` strings.
    pub fn invalid_utf8(num_invalid_utf8: u64) -> Self {
        Self {
            num_invalid_utf8,
            ..Self::default()
        }
    }

    /// Counts `num_spans` the decoder could not read at `path` because of `reason`,
    /// keeping the first reason for the response.
    pub(crate) fn refuse(&mut self, path: &str, reason: &str, num_spans: u64) {
        self.num_malformed_spans += num_spans;
        if self.first_malformed_opt.is_none() {
            self.first_malformed_opt = Some(format!("{path}: {reason}"));
        }
    }
}

/// Limits on what one span may carry; larger input is cut, marked and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeLimits {
    /// Attributes kept per span, event or link; the rest are dropped and added to the
    /// OTLP `dropped_attributes_count`.
    pub max_attributes: usize,
    /// Bytes of an attribute key.
    pub max_key_bytes: usize,
    /// Bytes of a string value (at any depth) or a bytes value.
    pub max_value_bytes: usize,
}

impl Default for AttributeLimits {
    fn default() -> Self {
        Self {
            max_attributes: 128,
            max_key_bytes: 256,
            max_value_bytes: 16 * 1024,
        }
    }
}

/// Appended to a truncated key or string value.
pub const TRUNCATION_MARKER: &str = "…[truncated]";

fn truncate_text(text: &mut String, max_bytes: usize) -> bool {
    if text.len() <= max_bytes {
        return false;
    }
    let mut cut = max_bytes;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(TRUNCATION_MARKER);
    true
}

fn limit_value(value: &mut AnyValue, limits: &AttributeLimits) -> u64 {
    match value.value.as_mut() {
        Some(Value::StringValue(text)) => u64::from(truncate_text(text, limits.max_value_bytes)),
        Some(Value::BytesValue(bytes)) if bytes.len() > limits.max_value_bytes => {
            bytes.truncate(limits.max_value_bytes);
            1
        }
        Some(Value::ArrayValue(array)) => array
            .values
            .iter_mut()
            .map(|item| limit_value(item, limits))
            .sum(),
        Some(Value::KvlistValue(list)) => limit_attributes(&mut list.values, limits).1,
        _ => 0,
    }
}

/// Applies the limits to one attribute set; returns (dropped, truncated).
fn limit_attributes(attributes: &mut Vec<KeyValue>, limits: &AttributeLimits) -> (u32, u64) {
    let dropped = attributes.len().saturating_sub(limits.max_attributes);
    attributes.truncate(limits.max_attributes);
    let mut truncated = 0;
    for attribute in attributes.iter_mut() {
        truncated += u64::from(truncate_text(&mut attribute.key, limits.max_key_bytes));
        if let Some(value) = attribute.value.as_mut() {
            truncated += limit_value(value, limits);
        }
    }
    (u32::try_from(dropped).unwrap_or(u32::MAX), truncated)
}

/// Applies the limits to every attribute set of a span, counting into `report`.
fn limit_span(span: &mut Span, limits: &AttributeLimits, report: &mut ValidationReport) {
    let mut apply = |attributes: &mut Vec<KeyValue>, dropped_count: &mut u32| {
        let (dropped, truncated) = limit_attributes(attributes, limits);
        *dropped_count = dropped_count.saturating_add(dropped);
        report.num_attributes_dropped += u64::from(dropped);
        report.num_truncated += truncated;
    };
    apply(&mut span.attributes, &mut span.dropped_attributes_count);
    for event in &mut span.events {
        apply(&mut event.attributes, &mut event.dropped_attributes_count);
    }
    for link in &mut span.links {
        apply(&mut link.attributes, &mut link.dropped_attributes_count);
    }
}

/// What validation found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ValidationReport {
    /// Spans kept.
    pub num_accepted: usize,
    /// Spans refused, by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Spans whose end was before their start (kept, with duration 0).
    pub num_negative_durations: u64,
    /// Attributes dropped over the per-span (event, link) limit.
    pub num_attributes_dropped: u64,
    /// Keys and values cut to the length limit.
    pub num_truncated: u64,
}

impl ValidationReport {
    /// Total spans refused.
    pub fn num_rejected(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Adds the spans the decoder refused before validation.
    pub fn add_malformed(&mut self, notes: &DecodeNotes) {
        if notes.num_malformed_spans > 0 {
            *self
                .rejected
                .entry(RejectReason::MalformedSpan)
                .or_default() += notes.num_malformed_spans;
        }
    }

    /// Human-readable summary for `partial_success.error_message`; empty when clean.
    pub fn message(&self, notes: &DecodeNotes) -> String {
        let mut message = String::new();
        if !self.rejected.is_empty() {
            let _ = write!(message, "rejected {} spans:", self.num_rejected());
            for (reason, count) in &self.rejected {
                let _ = write!(message, " {} {}", count, reason.label());
            }
        }
        let mut note = |text: String| {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&text);
        };
        if let Some(detail) = &notes.first_malformed_opt {
            note(format!("first malformed span: {detail}"));
        }
        if notes.num_invalid_utf8 > 0 {
            note(format!(
                "{} strings had invalid UTF-8, replaced with U+FFFD",
                notes.num_invalid_utf8
            ));
        }
        if self.num_truncated > 0 {
            note(format!(
                "{} attribute keys or values over the length limit were truncated (marked {TRUNCATION_MARKER})",
                self.num_truncated
            ));
        }
        if self.num_attributes_dropped > 0 {
            note(format!(
                "{} attributes over the per-span limit were dropped (counted in dropped_attributes_count)",
                self.num_attributes_dropped
            ));
        }
        if self.num_negative_durations > 0 {
            note(format!(
                "{} spans ended before they started, stored with duration 0",
                self.num_negative_durations
            ));
        }
        message
    }
}

/// Drops every invalid span from `request` and removes emptied scopes and resources.
pub fn validate(
    request: &mut ExportTraceServiceRequest,
    max_start_ns: u64,
    limits: &AttributeLimits,
) -> ValidationReport {
    let mut report = ValidationReport::default();
    for resource_spans in &mut request.resource_spans {
        if let Some(resource) = resource_spans.resource.as_mut() {
            let (dropped, truncated) = limit_attributes(&mut resource.attributes, limits);
            resource.dropped_attributes_count =
                resource.dropped_attributes_count.saturating_add(dropped);
            report.num_attributes_dropped += u64::from(dropped);
            report.num_truncated += truncated;
        }
        for scope_spans in &mut resource_spans.scope_spans {
            if let Some(scope) = scope_spans.scope.as_mut() {
                let (dropped, truncated) = limit_attributes(&mut scope.attributes, limits);
                scope.dropped_attributes_count =
                    scope.dropped_attributes_count.saturating_add(dropped);
                report.num_attributes_dropped += u64::from(dropped);
                report.num_truncated += truncated;
            }
            scope_spans.spans.retain_mut(|span| {
                let verdict = if TraceId::from_bytes(&span.trace_id).is_err() {
                    Err(RejectReason::InvalidTraceId)
                } else if SpanId::from_bytes(&span.span_id).is_err() {
                    Err(RejectReason::InvalidSpanId)
                } else if parent_span_id(&span.parent_span_id).is_err() {
                    Err(RejectReason::InvalidParentSpanId)
                } else if span.start_time_unix_nano < MIN_START_NS
                    || span.start_time_unix_nano > max_start_ns
                {
                    Err(RejectReason::TimestampOutOfRange)
                } else {
                    Ok(())
                };
                match verdict {
                    Ok(()) => {
                        limit_span(span, limits, &mut report);
                        if span.end_time_unix_nano < span.start_time_unix_nano {
                            report.num_negative_durations += 1;
                        }
                        report.num_accepted += 1;
                        true
                    }
                    Err(reason) => {
                        *report.rejected.entry(reason).or_default() += 1;
                        false
                    }
                }
            });
        }
        resource_spans
            .scope_spans
            .retain(|scope_spans| !scope_spans.spans.is_empty());
    }
    request
        .resource_spans
        .retain(|resource_spans| !resource_spans.scope_spans.is_empty());
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans};

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn long_keys_and_values_are_cut_and_extra_attributes_dropped() {
        let limits = AttributeLimits {
            max_attributes: 3,
            max_key_bytes: 4,
            max_value_bytes: 5,
        };
        let mut big = span(vec![1; 16], vec![1; 8], vec![], MIN_START_NS + 1);
        big.attributes = (0..5)
            .map(|index| text(&format!("k{index}"), "short"))
            .collect();
        big.attributes[0] = text("a-long-key", "héllo wörld");
        big.events = vec![Event {
            attributes: vec![text("e", "0123456789")],
            ..Default::default()
        }];
        let mut request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![big],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let report = validate(&mut request, u64::MAX, &limits);
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.attributes.len(), 3);
        assert_eq!(span.dropped_attributes_count, 2);
        assert_eq!(span.attributes[0].key, format!("a-lo{TRUNCATION_MARKER}"));
        let Some(Value::StringValue(value)) = &span.attributes[0].value.as_ref().unwrap().value
        else {
            panic!("string expected")
        };
        // "héllo" is 6 bytes: the cut falls back to a character boundary.
        assert_eq!(value, &format!("héll{TRUNCATION_MARKER}"));
        assert_eq!(
            (
                report.num_truncated,
                report.num_attributes_dropped,
                report.num_accepted
            ),
            (3, 2, 1)
        );
        let message = report.message(&DecodeNotes::default());
        assert!(message.contains("3 attribute keys or values"), "{message}");
        assert!(
            message.contains("2 attributes over the per-span limit"),
            "{message}"
        );
    }

    fn span(trace_id: Vec<u8>, span_id: Vec<u8>, parent: Vec<u8>, start: u64) -> Span {
        Span {
            trace_id,
            span_id,
            parent_span_id: parent,
            start_time_unix_nano: start,
            end_time_unix_nano: start.saturating_add(10),
            ..Default::default()
        }
    }

    #[test]
    fn drops_only_bad_spans_and_explains() {
        let good_start = MIN_START_NS + 1;
        let mut request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![
                    ScopeSpans {
                        spans: vec![
                            span(vec![1; 16], vec![1; 8], vec![], good_start),
                            span(vec![0; 16], vec![1; 8], vec![], good_start),
                            span(vec![1; 15], vec![1; 8], vec![], good_start),
                            span(vec![1; 16], vec![0; 8], vec![], good_start),
                            span(vec![1; 16], vec![1; 8], vec![1; 3], good_start),
                            span(vec![1; 16], vec![1; 8], vec![0; 8], good_start),
                            span(vec![1; 16], vec![1; 8], vec![], 5),
                            span(vec![1; 16], vec![1; 8], vec![], u64::MAX),
                        ],
                        ..Default::default()
                    },
                    ScopeSpans {
                        spans: vec![span(vec![0; 16], vec![1; 8], vec![], good_start)],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        };
        let mut report = validate(
            &mut request,
            good_start + 1_000,
            &AttributeLimits::default(),
        );
        assert_eq!(report.num_accepted, 2);
        assert_eq!(report.num_rejected(), 7);
        assert_eq!(request.resource_spans[0].scope_spans.len(), 1);
        assert_eq!(
            report.message(&DecodeNotes::invalid_utf8(1)),
            "rejected 7 spans: 3 invalid_trace_id 1 invalid_span_id 1 invalid_parent_span_id \
             2 timestamp_out_of_range; 1 strings had invalid UTF-8, replaced with U+FFFD"
        );
        let notes = DecodeNotes {
            num_malformed_spans: 2,
            first_malformed_opt: Some("span 0: expected an object".into()),
            ..DecodeNotes::default()
        };
        report.add_malformed(&notes);
        assert_eq!(report.num_rejected(), 9);
        assert_eq!(
            report.message(&notes),
            "rejected 9 spans: 2 malformed_span 3 invalid_trace_id 1 invalid_span_id \
             1 invalid_parent_span_id 2 timestamp_out_of_range; \
             first malformed span: span 0: expected an object"
        );
    }
}
