"""The broker connection uses pika's private parts: they are those of the release it was
tested against, which pyproject.toml pins."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.select_connection import SelectConnection
from pika.adapters.utils.io_services_utils import _AsyncTransportBase
from pika.connection import Connection

from shared.messaging import PIKA_VERSION

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_installed_pika_is_the_release_the_broker_code_was_tested_against() -> None:
    assert pika.__version__ == PIKA_VERSION, (
        f"pika {pika.__version__} is installed, but shared/messaging.py uses pika's private "
        f"parts (_FrameReader, _impl_class, _impl, _flush_output, _MAX_RECV_BYTES) as pika "
        f"{PIKA_VERSION} has them. Install pika=={PIKA_VERSION}, or review those parts against "
        f"pika {pika.__version__}'s source, run tests/unit/test_messaging_frames.py and "
        "tests/integration/test_broker.py, then move PIKA_VERSION and the pin in pyproject.toml"
    )


def test_pyproject_pins_that_release() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [d.split(";")[0].replace(" ", "") for d in dependencies if d.startswith("pika")]
    assert pins == [f"pika=={PIKA_VERSION}"], (
        f"pyproject.toml asks for {pins}; shared/messaging.py was tested with pika {PIKA_VERSION}"
    )


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (_AsyncTransportBase, "_MAX_RECV_BYTES"),
        (Connection, "_on_data_available"),
        (Connection, "_process_frame"),
        (SelectConnection, "_adapter_emit_data"),
        (SelectConnection, "_adapter_call_later"),
        (SelectConnection, "_adapter_remove_timeout"),
        (BlockingChannel, "_flush_output"),
    ],
)
def test_the_private_parts_used_are_there(owner: type, name: str) -> None:
    assert hasattr(owner, name), f"pika {pika.__version__}: {owner.__name__}.{name} is gone"


def test_blocking_connection_still_takes_a_connection_class() -> None:
    parameters = inspect.signature(BlockingConnection.__init__).parameters
    assert "_impl_class" in parameters, f"pika {pika.__version__}: no _impl_class"
