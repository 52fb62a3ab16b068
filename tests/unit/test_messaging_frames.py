"""The broker connection's frame reader: the frames pika's own reader finds, however the
stream is cut into reads."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame, spec
from pika.adapters.select_connection import SelectConnection
from pika.connection import Connection

from shared.messaging import _FrameReader


def stream(bodies: list[bytes], frame_max: int) -> bytes:
    """Deliveries as RabbitMQ sends them: method, header, body frames of at most frame_max,
    with a heartbeat now and then."""
    out = []
    for n, body in enumerate(bodies, 1):
        deliver = spec.Basic.Deliver("c", n, False, "mi.events", "mail.x")
        props = spec.BasicProperties(
            content_type="message/rfc822", headers={"mailintake-tenant": "t", "n": n}
        )
        out.append(frame.Method(1, deliver).marshal())
        out.append(frame.Header(1, len(body), props).marshal())
        for start in range(0, len(body), frame_max):
            out.append(frame.Body(1, body[start : start + frame_max]).marshal())
        if n % 3 == 0:
            out.append(frame.Heartbeat().marshal())
    return b"".join(out)


def read(connection: Any, reader: Any, data: bytes, cuts: list[int]) -> tuple[list[bytes], int]:
    """The frames `reader` hands on (marshalled again), reading `data` cut at `cuts`."""
    seen: list[bytes] = []
    connection._frame_buffer = b""
    connection.bytes_received = 0
    connection._process_frame = lambda f: seen.append(f.marshal())
    points = [0, *sorted(set(cuts)), len(data)]
    for start, end in itertools.pairwise(points):
        if end > start:
            reader(connection, data[start:end])
    return seen, connection.bytes_received


def both(data: bytes, cuts: list[int]) -> None:
    theirs = read(
        SelectConnection.__new__(SelectConnection), Connection._on_data_available, data, cuts
    )
    ours = read(_FrameReader.__new__(_FrameReader), _FrameReader._on_data_available, data, cuts)
    assert ours == theirs
    assert ours[1] == len(data)


@pytest.mark.parametrize("read_size", [1, 7, 8, 4096, 256 * 1024])
def test_reads_of_any_size_give_pikas_frames(read_size: int) -> None:
    rng = random.Random(read_size)
    bodies = [rng.randbytes(rng.randint(0, 60_000)) for _ in range(12)]
    data = stream(bodies, frame_max=16_384)
    both(data, list(range(read_size, len(data), read_size)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=3000), min_size=1, max_size=6),
    st.integers(8, 2000),
    st.lists(st.integers(0, 20_000), max_size=30),
)
def test_a_stream_cut_anywhere_gives_pikas_frames(
    bodies: list[bytes], frame_max: int, cuts: list[int]
) -> None:
    data = stream(bodies, frame_max)
    both(data, [c for c in cuts if c < len(data)])


def test_a_frame_left_incomplete_waits_for_the_rest() -> None:
    data = stream([b"x" * 100], frame_max=1000)
    connection: Any = _FrameReader.__new__(_FrameReader)
    seen, received = read(connection, _FrameReader._on_data_available, data[:-5], [])
    assert len(seen) == 2 and connection._frame_buffer == data[received:-5]


def test_output_held_goes_out_as_one_buffer_in_order() -> None:
    connection: Any = _FrameReader.__new__(_FrameReader)
    written: list[bytes] = []
    connection._transport = type("T", (), {"write": staticmethod(written.append)})()
    connection._adapter_emit_data(b"a")
    connection.hold_output()
    connection._adapter_emit_data(b"b")
    connection._adapter_emit_data(b"c")
    assert written == [b"a"]
    connection.release_output()
    connection.release_output()  # nothing held: nothing written
    connection._adapter_emit_data(b"d")
    assert written == [b"a", b"bc", b"d"]
