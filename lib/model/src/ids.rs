//! Trace and span ids.

use std::fmt;

/// Why an id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id has the wrong number of bytes.
    #[error("id must be {expected} bytes, got {actual}")]
    WrongLength {
        /// The length the id must have.
        expected: usize,
        /// The length it had.
        actual: usize,
    },
    /// All bytes are zero, which OTLP and W3C define as invalid.
    #[error("id is all zeros")]
    AllZero,
    /// The hex text could not be parsed.
    #[error("id is not valid hex")]
    BadHex,
}

macro_rules! define_id {
    ($name:ident, $len:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Number of bytes in this id.
            pub const LEN: usize = $len;

            /// Validates raw bytes as sent by OTLP: exact length and not all zero.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
                let array: [u8; $len] = bytes.try_into().map_err(|_| IdError::WrongLength {
                    expected: $len,
                    actual: bytes.len(),
                })?;
                if array == [0u8; $len] {
                    return Err(IdError::AllZero);
                }
                Ok(Self(array))
            }

            /// Parses lowercase or uppercase hex. Shorter input is left-padded with
            /// zeros, as Jaeger and Zipkin do for 64-bit trace ids.
            pub fn from_hex(text: &str) -> Result<Self, IdError> {
                if text.is_empty() || text.len() > 2 * $len {
                    return Err(IdError::BadHex);
                }
                let mut padded = [b'0'; 2 * $len];
                padded[2 * $len - text.len()..].copy_from_slice(text.as_bytes());
                let mut array = [0u8; $len];
                const_hex::decode_to_slice(padded, &mut array).map_err(|_| IdError::BadHex)?;
                Self::from_bytes(&array)
            }

            /// Lowercase hex, the form every API shows.
            pub fn to_hex(&self) -> String {
                const_hex::encode(self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.to_hex())
            }
        }
    };
}

define_id!(TraceId, 16, "A 16-byte trace id.");
define_id!(SpanId, 8, "An 8-byte span id.");

/// Parses an optional parent span id: empty or all-zero bytes mean "no parent".
pub fn parent_span_id(bytes: &[u8]) -> Result<Option<SpanId>, IdError> {
    if bytes.is_empty() || bytes.iter().all(|byte| *byte == 0) {
        return Ok(None);
    }
    SpanId::from_bytes(bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_length_and_zero() {
        assert_eq!(
            TraceId::from_bytes(&[1; 15]),
            Err(IdError::WrongLength {
                expected: 16,
                actual: 15
            })
        );
        assert_eq!(TraceId::from_bytes(&[0; 16]), Err(IdError::AllZero));
        assert!(SpanId::from_bytes(&[0, 0, 0, 0, 0, 0, 0, 1]).is_ok());
    }

    #[test]
    fn hex_round_trip_and_padding() {
        let id = TraceId::from_hex("19f84f102048e047").unwrap();
        assert_eq!(id.to_hex(), "000000000000000019f84f102048e047");
        assert_eq!(TraceId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(TraceId::from_hex("xyz"), Err(IdError::BadHex));
        assert_eq!(SpanId::from_hex("0000000000000000"), Err(IdError::AllZero));
    }

    #[test]
    fn parent_is_optional() {
        assert_eq!(parent_span_id(&[]), Ok(None));
        assert_eq!(parent_span_id(&[0; 8]), Ok(None));
        assert!(parent_span_id(&[1; 4]).is_err());
    }
}
