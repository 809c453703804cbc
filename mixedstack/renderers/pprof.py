"""pprof's profile format: a gzipped `perftools.profiles.Profile` protocol buffer,
read by `go tool pprof`, Pyroscope and Parca.

The message classes are built at run time (descriptor_pb2) from the messages of
pprof's proto/profile.proto restated below: no protoc at build time and no
generated code to keep in step with the installed protobuf runtime, while
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
import re
from typing import IO, Dict, List, Tuple

from mixedstack.analyze.processors import layers
from mixedstack.model import PyFrame, StackFrame, Stacks, frame_text
from mixedstack.renderers import readable

# The messages of pprof's proto/profile.proto that are written (plus Mapping, which
# readers look for), in protobuf's own notation; `message_classes` reads this.
PROFILE_PROTO = """
message Profile {
  repeated ValueType sample_type = 1;
  repeated Sample sample = 2;
  repeated Mapping mapping = 3;
  repeated Location location = 4;
  repeated Function function = 5;
  repeated string string_table = 6;
  int64 drop_frames = 7;
  int64 keep_frames = 8;
  int64 time_nanos = 9;
  int64 duration_nanos = 10;
  ValueType period_type = 11;
  int64 period = 12;
  repeated int64 comment = 13;
  int64 default_sample_type = 14;
}
message ValueType { int64 type = 1; int64 unit = 2; }
message Sample { repeated uint64 location_id = 1; repeated int64 value = 2; repeated Label label = 3; }
message Label { int64 key = 1; int64 str = 2; int64 num = 3; int64 num_unit = 4; }
message Mapping {
  uint64 id = 1; uint64 memory_start = 2; uint64 memory_limit = 3; uint64 file_offset = 4;
  int64 filename = 5; int64 build_id = 6; bool has_functions = 7; bool has_filenames = 8;
  bool has_line_numbers = 9; bool has_inline_frames = 10;
}
message Location { uint64 id = 1; uint64 mapping_id = 2; uint64 address = 3; repeated Line line = 4; bool is_folded = 5; }
message Line { uint64 function_id = 1; int64 line = 2; }
message Function { uint64 id = 1; int64 name = 2; int64 system_name = 3; int64 filename = 4; int64 start_line = 5; }
"""
MESSAGE = re.compile(r"message (\w+) \{(.*?)\}", re.DOTALL)
FIELD = re.compile(r"(repeated )?(\w+) (\w+) = (\d+);")
PACKAGE = "perftools.profiles"


EXTENSION = ".pb.gz"
ENCODING = None  # bytes: gzipped protobuf


@functools.lru_cache(maxsize=None)
def message_classes() -> Dict[str, type]:
    """{message name: protobuf message class}, built from PROFILE_PROTO once."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    scalars = {"int64": field.TYPE_INT64, "uint64": field.TYPE_UINT64, "bool": field.TYPE_BOOL,
               "string": field.TYPE_STRING}
    # proto3: repeated numbers are packed, as pprof's own writer packs them
    source = descriptor_pb2.FileDescriptorProto(name="mixedstack/pprof_profile.proto",
                                                package=PACKAGE, syntax="proto3")
    for message, body in MESSAGE.findall(PROFILE_PROTO):
        described = source.message_type.add(name=message)
        for repeated, kind, name, number in FIELD.findall(body):
            entry = described.field.add(name=name, number=int(number),
                                        label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL)
            if kind in scalars:
                entry.type = scalars[kind]
            else:
                entry.type, entry.type_name = field.TYPE_MESSAGE, ".%s.%s" % (PACKAGE, kind)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(source)
    make = getattr(message_factory, "GetMessageClass", None)
    if make is None:  # protobuf < 4.22
        make = message_factory.MessageFactory(pool).GetPrototype
    return {name: make(pool.FindMessageTypeByName("%s.%s" % (PACKAGE, name)))
            for name, _ in MESSAGE.findall(PROFILE_PROTO)}


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
    locations: Dict[Tuple[StackFrame, str], int] = {}
    known = stacks.layers or {}
    process_key = string("process")
    texts = stacks.texts()
    for stack in sorted(stacks.weights, key=texts.__getitem__):
        kinds = layers.of_stack(stack, known.get(stack, ()))
        path = []
        for frame, kind in zip(stack[1:], kinds[1:]):
            location = locations.get((frame, kind))
            if location is None:
                location = locations[(frame, kind)] = len(locations) + 1
                function = profile.function.add(id=location)
                line = 0
                if type(frame) is PyFrame and frame.file:
                    function.name = function.system_name = string(readable(frame.function))
                    function.filename = string(readable(frame.file))
                    function.start_line = line = frame.line
                else:
                    function.name = function.system_name = string(readable(frame_text(frame)))
                profile.location.add(id=location).line.add(function_id=location, line=line)
            path.append(location)
        values = []
        for kind, _ in types:
            if kind == "samples" and counts is not None:
                values.append(counts.get(stack, 0))
            else:
                values.append(stacks.weights[stack])
        sample = profile.sample.add(location_id=path[::-1], value=values)  # leaf first
        sample.label.add(key=process_key, str=string(readable(frame_text(stack[0]))))
    return profile


def render(stacks: Stacks, out: IO[bytes]) -> None:
    """Write `stacks` as a gzipped profile.proto (mtime 0: same stacks, same bytes)."""
    out.write(gzip.compress(build(stacks).SerializeToString(), mtime=0))
