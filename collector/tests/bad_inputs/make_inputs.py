#!/usr/bin/env python3
"""Writes the bad-input corpus that tests/bad_inputs.rs feeds to the decoders.

Run from anywhere: `python3 collector/tests/bad_inputs/make_inputs.py`. It rewrites the
files it makes and leaves others (fuzzer finds, hand-written files) alone; every file,
made here or not, needs its line in its folder's `expected.txt`.
Protobuf is encoded by hand, so each file says exactly which bytes are wrong.
"""

import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent

# A start inside the accepted range (2023-11-14T22:13:20Z), in nanoseconds.
START_NS = 1_700_000_000_000_000_000
TRACE_ID = bytes(range(1, 17))
SPAN_ID = bytes(range(1, 9))
U64_MAX = 2**64 - 1


# --- protobuf, by hand ---------------------------------------------------------------

def varint(number):
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field, wire_type):
    return varint(field << 3 | wire_type)


def length_delimited(field, payload):
    return key(field, 2) + varint(len(payload)) + payload


def uint(field, number):
    return key(field, 0) + varint(number)


def fixed64(field, number):
    return key(field, 1) + struct.pack("<Q", number)


def text(field, value):
    return length_delimited(field, value if isinstance(value, bytes) else value.encode())


def any_string(value):
    return text(1, value)


def key_value(name, any_value):
    return text(1, name) + length_delimited(2, any_value)


def span(trace_id=TRACE_ID, span_id=SPAN_ID, parent=b"", name="op", start=START_NS,
         end=None, attributes=()):
    end = start + 1_000 if end is None else end
    out = text(1, trace_id) + text(2, span_id)
    if parent:
        out += text(4, parent)
    out += text(5, name) + uint(6, 2) + fixed64(7, start) + fixed64(8, end)
    for attribute in attributes:
        out += length_delimited(9, attribute)
    return out


def service_resource(name=b"checkout"):
    """`ResourceSpans.resource`: a Resource holding `service.name`."""
    return length_delimited(1, length_delimited(1, key_value(b"service.name", any_string(name))))


def request(*spans, resource=None):
    """An ExportTraceServiceRequest with one resource and one scope."""
    scope_spans = b"".join(length_delimited(2, one) for one in spans)
    resource_spans = (resource or service_resource()) + length_delimited(2, scope_spans)
    return length_delimited(1, resource_spans)


def nested_array(depth):
    """An AnyValue that is an array holding an array ... `depth` arrays deep."""
    value = any_string(b"leaf")
    for _ in range(depth):
        value = length_delimited(5, length_delimited(1, value))
    return value


def report(*fields):
    return b"".join(fields)


# --- the files -----------------------------------------------------------------------

def otlp_protobuf():
    good = request(span())
    invalid_utf8 = request(span(
        name=b"op\xff",
        attributes=[
            key_value(b"k\xc3", any_string(b"v")),
            key_value(b"k", any_string(b"\xed\xa0\x80 surrogate")),
        ],
    ), resource=service_resource(b"\xfe\xfe"))
    return {
        "ok_empty.pb": b"",
        "ok_valid_span.pb": good,
        "err_truncated.pb": good[: len(good) // 2],
        "err_truncated_fixed64.pb": length_delimited(1, length_delimited(
            2, length_delimited(2, text(1, TRACE_ID) + key(7, 1) + b"\x01\x02\x03\x04"))),
        "err_wrong_wire_type.pb": uint(1, 1),
        "err_wrong_wire_type_in_span.pb": request(text(7, b"not a fixed64")),
        "err_huge_declared_length.pb": key(1, 2) + varint(2**62) + b"\x0a\x00",
        "err_length_past_end_of_message.pb": length_delimited(
            1, key(2, 2) + varint(1000) + b"\x00"),
        "err_overlong_varint.pb": key(1, 2) + b"\xff" * 10 + b"\x01",
        "err_field_number_zero.pb": b"\x00\x01",
        "err_wire_type_7.pb": b"\x0f\x00",
        "err_unterminated_group.pb": key(99, 3) + uint(1, 1),
        # prost's recursion limit: 47 arrays is the deepest it reads, 48 one too deep.
        "err_deep_nesting.pb": request(span(attributes=[key_value(b"deep", nested_array(48))])),
        "ok_nesting_within_limit.pb": request(
            span(attributes=[key_value(b"deep", nested_array(47))])),
        "ok_invalid_utf8_strings.pb": invalid_utf8,
        "ok_unknown_fields.pb": uint(50, 7) + fixed64(51, 1) + text(52, b"x")
        + key(53, 5) + b"\x00\x00\x00\x00" + key(54, 3) + uint(1, 1) + key(54, 4) + good,
        "ok_wrong_length_ids.pb": request(
            span(trace_id=TRACE_ID[:15]),
            span(trace_id=bytes(16)),
            span(span_id=SPAN_ID + b"\x09"),
            span(span_id=b""),
            span(parent=b"\x01\x02\x03"),
            span(parent=bytes(8)),
            span(),
        ),
        "ok_absurd_timestamps.pb": request(
            span(start=0, end=0),
            span(start=U64_MAX, end=U64_MAX),
            span(start=START_NS, end=0),
            span(start=START_NS, end=U64_MAX),
        ),
        # `AnyValue.string_value_strindex` (tag 8) is for profiles only: skipped as unknown.
        "ok_string_value_strindex.pb": request(span(attributes=[
            key_value(b"ref", uint(8, 123)),
            key_value(b"both", any_string(b"text") + uint(8, 123)),
        ])),
        "ok_repeated_scalar_fields.pb": request(span() + fixed64(7, START_NS + 1) + text(5, "again")),
    }


def otlp_json():
    def body(*spans, service="checkout"):
        return {"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": list(spans)}],
        }]}

    def json_span(**fields):
        value = {
            "traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "op", "kind": 2,
            "startTimeUnixNano": str(START_NS), "endTimeUnixNano": str(START_NS + 1_000),
        }
        value.update(fields)
        return {name: field for name, field in value.items() if field is not None}

    def dump(value):
        return json.dumps(value).encode()

    def nested(depth):
        value = {"stringValue": "leaf"}
        for _ in range(depth):
            value = {"arrayValue": {"values": [value]}}
        return value

    # serde_json's recursion limit (128): 39 arrays is the deepest it reads, 40 one too deep.
    deep = dump(body(json_span(attributes=[{"key": "deep", "value": nested(40)}])))
    return {
        "err_empty.json": b"",
        "err_not_json.json": b"hello",
        "err_null.json": b"null",
        # serde reads a struct from a list of its fields in order, so this decodes.
        "ok_top_level_array.json": b"[]",
        "err_trailing_garbage.json": dump(body(json_span())) + b"x",
        "err_truncated.json": dump(body(json_span()))[:60],
        "ok_empty_object.json": b"{}",
        "ok_valid_span.json": dump(body(json_span())),
        "err_deep_nesting.json": deep,
        # serde_json skips an unknown value without recursing, so depth does not matter.
        "ok_deep_unknown_field.json": b'{"extra":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        "ok_nesting_within_limit.json": dump(body(json_span(
            attributes=[{"key": "deep", "value": nested(39)}]))),
        "ok_invalid_utf8_in_string.json": dump(body(json_span(name="op-NAME"))).replace(
            b"op-NAME", b"op\xff\xfe"),
        "err_lone_surrogate_escape.json": dump(body(json_span(name="op-NAME"))).replace(
            b"op-NAME", b"\\ud800"),
        "ok_non_hex_trace_id.json": dump(body(json_span(traceId="zz" * 16))),
        "ok_odd_length_span_id.json": dump(body(json_span(spanId="abc"))),
        "ok_wrong_length_ids.json": dump(body(
            json_span(traceId="0102"),
            json_span(traceId="00" * 16),
            json_span(spanId="01" * 9),
            json_span(spanId=""),
            json_span(parentSpanId="010203"),
            json_span(traceId=None),
            json_span(),
        )),
        "ok_numbers_as_strings.json": dump(body(json_span(
            attributes=[{"key": "n", "value": {"intValue": "42"}}]))),
        "ok_strings_as_numbers.json": dump(body(json_span(
            startTimeUnixNano=START_NS, endTimeUnixNano=START_NS + 1,
            attributes=[{"key": "n", "value": {"intValue": 42}}]))),
        "ok_negative_timestamp.json": dump(body(json_span(startTimeUnixNano=-1))),
        "ok_timestamp_overflow.json": dump(body(json_span(
            startTimeUnixNano="18446744073709551616"))),
        "ok_float_timestamp.json": dump(body(json_span(startTimeUnixNano=1.7e18))),
        "ok_timestamp_not_a_number.json": dump(body(json_span(startTimeUnixNano="soon"))),
        "ok_int_value_not_a_number.json": dump(body(json_span(
            attributes=[{"key": "n", "value": {"intValue": "forty-two"}}]))),
        "ok_kind_as_string.json": dump(body(json_span(kind="SPAN_KIND_SERVER"))),
        "ok_bad_base64_bytes_value.json": dump(body(json_span(
            attributes=[{"key": "b", "value": {"bytesValue": "not base64!"}}]))),
        "ok_spans_not_a_list.json": dump({"resourceSpans": [{"scopeSpans": [{"spans": 7}]}]}),
        "ok_absurd_timestamps.json": dump(body(
            json_span(startTimeUnixNano="0", endTimeUnixNano="0"),
            json_span(startTimeUnixNano=str(U64_MAX), endTimeUnixNano=str(U64_MAX)),
            json_span(endTimeUnixNano="0"),
        )),
        "ok_unknown_fields.json": dump({"resourceSpans": [], "extra": {"a": [1, 2]}}),
        "ok_nulls.json": dump(body(json_span(
            attributes=[{"key": "n", "value": {"stringValue": None}}]))),
    }


def zipkin_json():
    start = 1_541_485_537_488_973

    def zipkin_span(**fields):
        value = {"traceId": "1", "id": "1", "name": "op", "timestamp": start, "duration": 10,
                 "localEndpoint": {"serviceName": "front"}}
        value.update(fields)
        return {name: field for name, field in value.items() if field is not None}

    def dump(value):
        return json.dumps(value).encode()

    return {
        "err_empty.json": b"",
        "err_object_not_array.json": dump(zipkin_span()),
        "err_truncated.json": dump([zipkin_span()])[:30],
        "err_deep_nesting.json": b"[" * 10_000,
        "ok_deep_nesting_closed.json": b"[" * 10_000 + b"]" * 10_000,
        "err_invalid_utf8_raw.json": dump([zipkin_span(name="op-NAME")]).replace(
            b"op-NAME", b"op\xff"),
        "ok_empty_array.json": b"[]",
        "ok_valid_span.json": dump([zipkin_span()]),
        "ok_missing_fields.json": dump([{}, {"traceId": "1"}, {"id": "1"}]),
        "ok_not_spans.json": dump([None, 42, "span", [zipkin_span()], True]),
        "ok_wrong_types.json": dump([
            zipkin_span(timestamp="yesterday"),
            zipkin_span(duration=-5),
            zipkin_span(tags={"nested": {"no": 1}}),
            zipkin_span(annotations={"value": "x"}),
            zipkin_span(localEndpoint="front"),
            zipkin_span(traceId=1),
            zipkin_span(),
        ]),
        "ok_numbers_as_strings.json": dump([
            zipkin_span(timestamp=str(start)),
            zipkin_span(tags={"count": 3, "ratio": 0.5, "ok": False, "gone": None}),
        ]),
        "ok_non_hex_ids.json": dump([
            zipkin_span(traceId="xyz"),
            zipkin_span(id="not hex"),
            zipkin_span(parentId="not hex"),
            zipkin_span(traceId="é"),
        ]),
        "ok_wrong_length_ids.json": dump([
            zipkin_span(traceId="1" * 33),
            zipkin_span(id="1" * 17),
            zipkin_span(parentId="1" * 17),
            zipkin_span(traceId="0" * 32),
            zipkin_span(id=""),
        ]),
        "ok_absurd_timestamps.json": dump([
            zipkin_span(timestamp=0),
            zipkin_span(timestamp=U64_MAX, duration=U64_MAX),
            zipkin_span(timestamp=-1),
            zipkin_span(timestamp=1e30),
            zipkin_span(duration=U64_MAX),
        ]),
        "ok_lone_surrogate_escape.json": dump([zipkin_span(name="op-NAME"), zipkin_span()])
        .replace(b"op-NAME", b"\\ud800"),
        "ok_huge_port_and_odd_endpoints.json": dump([zipkin_span(
            localEndpoint={"serviceName": "", "port": 2**62, "ipv4": ""},
            remoteEndpoint={"serviceName": None, "port": -1, "ipv6": "::1"},
        )]),
    }


def agent_protocol():
    kept = length_delimited(8, service_resource() + length_delimited(2, length_delimited(
        2, span())))
    # Three calls of 1 ms: counts that add up, so the row is stored.
    def aggregate_of(bucket=1_700_000_000, status=0, errors=0, hist_count=3):
        return length_delimited(5, uint(1, bucket) + text(2, "GET /") + uint(4, status)
                                + uint(5, 3) + uint(6, errors) + uint(7, 3_000_000)
                                + uint(8, 1_000_000) + uint(9, 1_000_000)
                                + length_delimited(10, varint(1_000_000))
                                + length_delimited(11, varint(hist_count)))

    def metric(kind, value):
        return length_delimited(7, uint(1, 1_700_000_000) + text(2, "m") + uint(3, kind)
                                + key(4, 1) + struct.pack("<d", value) + uint(5, 1))

    aggregate = aggregate_of()
    return {
        "ok_empty.pb": b"",
        "ok_report.pb": report(text(1, "checkout"), text(2, "i-1"), uint(4, 7), aggregate, kept),
        "err_truncated.pb": report(text(1, "checkout"), aggregate, kept)[:-5],
        "err_wrong_wire_type.pb": uint(1, 5),
        "err_huge_declared_length.pb": key(5, 2) + varint(2**62),
        "err_invalid_utf8_service.pb": report(text(1, b"check\xffout")),
        "err_invalid_utf8_in_kept_span.pb": length_delimited(8, length_delimited(
            2, length_delimited(2, span(name=b"op\xff")))),
        "err_deep_nesting_in_kept_span.pb": length_delimited(8, length_delimited(
            2, length_delimited(2, span(attributes=[key_value(b"deep", nested_array(48))])))),
        "ok_nesting_within_limit_in_kept_span.pb": length_delimited(8, length_delimited(
            2, length_delimited(2, span(attributes=[key_value(b"deep", nested_array(47))])))),
        "err_packed_length_past_end.pb": length_delimited(5, key(10, 2) + varint(50) + b"\x01"),
        "ok_packed_and_unpacked_histogram.pb": length_delimited(
            5, length_delimited(10, varint(1) + varint(2)) + uint(10, 3) + uint(11, 1)),
        "ok_out_of_range_numbers.pb": report(
            length_delimited(7, text(2, "m") + uint(3, 99) + key(4, 1) + struct.pack("<d", float("nan"))),
            length_delimited(5, uint(3, 2**32 - 1) + uint(4, 2**32 - 1)),
            length_delimited(9, uint(1, U64_MAX)),
        ),
        # One good row of each kind among rows refused one by one.
        "ok_bad_rows_among_good_ones.pb": report(
            text(1, "checkout"),
            aggregate,
            aggregate_of(status=9),
            aggregate_of(bucket=1_700_000_005),
            aggregate_of(errors=4),
            aggregate_of(errors=3),
            aggregate_of(hist_count=2),
            length_delimited(6, uint(1, 1_700_000_000) + text(2, "Cache") + text(3, "hit")
                             + uint(5, 1)),
            length_delimited(6, uint(1, 1_700_000_000) + text(2, "Cache") + text(3, "miss")),
            metric(0, 1.0),
            metric(1, float("nan")),
            metric(2, float("inf")),
            length_delimited(9, uint(1, 1_700_000_000_000)),
        ),
        "ok_kept_spans_with_bad_ids.pb": length_delimited(8, length_delimited(
            2, length_delimited(2, span(trace_id=b"")) + length_delimited(2, span(start=0))
            + length_delimited(2, span()))),
    }


def main():
    for folder, files in [
        ("otlp_protobuf", otlp_protobuf()),
        ("otlp_json", otlp_json()),
        ("zipkin_json", zipkin_json()),
        ("agent_protocol", agent_protocol()),
    ]:
        (HERE / folder).mkdir(exist_ok=True)
        for name, content in files.items():
            (HERE / folder / name).write_bytes(content)


if __name__ == "__main__":
    main()
