//! Attribute values in the columnar form Caracal stores: parallel arrays of keys,
//! values rendered as text, and value types.
//!
//! Text is what tag search compares, exactly as Jaeger's storage backends do: an int
//! `123` matches the query tag `"123"`, a bool matches `"true"`, bytes match their
//! base64 form. The type column lets the query side give typed values back.

use std::borrow::Cow;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

/// The type of a stored attribute value, as kept in the `*_types` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ValueType {
    /// UTF-8 text.
    String = 0,
    /// `true` or `false`.
    Bool = 1,
    /// A signed 64-bit integer.
    Int = 2,
    /// A 64-bit float.
    Double = 3,
    /// Bytes, stored as standard base64.
    Bytes = 4,
    /// An array, stored as JSON.
    Array = 5,
    /// A key-value list, stored as a JSON object.
    Map = 6,
    /// An empty value.
    Empty = 7,
}

impl ValueType {
    /// Reads a stored type byte; unknown bytes read as text.
    pub fn from_u8(byte: u8) -> Self {
        match byte {
            1 => Self::Bool,
            2 => Self::Int,
            3 => Self::Double,
            4 => Self::Bytes,
            5 => Self::Array,
            6 => Self::Map,
            7 => Self::Empty,
            _ => Self::String,
        }
    }

    /// The Jaeger tag type name (`string`, `bool`, `int64`, `float64`, `binary`).
    pub fn jaeger_name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Int => "int64",
            Self::Double => "float64",
            Self::Bytes => "binary",
            Self::String | Self::Array | Self::Map | Self::Empty => "string",
        }
    }
}

/// Renders an OTLP value as the text that is stored and searched.
pub fn value_text(value: Option<&AnyValue>) -> (ValueType, Cow<'_, str>) {
    let Some(inner) = value.and_then(|any| any.value.as_ref()) else {
        return (ValueType::Empty, Cow::Borrowed(""));
    };
    match inner {
        Value::StringValue(text) => (ValueType::String, Cow::Borrowed(text.as_str())),
        Value::BoolValue(flag) => (
            ValueType::Bool,
            Cow::Borrowed(if *flag { "true" } else { "false" }),
        ),
        Value::IntValue(number) => (ValueType::Int, Cow::Owned(number.to_string())),
        Value::DoubleValue(number) => (ValueType::Double, Cow::Owned(format_double(*number))),
        Value::BytesValue(bytes) => (
            ValueType::Bytes,
            Cow::Owned(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
        Value::ArrayValue(_) => (ValueType::Array, Cow::Owned(to_json(inner).to_string())),
        Value::KvlistValue(_) => (ValueType::Map, Cow::Owned(to_json(inner).to_string())),
        // Dictionary-indexed strings only occur in the profiles signal, never in traces.
        Value::StringValueStrindex(_) => (ValueType::Empty, Cow::Borrowed("")),
    }
}

/// Formats a float the way Jaeger and Go print it for the common cases: `72.5`, `3`, `NaN`.
pub fn format_double(number: f64) -> String {
    if number.is_nan() {
        "NaN".to_owned()
    } else if number.is_infinite() {
        if number > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        number.to_string()
    }
}

fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::StringValue(text) => serde_json::Value::String(text.clone()),
        Value::BoolValue(flag) => serde_json::Value::Bool(*flag),
        Value::IntValue(number) => serde_json::Value::from(*number),
        Value::DoubleValue(number) => serde_json::Number::from_f64(*number)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| serde_json::Value::String(format_double(*number))),
        Value::BytesValue(bytes) => {
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Value::ArrayValue(array) => serde_json::Value::Array(
            array
                .values
                .iter()
                .map(|item| item.value.as_ref().map_or(serde_json::Value::Null, to_json))
                .collect(),
        ),
        Value::KvlistValue(list) => serde_json::Value::Object(
            list.values
                .iter()
                .map(|pair| {
                    let item = pair
                        .value
                        .as_ref()
                        .and_then(|any| any.value.as_ref())
                        .map_or(serde_json::Value::Null, to_json);
                    (pair.key.clone(), item)
                })
                .collect(),
        ),
        Value::StringValueStrindex(_) => serde_json::Value::Null,
    }
}

/// Parallel key / text / type arrays for one attribute set, reused between spans.
#[derive(Debug, Default)]
pub struct AttributeColumns<'a> {
    /// Attribute keys.
    pub keys: Vec<&'a str>,
    /// Values rendered by [`value_text`].
    pub values: Vec<Cow<'a, str>>,
    /// [`ValueType`] bytes.
    pub types: Vec<u8>,
}

impl<'a> AttributeColumns<'a> {
    /// Empties the columns, keeping their allocations.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
        self.types.clear();
    }

    /// Appends one attribute.
    pub fn push(&mut self, key: &'a str, value_type: ValueType, text: Cow<'a, str>) {
        self.keys.push(key);
        self.values.push(text);
        self.types.push(value_type as u8);
    }

    /// Appends every OTLP attribute of a set.
    pub fn extend_from_otlp(&mut self, attributes: &'a [KeyValue]) {
        for attribute in attributes {
            let (value_type, text) = value_text(attribute.value.as_ref());
            self.push(&attribute.key, value_type, text);
        }
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Converts stored text back into a typed JSON value for APIs (Jaeger tags, UI).
pub fn typed_json(value_type: ValueType, text: &str) -> serde_json::Value {
    match value_type {
        ValueType::Bool => serde_json::Value::Bool(text == "true"),
        ValueType::Int => text
            .parse::<i64>()
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| serde_json::Value::String(text.to_owned())),
        ValueType::Double => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| serde_json::Value::String(text.to_owned())),
        _ => serde_json::Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn check(value: Value, expected_type: ValueType, expected_text: &str) {
        let any = AnyValue { value: Some(value) };
        let (value_type, text) = value_text(Some(&any));
        assert_eq!(value_type, expected_type);
        assert_eq!(text, expected_text);
    }

    #[test]
    fn renders_every_type_as_search_text() {
        check(
            Value::StringValue("same*".into()),
            ValueType::String,
            "same*",
        );
        check(Value::BoolValue(true), ValueType::Bool, "true");
        check(Value::IntValue(123), ValueType::Int, "123");
        check(Value::DoubleValue(72.5), ValueType::Double, "72.5");
        check(Value::DoubleValue(3.0), ValueType::Double, "3");
        check(
            Value::BytesValue(vec![0, 0, 48, 57]),
            ValueType::Bytes,
            "AAAwOQ==",
        );
        check(
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::IntValue(1)),
                }],
            }),
            ValueType::Array,
            "[1]",
        );
        check(
            Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key_strindex: 0,
                    key: "a".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("b".into())),
                    }),
                }],
            }),
            ValueType::Map,
            "{\"a\":\"b\"}",
        );
        let (value_type, text) = value_text(None);
        assert_eq!((value_type, text.as_ref()), (ValueType::Empty, ""));
    }

    #[test]
    fn typed_json_round_trips() {
        assert_eq!(typed_json(ValueType::Int, "123"), serde_json::json!(123));
        assert_eq!(typed_json(ValueType::Bool, "true"), serde_json::json!(true));
        assert_eq!(
            typed_json(ValueType::Double, "72.5"),
            serde_json::json!(72.5)
        );
        assert_eq!(
            typed_json(ValueType::Bytes, "AAAwOQ=="),
            serde_json::json!("AAAwOQ==")
        );
    }
}
