"""fa_explore.app.serving without a server: which kernels the culler shuts down.
(tests/browser/test_server.py runs the real server: the _xsrf cookie, culling.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

pytest.importorskip("voila")
from fa_explore.app.serving import ClassroomKernelManager  # noqa: E402


def manager(**kernels):
    km = ClassroomKernelManager(cull_unconnected_timeout=60, cull_idle_timeout=300)
    shut = []

    async def shutdown_kernel(kernel_id, *args, **kwargs):
        shut.append(kernel_id)

    km.shutdown_kernel = shutdown_kernel
    now = datetime.now(UTC)
    for kernel_id, (state, idle_seconds) in kernels.items():
        km._kernels[kernel_id] = SimpleNamespace(
            execution_state=state, last_activity=now - timedelta(seconds=idle_seconds),
            kernel_name="python3", kernel_spec=SimpleNamespace(metadata={}))
        km._kernel_connections[kernel_id] = 0
    return km, shut


def cull(km):
    asyncio.run(km.cull_kernels())


def test_a_kernel_nobody_connected_to_goes_after_cull_unconnected_timeout():
    km, shut = manager(fresh=("idle", 10), fetched=("idle", 61), busy=("busy", 600))
    cull(km)
    assert shut == ["fetched"]


def test_a_kernel_a_page_connected_to_is_culled_only_by_the_idle_timeout():
    km, shut = manager(open_page=("idle", 200), left_page=("idle", 200), gone=("idle", 301))
    for kernel_id in ("open_page", "left_page", "gone"):
        km.notify_connect(kernel_id)
    km.notify_disconnect("left_page")
    km.notify_disconnect("gone")
    cull(km)
    # Still connected: kept. Disconnected for less than cull_idle_timeout: kept.
    assert shut == ["gone"]


def test_no_separate_limit_when_cull_unconnected_timeout_is_zero():
    km, shut = manager(fetched=("idle", 120))
    km.cull_unconnected_timeout = 0
    cull(km)
    assert shut == []


def test_a_message_for_a_closed_page_is_dropped_and_others_are_sent():
    import logging

    from tornado.websocket import WebSocketClosedError

    from fa_explore.app.serving import PageKernelConnection

    sent = []

    def write(message, binary=False):
        if message == "after close":
            raise WebSocketClosedError()
        if message == "broken":
            raise RuntimeError("not a closed page")
        sent.append((message, binary))

    connection = SimpleNamespace(websocket_handler=SimpleNamespace(write_message=write),
                                 log=logging.getLogger("test"), kernel_id="k")
    write_message = PageKernelConnection.write_message.fget(connection)
    write_message(b"reply", binary=True)
    assert write_message("after close") is None  # dropped, no traceback
    assert sent == [(b"reply", True)]
    with pytest.raises(RuntimeError):
        write_message("broken")


def test_a_write_that_fails_as_the_page_closes_is_retrieved_and_dropped(caplog):
    import logging

    from tornado.websocket import WebSocketClosedError

    from fa_explore.app.serving import PageKernelConnection

    async def scenario():
        loop = asyncio.get_running_loop()
        futures = []

        def write(message, binary=False):  # tornado: the write finishes later
            futures.append(loop.create_future())
            return futures[-1]

        log = logging.getLogger("test.page")
        connection = SimpleNamespace(websocket_handler=SimpleNamespace(write_message=write),
                                     log=log, kernel_id="k")
        connection._written = lambda f: PageKernelConnection._written(connection, f)
        write_message = PageKernelConnection.write_message.fget(connection)
        closed, broken = write_message("a"), write_message("b")
        closed.set_exception(WebSocketClosedError())
        broken.set_exception(OSError("disk"))
        await asyncio.sleep(0)  # the done callbacks run
        return futures

    with caplog.at_level(logging.DEBUG, logger="test.page"):
        futures = asyncio.run(scenario())
    # Both failures were retrieved (asyncio would report them as never retrieved).
    assert all(f.done() and f._log_traceback is False for f in futures)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "writing to the page failed" in errors[0].getMessage()


def test_voila_json_names_the_serving_classes():
    import json
    from pathlib import Path

    from jupyter_server.services.kernels.connection.base import BaseKernelWebsocketConnection
    from traitlets.utils.importstring import import_item

    config = json.loads((Path(__file__).resolve().parents[2] / "voila.json").read_text())
    connection = import_item(config["Voila"]["kernel_websocket_connection_class"])
    assert issubclass(connection, BaseKernelWebsocketConnection)


def test_a_kernel_still_starting_is_left_alone_without_an_error():
    from traitlets import HasTraits, Instance, Unicode

    class Starting(HasTraits):  # as ServerKernelManager before its first activity
        execution_state = Unicode("starting")
        last_activity = Instance(datetime)
        kernel_name = "python3"

    km, shut = manager(idle=("idle", 400))
    km._kernels["starting"] = Starting()
    km._kernel_connections["starting"] = 0
    # jupyter-server alone raised TraitError here (its culler logged the traceback).
    asyncio.run(km.cull_kernel_if_idle("starting"))
    cull(km)
    assert shut == ["idle"]
