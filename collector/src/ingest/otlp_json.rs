//! OTLP/JSON export requests, decoded so that one bad span does not cost the good ones.
//!
//! The whole request is decoded with the `opentelemetry-proto` serde types first: one
//! pass, the common case. When that fails and the body is still a JSON object, it is
//! decoded again piece by piece: each resource and scope envelope without its children,
//! then every span on its own. A span with a malformed field (a non-hex id, a timestamp
//! that is not a number) is then refused and counted as `malformed_span`, and the spans
//! around it are kept, as the protobuf and Zipkin receivers do; a malformed envelope
//! refuses the spans inside it. Invalid UTF-8 is replaced with U+FFFD and counted, as in
//! protobuf strings. A body that is not JSON at all is refused whole.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use serde_json::{Map, Value};

use super::DecodeNotes;
use crate::IngestError;

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` body (already decompressed).
///
/// # Errors
/// [`IngestError::Malformed`] when the body is not JSON, or not an object whose
/// `resourceSpans` is a list, and the whole request does not decode either.
pub fn decode_json(body: &[u8]) -> Result<(ExportTraceServiceRequest, DecodeNotes), IngestError> {
    let mut notes = DecodeNotes::default();
    let repaired;
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(_) => {
            notes.num_invalid_utf8 = body
                .utf8_chunks()
                .filter(|chunk| !chunk.invalid().is_empty())
                .count() as u64;
            repaired = String::from_utf8_lossy(body);
            repaired.as_ref()
        }
    };
    let whole_error = match serde_json::from_str::<ExportTraceServiceRequest>(text) {
        Ok(request) => return Ok((request, notes)),
        Err(error) => error,
    };
    let refused = || IngestError::Malformed(format!("invalid OTLP JSON: {whole_error}"));
    let Ok(Value::Object(mut document)) = serde_json::from_str::<Value>(text) else {
        return Err(refused());
    };
    let Ok(resources) = take_list(&mut document, "resourceSpans", "resource_spans") else {
        return Err(refused());
    };
    let mut request = ExportTraceServiceRequest::default();
    for (resource_index, resource) in resources.into_iter().enumerate() {
        let path = format!("resourceSpans[{resource_index}]");
        if let Some(resource_spans) = decode_resource(resource, &path, &mut notes) {
            request.resource_spans.push(resource_spans);
        }
    }
    Ok((request, notes))
}

/// One `ResourceSpans`, keeping what of it decodes.
fn decode_resource(resource: Value, path: &str, notes: &mut DecodeNotes) -> Option<ResourceSpans> {
    let Value::Object(mut resource) = resource else {
        notes.refuse(path, "not an object", 0);
        return None;
    };
    let Ok(scopes) = take_list(&mut resource, "scopeSpans", "scope_spans") else {
        notes.refuse(path, "scopeSpans is not a list", 0);
        return None;
    };
    let mut resource_spans = match serde_json::from_value::<ResourceSpans>(Value::Object(resource))
    {
        Ok(resource_spans) => resource_spans,
        Err(error) => {
            let num_spans = scopes.iter().map(count_spans).sum();
            notes.refuse(path, &error.to_string(), num_spans);
            return None;
        }
    };
    for (scope_index, scope) in scopes.into_iter().enumerate() {
        let path = format!("{path}.scopeSpans[{scope_index}]");
        if let Some(scope_spans) = decode_scope(scope, &path, notes) {
            resource_spans.scope_spans.push(scope_spans);
        }
    }
    Some(resource_spans)
}

/// One `ScopeSpans`, keeping the spans that decode.
fn decode_scope(scope: Value, path: &str, notes: &mut DecodeNotes) -> Option<ScopeSpans> {
    let num_spans = count_spans(&scope);
    let Value::Object(mut scope) = scope else {
        notes.refuse(path, "not an object", num_spans);
        return None;
    };
    let Ok(spans) = take_list(&mut scope, "spans", "spans") else {
        notes.refuse(path, "spans is not a list", 1);
        return None;
    };
    let mut scope_spans = match serde_json::from_value::<ScopeSpans>(Value::Object(scope)) {
        Ok(scope_spans) => scope_spans,
        Err(error) => {
            notes.refuse(path, &error.to_string(), num_spans);
            return None;
        }
    };
    for (span_index, span) in spans.into_iter().enumerate() {
        match serde_json::from_value::<Span>(span) {
            Ok(span) => scope_spans.spans.push(span),
            Err(error) => notes.refuse(
                &format!("{path}.spans[{span_index}]"),
                &error.to_string(),
                1,
            ),
        }
    }
    Some(scope_spans)
}

/// Removes the list under `key` (or its snake-case `alias`) from `object`: empty when
/// absent or null, an error when it is something else.
fn take_list(object: &mut Map<String, Value>, key: &str, alias: &str) -> Result<Vec<Value>, ()> {
    let value = object.remove(key).or_else(|| object.remove(alias));
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => Ok(list),
        Some(_) => Err(()),
    }
}

/// Spans a scope's JSON holds (its `spans` list's length), for counting what a
/// malformed envelope refuses.
fn count_spans(scope: &Value) -> u64 {
    scope
        .get("spans")
        .and_then(Value::as_array)
        .map_or(0, |spans| spans.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_SPAN: &str = r#"{"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708", "name": "good", "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000000001000"}"#;

    fn request(spans: &[&str]) -> String {
        format!(
            r#"{{"resourceSpans": [{{"resource": {{"attributes": [{{"key": "service.name", "value": {{"stringValue": "checkout"}}}}]}}, "scopeSpans": [{{"scope": {{"name": "s"}}, "spans": [{}]}}]}}]}}"#,
            spans.join(", ")
        )
    }

    fn names(request: &ExportTraceServiceRequest) -> Vec<&str> {
        request
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| &scope.spans)
            .map(|span| span.name.as_str())
            .collect()
    }

    #[test]
    fn a_malformed_span_is_refused_and_its_neighbours_kept() {
        let bad = r#"{"traceId": "not hex at all, not hex at all, abcd", "spanId": "0102030405060708", "name": "bad"}"#;
        let body = request(&[GOOD_SPAN, bad, GOOD_SPAN]);
        let (decoded, notes) = decode_json(body.as_bytes()).expect("decodes");
        assert_eq!(names(&decoded), ["good", "good"]);
        assert_eq!(notes.num_malformed_spans, 1);
        let first = notes.first_malformed_opt.expect("a reason");
        assert!(
            first.starts_with("resourceSpans[0].scopeSpans[0].spans[1]: "),
            "{first}"
        );
        // The envelope survived with its spans.
        let resource = &decoded.resource_spans[0];
        assert!(resource.resource.is_some());
        assert_eq!(
            resource.scope_spans[0]
                .scope
                .as_ref()
                .map(|scope| scope.name.as_str()),
            Some("s")
        );
    }

    #[test]
    fn a_malformed_envelope_refuses_its_spans_only() {
        let body = format!(
            r#"{{"resourceSpans": [{{"resource": {{"attributes": 5}}, "scopeSpans": [{{"spans": [{GOOD_SPAN}, {GOOD_SPAN}]}}]}}, {{"scopeSpans": [{{"spans": [{GOOD_SPAN}]}}]}}]}}"#
        );
        let (decoded, notes) = decode_json(body.as_bytes()).expect("decodes");
        assert_eq!(names(&decoded), ["good"]);
        assert_eq!(notes.num_malformed_spans, 2);
    }

    #[test]
    fn invalid_utf8_is_repaired_and_counted() {
        let mut body = request(&[GOOD_SPAN]).into_bytes();
        let at = body
            .windows(4)
            .position(|window| window == b"good")
            .expect("the name");
        body[at + 1] = 0xff;
        let (decoded, notes) = decode_json(&body).expect("decodes");
        assert_eq!(names(&decoded), ["g\u{fffd}od"]);
        assert_eq!(notes.num_invalid_utf8, 1);
    }

    #[test]
    fn what_is_not_json_or_not_a_request_is_refused_whole() {
        for body in ["", "{", "[1, 2", "{\"resourceSpans\": 5}", "\"text\""] {
            let error = decode_json(body.as_bytes()).expect_err(body);
            assert!(error.to_string().contains("invalid OTLP JSON"), "{error}");
        }
    }
}
