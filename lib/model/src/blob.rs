//! The span blob: one span with its resource and scope, as an OTLP `ResourceSpans`
//! protobuf message, so a trace can be read back from a single column.
//!
//! [`SpanBlobEncoder`] encodes the resource and scope once per group and copies those
//! bytes in front of each span, so encoding clones nothing.

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::{
    encoding::{encode_key, encode_varint, encoded_len_varint, message, string, WireType},
    Message,
};

/// Field numbers of `ResourceSpans` and `ScopeSpans`.
const RESOURCE: u32 = 1;
const SCOPE_SPANS: u32 = 2;
const SCHEMA_URL: u32 = 3;
const SCOPE: u32 = 1;
const SPANS: u32 = 2;

/// Encodes spans as single-span `ResourceSpans` messages, reusing its buffers.
#[derive(Debug, Default)]
pub struct SpanBlobEncoder {
    resource: Vec<u8>,
    scope: Vec<u8>,
    blob: Vec<u8>,
}

impl SpanBlobEncoder {
    /// Starts a resource group.
    pub fn set_resource(&mut self, resource_spans: &ResourceSpans) {
        self.resource.clear();
        if let Some(resource) = &resource_spans.resource {
            message::encode(RESOURCE, resource, &mut self.resource);
        }
        if !resource_spans.schema_url.is_empty() {
            string::encode(SCHEMA_URL, &resource_spans.schema_url, &mut self.resource);
        }
    }

    /// Starts a scope group.
    pub fn set_scope(&mut self, scope_spans: &ScopeSpans) {
        self.scope.clear();
        if let Some(scope) = &scope_spans.scope {
            message::encode(SCOPE, scope, &mut self.scope);
        }
        if !scope_spans.schema_url.is_empty() {
            string::encode(SCHEMA_URL, &scope_spans.schema_url, &mut self.scope);
        }
    }

    /// The blob of one span of the current resource and scope.
    pub fn encode(&mut self, span: &Span) -> &[u8] {
        self.blob.clear();
        self.blob.extend_from_slice(&self.resource);
        let span_len = span.encoded_len();
        let scope_spans_len = self.scope.len() + 1 + encoded_len_varint(span_len as u64) + span_len;
        encode_key(SCOPE_SPANS, WireType::LengthDelimited, &mut self.blob);
        encode_varint(scope_spans_len as u64, &mut self.blob);
        self.blob.extend_from_slice(&self.scope);
        message::encode(SPANS, span, &mut self.blob);
        &self.blob
    }
}

/// Reads a blob back.
pub fn decode_span_blob(blob: &[u8]) -> Result<ResourceSpans, prost::DecodeError> {
    ResourceSpans::decode(blob)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
        resource::v1::Resource,
    };

    #[test]
    fn blob_is_a_single_span_resource_spans() {
        let span = |name: &str| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: name.into(),
            start_time_unix_nano: 5,
            ..Default::default()
        };
        let resource_spans = ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("svc".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1".into(),
                    ..Default::default()
                }),
                spans: vec![span("a"), span("b")],
                schema_url: "https://scope".into(),
            }],
            schema_url: "https://resource".into(),
        };
        let mut encoder = SpanBlobEncoder::default();
        encoder.set_resource(&resource_spans);
        let scope_spans = &resource_spans.scope_spans[0];
        encoder.set_scope(scope_spans);
        for span in &scope_spans.spans {
            let decoded = decode_span_blob(encoder.encode(span)).unwrap();
            let expected = ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span.clone()],
                    ..scope_spans.clone()
                }],
                ..resource_spans.clone()
            };
            assert_eq!(decoded, expected);
        }
        // Without resource or scope.
        let bare = ResourceSpans::default();
        encoder.set_resource(&bare);
        encoder.set_scope(&ScopeSpans::default());
        let decoded = decode_span_blob(encoder.encode(&span("c"))).unwrap();
        assert_eq!(decoded.scope_spans[0].spans[0].name, "c");
        assert!(decoded.resource.is_none());
    }
}
