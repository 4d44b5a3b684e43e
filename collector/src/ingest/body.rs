//! Request bodies: content encodings and size limits shared by the HTTP receivers.

use std::io::Read;

use bytes::Bytes;

use crate::IngestError;

/// Decodes a body sent with `Content-Encoding: encoding` (none, `identity` or `gzip`),
/// refusing output larger than `limit` so a small compressed bomb cannot exhaust memory.
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
        Some(other) => Err(IngestError::UnsupportedMedia(format!(
            "content encoding {other:?} is not supported (use gzip or none)"
        ))),
    }
}

fn read_limited(reader: impl Read, limit: usize) -> Result<Bytes, IngestError> {
    let mut output = Vec::new();
    let mut limited = reader.take(limit as u64 + 1);
    limited
        .read_to_end(&mut output)
        .map_err(|error| IngestError::Malformed(format!("cannot decompress body: {error}")))?;
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

    #[test]
    fn gzip_round_trip_and_bomb_protection() {
        let data = vec![b'a'; 10_000];
        assert_eq!(
            decode_content(Some("gzip"), gzip(&data), 10_000).unwrap(),
            data
        );
        assert!(matches!(
            decode_content(Some("gzip"), gzip(&data), 9_999),
            Err(IngestError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_content(Some("gzip"), Bytes::from_static(b"not gzip"), 100),
            Err(IngestError::Malformed(_))
        ));
        assert!(matches!(
            decode_content(Some("br"), Bytes::new(), 100),
            Err(IngestError::UnsupportedMedia(_))
        ));
        assert!(matches!(
            decode_content(None, Bytes::from_static(b"12345"), 4),
            Err(IngestError::TooLarge { .. })
        ));
    }
}
