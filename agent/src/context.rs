//! W3C trace context: the `traceparent` header that carries a trace across services,
//! and the random ids of new traces and spans.
//!
//! The sampled flag carries the keep decision: a caller whose trace is kept so far
//! (sampled share, a sampled parent, or an error or slow span before the call) sends
//! `01`, and a transaction started from a sampled context keeps its part of the trace.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

use caracal_model::ids::{SpanId, TraceId};

/// The W3C header name.
pub const TRACEPARENT: &str = "traceparent";

/// Where a span sits in a distributed trace, as carried by `traceparent`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// The span the next span is a child of.
    pub span_id: SpanId,
    /// Whether the trace is kept (W3C sampled flag).
    pub sampled: bool,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_traceparent())
    }
}

impl TraceContext {
    /// The `traceparent` value, version `00`.
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id.to_hex(),
            self.span_id.to_hex(),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// Parses a `traceparent` value; `None` when it is invalid (the W3C rule is then to
    /// start a new trace). Accepts future versions' extra fields, refuses version `ff`,
    /// uppercase hex, and all-zero ids.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let value = value.trim();
        let bytes = value.as_bytes();
        if bytes.len() < 55 || !value.is_ascii() {
            return None;
        }
        let (version, rest) = value.split_at(2);
        if !is_lower_hex(version) || version == "ff" {
            return None;
        }
        if version == "00" && bytes.len() != 55 {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        let fields = &rest[..53];
        let mut parts = fields.split('-');
        let (Some(""), Some(trace_id), Some(span_id), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if trace_id.len() != 32 || span_id.len() != 16 || flags.len() != 2 {
            return None;
        }
        if !is_lower_hex(trace_id) || !is_lower_hex(span_id) || !is_lower_hex(flags) {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self {
            trace_id: TraceId::from_hex(trace_id).ok()?,
            span_id: SpanId::from_hex(span_id).ok()?,
            sampled: flags & 1 == 1,
        })
    }

    /// Finds and parses the `traceparent` header (name compared case-insensitively)
    /// among `headers`.
    pub fn extract<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        headers
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(TRACEPARENT))
            .and_then(|(_, value)| Self::from_traceparent(value))
    }

    /// Appends the `traceparent` header to `headers`.
    pub fn inject(&self, headers: &mut impl Extend<(String, String)>) {
        headers.extend([(TRACEPARENT.to_owned(), self.to_traceparent())]);
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

thread_local! {
    /// State of this thread's id generator (wyrand), seeded from the OS-keyed hasher.
    static RANDOM_STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

/// A random `u64` (wyrand: fast, not cryptographic, good enough for ids and jitter).
pub(crate) fn random_u64() -> u64 {
    RANDOM_STATE
        .try_with(|state| {
            let next = state.get().wrapping_add(0xa076_1d64_78bd_642f);
            state.set(next);
            let product = u128::from(next) * u128::from(next ^ 0xe703_7ed1_a0b4_28db);
            (product as u64) ^ ((product >> 64) as u64)
        })
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
}

/// A new random, valid trace id.
pub(crate) fn new_trace_id() -> TraceId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&random_u64().to_be_bytes());
    bytes[8..].copy_from_slice(&(random_u64() | 1).to_be_bytes());
    TraceId(bytes)
}

/// A new random, valid span id.
pub(crate) fn new_span_id() -> SpanId {
    SpanId((random_u64() | 1).to_be_bytes())
}

/// The sampling threshold for a keep ratio in `0.0..=1.0`, compared with
/// [`trace_id_rank`] (the same rule as OpenTelemetry's `TraceIdRatioBased`, so every
/// service keeps the same traces for the same ratio even without propagation).
pub(crate) fn ratio_threshold(ratio: f64) -> u64 {
    (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64
}

/// The rank of a trace for ratio sampling: the low 8 bytes, halved.
pub(crate) fn trace_id_rank(trace_id: &TraceId) -> u64 {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id.0[8..]);
    u64::from_be_bytes(low) >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: Option<(&str, &str, bool)>) {
        let parsed = TraceContext::from_traceparent(value).map(|context| {
            (
                context.trace_id.to_hex(),
                context.span_id.to_hex(),
                context.sampled,
            )
        });
        let expected = expected
            .map(|(trace_id, span_id, sampled)| (trace_id.to_owned(), span_id.to_owned(), sampled));
        assert_eq!(parsed, expected, "{value}");
    }

    #[test]
    fn parses_traceparent() {
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let span_id = "00f067aa0ba902b7";
        check(
            &format!("00-{trace_id}-{span_id}-01"),
            Some((trace_id, span_id, true)),
        );
        check(
            &format!("00-{trace_id}-{span_id}-00"),
            Some((trace_id, span_id, false)),
        );
        check(
            &format!(" 00-{trace_id}-{span_id}-03 "),
            Some((trace_id, span_id, true)),
        );
        check(
            &format!("01-{trace_id}-{span_id}-01-future"),
            Some((trace_id, span_id, true)),
        );
        check(&format!("00-{trace_id}-{span_id}-01-future"), None);
        check(&format!("ff-{trace_id}-{span_id}-01"), None);
        check(
            &format!("00-{}-{span_id}-01", trace_id.to_uppercase()),
            None,
        );
        check(&format!("00-{}-{span_id}-01", "0".repeat(32)), None);
        check(&format!("00-{trace_id}-{}-01", "0".repeat(16)), None);
        check(&format!("00-{trace_id}-{span_id}-0x"), None);
        check(&format!("00_{trace_id}-{span_id}-01"), None);
        check("", None);
    }

    #[test]
    fn round_trips_and_injects() {
        for sampled in [false, true] {
            let context = TraceContext {
                trace_id: new_trace_id(),
                span_id: new_span_id(),
                sampled,
            };
            assert_eq!(
                TraceContext::from_traceparent(&context.to_traceparent()),
                Some(context)
            );
            let mut headers: Vec<(String, String)> = vec![("Accept".into(), "*/*".into())];
            context.inject(&mut headers);
            let extracted = TraceContext::extract(
                headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            );
            assert_eq!(extracted, Some(context));
        }
    }

    #[test]
    fn ratio_sampling_is_deterministic_and_proportional() {
        let threshold = ratio_threshold(0.25);
        let kept = (0..20_000)
            .filter(|_| trace_id_rank(&new_trace_id()) < threshold)
            .count();
        assert!((4_500..5_500).contains(&kept), "{kept}");
        assert_eq!(ratio_threshold(0.0), 0);
        let all = TraceId([0xff; 16]);
        assert!(trace_id_rank(&all) < ratio_threshold(1.0));
    }
}
