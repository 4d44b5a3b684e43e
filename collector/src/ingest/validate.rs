//! Span validation: drops invalid spans from a request and says why.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use caracal_model::ids::{parent_span_id, SpanId, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

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
pub fn validate(request: &mut ExportTraceServiceRequest, max_start_ns: u64) -> ValidationReport {
    let mut report = ValidationReport::default();
    for resource_spans in &mut request.resource_spans {
        for scope_spans in &mut resource_spans.scope_spans {
            scope_spans.spans.retain(|span| {
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
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

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
        let mut report = validate(&mut request, good_start + 1_000);
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
