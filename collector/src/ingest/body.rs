//! Request bodies: content encodings and size limits shared by the HTTP receivers.
//!
//! A body is limited twice: as sent (axum's `DefaultBodyLimit`, mapped to 413 by
//! [`RawBody::new`]) and after decompression ([`decode_content`]), so a small compressed
//! bomb cannot exhaust memory.

use std::io::Read;

use axum::{
    extract::rejection::{BytesRejection, FailedToBufferBody},
    http::{header, HeaderMap},
};
use bytes::Bytes;

use crate::IngestError;

/// Largest zstd window accepted, as a power of two: zstd's own default cap (128 MiB).
const MAX_ZSTD_WINDOW_LOG: u32 = 27;
/// Window always accepted, as a power of two: 8 MiB, the most any standard compression
/// level (1 to 19) uses, so a low body limit never refuses an ordinary client.
const MIN_ZSTD_WINDOW_LOG: u32 = 23;

/// Typical expansion of a compressed span payload, to guess the work of decoding it.
const TYPICAL_COMPRESSION_RATIO: usize = 10;

/// A request body as received: its bytes, within the limit, and its content encoding.
#[derive(Debug)]
pub struct RawBody {
    bytes: Bytes,
    encoding_opt: Option<String>,
}

impl RawBody {
    /// The body of a request, read within `limit` (larger gets 413).
    pub fn new(
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        limit: usize,
    ) -> Result<Self, IngestError> {
        let bytes = match body {
            Ok(bytes) => bytes,
            Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
                return Err(IngestError::TooLarge {
                    size: limit.saturating_add(1),
                    limit,
                })
            }
            Err(rejection) => {
                return Err(IngestError::Malformed(format!(
                    "cannot read body: {rejection}"
                )))
            }
        };
        let encoding_opt = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok(Self {
            bytes,
            encoding_opt,
        })
    }

    /// About how many bytes decoding will go through: more than sent when compressed.
    pub fn estimated_size(&self) -> usize {
        match self.encoding_opt.as_deref().map(str::trim) {
            None | Some("") | Some("identity") => self.bytes.len(),
            Some(_) => self.bytes.len().saturating_mul(TYPICAL_COMPRESSION_RATIO),
        }
    }

    /// Decompresses as the `Content-Encoding` says, within `limit` again.
    pub fn decode(self, limit: usize) -> Result<Bytes, IngestError> {
        decode_content(self.encoding_opt.as_deref(), self.bytes, limit)
    }
}

/// Decodes a body sent with `Content-Encoding: encoding` (none, `identity`, `gzip` or
/// `zstd`), refusing output larger than `limit` so a small compressed bomb cannot
/// exhaust memory.
pub fn decode_content(
    encoding: Option<&str>,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, IngestError> {
    let encoding = encoding.map(|text| text.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > limit {
                return Err(IngestError::TooLarge {
                    size: body.len(),
                    limit,
                });
            }
            Ok(body)
        }
        Some("gzip") | Some("x-gzip") => {
            read_limited(flate2::read::GzDecoder::new(body.as_ref()), limit)
        }
        Some("zstd") => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body.as_ref())
                .map_err(cannot_decompress)?;
            // A frame may ask for a window of up to 128 MiB; no body within `limit`
            // needs one larger than `limit`, so such frames are refused before the
            // decoder allocates it.
            decoder
                .window_log_max(zstd_window_log(limit))
                .map_err(cannot_decompress)?;
            read_limited(decoder, limit)
        }
        Some(other) => Err(IngestError::UnsupportedMedia(format!(
            "content encoding {other:?} is not supported (use gzip, zstd or none)"
        ))),
    }
}

/// The smallest power of two holding `limit` bytes, within the bounds above.
fn zstd_window_log(limit: usize) -> u32 {
    let needed = usize::BITS - limit.saturating_sub(1).leading_zeros();
    needed.clamp(MIN_ZSTD_WINDOW_LOG, MAX_ZSTD_WINDOW_LOG)
}

fn cannot_decompress(error: std::io::Error) -> IngestError {
    IngestError::Malformed(format!("cannot decompress body: {error}"))
}

fn read_limited(reader: impl Read, limit: usize) -> Result<Bytes, IngestError> {
    let mut output = Vec::new();
    let mut limited = reader.take(limit as u64 + 1);
    limited
        .read_to_end(&mut output)
        .map_err(cannot_decompress)?;
    if output.len() > limit {
        return Err(IngestError::TooLarge {
            size: output.len(),
            limit,
        });
    }
    Ok(Bytes::from(output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    fn zstd(data: &[u8]) -> Bytes {
        Bytes::from(zstd::stream::encode_all(data, 3).unwrap())
    }

    /// Decodes `body` as `encoding` within `limit`: the bytes, or the error's label.
    fn check(encoding: Option<&str>, body: Bytes, limit: usize, expected: Result<&[u8], &str>) {
        let decoded = decode_content(encoding, body, limit);
        match (decoded, expected) {
            (Ok(bytes), Ok(expected)) => assert_eq!(bytes, expected),
            (Err(error), Err(label)) => assert_eq!(error.label(), label, "{error}"),
            (decoded, expected) => panic!("got {decoded:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn gzip_round_trip_and_bomb_protection() {
        let data = vec![b'a'; 10_000];
        check(Some("gzip"), gzip(&data), 10_000, Ok(&data));
        check(Some(" GZIP "), gzip(&data), 10_000, Ok(&data));
        check(Some("gzip"), gzip(&data), 9_999, Err("too_large"));
        check(
            Some("gzip"),
            Bytes::from_static(b"not gzip"),
            100,
            Err("malformed"),
        );
        check(Some("br"), Bytes::new(), 100, Err("unsupported_media"));
        check(None, Bytes::from_static(b"12345"), 4, Err("too_large"));
        check(
            Some("identity"),
            Bytes::from_static(b"1234"),
            4,
            Ok(b"1234"),
        );
    }

    #[test]
    fn zstd_round_trip_and_bomb_protection() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|n| (n % 251).to_le_bytes())
            .collect();
        check(Some("zstd"), zstd(&data), data.len(), Ok(&data));
        check(Some("ZSTD"), zstd(&data), data.len(), Ok(&data));
        // Two frames back to back are one body, as the format allows.
        let mut two_frames = zstd(b"hello ").to_vec();
        two_frames.extend_from_slice(&zstd(b"world"));
        check(
            Some("zstd"),
            Bytes::from(two_frames),
            100,
            Ok(b"hello world"),
        );
        // A bomb: 64 MiB of zeros compress to a few KiB; decoding stops past the limit.
        let bomb = zstd(&vec![0; 64 << 20]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        check(Some("zstd"), bomb, 1 << 20, Err("too_large"));
        check(Some("zstd"), zstd(&data), data.len() - 1, Err("too_large"));
        check(
            Some("zstd"),
            Bytes::from_static(b"not zstd"),
            100,
            Err("malformed"),
        );
        let mut truncated = zstd(&data).to_vec();
        truncated.truncate(truncated.len() / 2);
        check(
            Some("zstd"),
            Bytes::from(truncated),
            data.len(),
            Err("malformed"),
        );
    }

    #[test]
    fn zstd_frames_asking_for_a_window_beyond_the_limit_are_refused() {
        // A frame compressed with a 128 MiB window (long-distance mode) would make the
        // decoder allocate that much; with a 1 MiB limit it is refused up front.
        let data = vec![7u8; 4 << 20];
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        encoder.long_distance_matching(true).unwrap();
        encoder.window_log(27).unwrap();
        encoder.write_all(&data).unwrap();
        let body = Bytes::from(encoder.finish().unwrap());
        check(Some("zstd"), body.clone(), 1 << 20, Err("malformed"));
        check(Some("zstd"), body, 1 << 27, Ok(&data));
    }

    #[test]
    fn window_log_covers_the_limit() {
        assert_eq!(zstd_window_log(0), MIN_ZSTD_WINDOW_LOG);
        assert_eq!(zstd_window_log(1024), MIN_ZSTD_WINDOW_LOG);
        assert_eq!(zstd_window_log(8 << 20), 23);
        assert_eq!(zstd_window_log((8 << 20) + 1), 24);
        assert_eq!(zstd_window_log(16 << 20), 24);
        assert_eq!(zstd_window_log(usize::MAX), MAX_ZSTD_WINDOW_LOG);
    }
}
