"""pprof's profile format: a gzipped `perftools.profiles.Profile` protocol buffer,
read by `go tool pprof`, Pyroscope and Parca.

The message classes are built at run time from a descriptor written below with
the field numbers of pprof's proto/profile.proto (only the messages and fields we
write, plus Mapping for readers that look for it). That needs no protoc and no
generated code to keep in step with the installed protobuf runtime, and
protobuf's own serializer does the wire encoding.

Values: `samples/count` and `cpu/nanoseconds` for a recording; a folded file
has one value per stack, so it gets the one that its unit says. The process
label (the stacks' root frame) becomes a `process` label on each sample, and each
distinct frame name one Function and one Location (no addresses: the stacks are
already symbolised and merged).
"""
from __future__ import annotations

import functools
import gzip
from typing import IO, Dict, List, Tuple

from .. import layers
from ..model import Stacks
from . import python_parts, readable

# message -> [(field, number, type, repeated, message type)]
INT64, UINT64, BOOL, STRING, MESSAGE = "int64", "uint64", "bool", "string", "message"
MESSAGES: Dict[str, List[Tuple[str, int, str, bool, str]]] = {
    "Profile": [
        ("sample_type", 1, MESSAGE, True, "ValueType"),
        ("sample", 2, MESSAGE, True, "Sample"),
        ("mapping", 3, MESSAGE, True, "Mapping"),
        ("location", 4, MESSAGE, True, "Location"),
        ("function", 5, MESSAGE, True, "Function"),
        ("string_table", 6, STRING, True, ""),
        ("drop_frames", 7, INT64, False, ""),
        ("keep_frames", 8, INT64, False, ""),
        ("time_nanos", 9, INT64, False, ""),
        ("duration_nanos", 10, INT64, False, ""),
        ("period_type", 11, MESSAGE, False, "ValueType"),
        ("period", 12, INT64, False, ""),
        ("comment", 13, INT64, True, ""),
        ("default_sample_type", 14, INT64, False, ""),
    ],
    "ValueType": [("type", 1, INT64, False, ""), ("unit", 2, INT64, False, "")],
    "Sample": [
        ("location_id", 1, UINT64, True, ""),
        ("value", 2, INT64, True, ""),
        ("label", 3, MESSAGE, True, "Label"),
    ],
    "Label": [
        ("key", 1, INT64, False, ""),
        ("str", 2, INT64, False, ""),
        ("num", 3, INT64, False, ""),
        ("num_unit", 4, INT64, False, ""),
    ],
    "Mapping": [
        ("id", 1, UINT64, False, ""),
        ("memory_start", 2, UINT64, False, ""),
        ("memory_limit", 3, UINT64, False, ""),
        ("file_offset", 4, UINT64, False, ""),
        ("filename", 5, INT64, False, ""),
        ("build_id", 6, INT64, False, ""),
        ("has_functions", 7, BOOL, False, ""),
        ("has_filenames", 8, BOOL, False, ""),
        ("has_line_numbers", 9, BOOL, False, ""),
        ("has_inline_frames", 10, BOOL, False, ""),
    ],
    "Location": [
        ("id", 1, UINT64, False, ""),
        ("mapping_id", 2, UINT64, False, ""),
        ("address", 3, UINT64, False, ""),
        ("line", 4, MESSAGE, True, "Line"),
        ("is_folded", 5, BOOL, False, ""),
    ],
    "Line": [("function_id", 1, UINT64, False, ""), ("line", 2, INT64, False, "")],
    "Function": [
        ("id", 1, UINT64, False, ""),
        ("name", 2, INT64, False, ""),
        ("system_name", 3, INT64, False, ""),
        ("filename", 4, INT64, False, ""),
        ("start_line", 5, INT64, False, ""),
    ],
}
PACKAGE = "perftools.profiles"


@functools.lru_cache(maxsize=None)
def message_classes() -> Dict[str, type]:
    """{message name: protobuf message class}, built from MESSAGES once."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    types = {INT64: field.TYPE_INT64, UINT64: field.TYPE_UINT64, BOOL: field.TYPE_BOOL,
             STRING: field.TYPE_STRING, MESSAGE: field.TYPE_MESSAGE}
    # proto3: repeated numbers are packed, as pprof's own writer packs them
    source = descriptor_pb2.FileDescriptorProto(name="mixedstack/pprof_profile.proto",
                                                package=PACKAGE, syntax="proto3")
    for message, fields in MESSAGES.items():
        described = source.message_type.add(name=message)
        for name, number, kind, repeated, message_type in fields:
            entry = described.field.add(name=name, number=number, type=types[kind],
                                        label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL)
            if message_type:
                entry.type_name = ".%s.%s" % (PACKAGE, message_type)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(source)
    make = getattr(message_factory, "GetMessageClass", None)
    if make is None:  # protobuf < 4.22
        make = message_factory.MessageFactory(pool).GetPrototype
    return {name: make(pool.FindMessageTypeByName("%s.%s" % (PACKAGE, name))) for name in MESSAGES}


def value_types(stacks: Stacks) -> List[Tuple[str, str]]:
    """The sample values written, in order (pprof shows the last one by default)."""
    types = []
    if stacks.counts is not None or stacks.unit == "samples":
        types.append(("samples", "count"))
    if stacks.unit == "nanoseconds":
        types.append(("cpu", "nanoseconds"))
    elif stacks.unit == "events":  # periods of an event other than cpu-clock
        types.append(("events", "count"))
    return types


def build(stacks: Stacks):
    """The Profile message of `stacks`."""
    classes = message_classes()
    profile = classes["Profile"]()
    strings: Dict[str, int] = {}

    def string(text: str) -> int:
        number = strings.get(text)
        if number is None:
            number = strings[text] = len(strings)
            profile.string_table.append(text)
        return number

    string("")  # index 0 is the empty string, by the format's rule
    types = value_types(stacks)
    for kind, unit in types:
        profile.sample_type.add(type=string(kind), unit=string(unit))
    counts = stacks.counts
    if stacks.unit == "nanoseconds":
        profile.period_type.type, profile.period_type.unit = string("cpu"), string("nanoseconds")
        if counts:  # the mean period: cpu-clock's is the same for every sample
            profile.period = round(sum(stacks.weights.values()) / max(1, sum(counts.values())))
    locations: Dict[Tuple[str, str], int] = {}
    known = stacks.layers or {}
    process_key = string("process")
    for stack in sorted(stacks.weights):
        names = stack.split(";")
        kinds = layers.of_stack(names, known.get(stack, ()))
        path = []
        for name, kind in zip(names[1:], kinds[1:]):
            location = locations.get((name, kind))
            if location is None:
                location = locations[(name, kind)] = len(locations) + 1
                function = profile.function.add(id=location)
                parts = python_parts(name) if kind == layers.PYTHON else None
                if parts:
                    function.name = function.system_name = string(readable(parts[0]))
                    function.filename = string(readable(parts[1]))
                    function.start_line = parts[2]
                else:
                    function.name = function.system_name = string(readable(name))
                profile.location.add(id=location).line.add(function_id=location, line=parts[2] if parts else 0)
            path.append(location)
        values = []
        for kind, _ in types:
            if kind == "samples" and counts is not None:
                values.append(counts.get(stack, 0))
            else:
                values.append(stacks.weights[stack])
        sample = profile.sample.add(location_id=path[::-1], value=values)  # leaf first
        sample.label.add(key=process_key, str=string(readable(names[0])))
    return profile


def render(stacks: Stacks, out: IO[bytes]) -> None:
    """Write `stacks` as a gzipped profile.proto (mtime 0: same stacks, same bytes)."""
    out.write(gzip.compress(build(stacks).SerializeToString(), mtime=0))
