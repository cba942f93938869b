"""Server-side pieces of the dashboard's Voilà app, named in ``voila.json``.

Only the Voilà server process imports this module (it needs jupyter-server); the
kernels and :mod:`fa_explore.app.dashboard` never do.

:class:`PageIdentityProvider`
    Gives the browser jupyter-server's ``_xsrf`` cookie with the page itself. Voilà's
    page shuts its kernel down on ``beforeunload`` with a beacon
    ``POST /voila/api/shutdown/<kernel id>`` carrying that cookie's value as the
    ``_xsrf`` form field, but nothing in a Voilà page ever sets the cookie (the page
    is rendered by the kernel manager, not from a server template that would touch
    ``xsrf_token``). So every beacon was refused (``403 ... '_xsrf' argument
    missing``) and each reload or closed tab left its kernel running. Here the page
    response sets the cookie, and XSRF protection stays on and is checked as usual.

:class:`PageKernelConnection`
    jupyter-server's kernel websocket connection, except that a message for a page
    whose websocket has just closed (a reload, a closed tab) is dropped quietly.
    jupyter-server already does so for its legacy protocol but not for the
    ``v1.kernel.websocket.jupyter.org`` one Voilà's page speaks: there a kernel's
    message arriving between the page's websocket closing and its ZMQ streams
    closing raised ``WebSocketClosedError`` out of the ZMQ callback, and one whose
    write was under way as the page closed failed a future nobody awaited ("Task
    exception was never retrieved"): tracebacks in the server log on reloads.

:class:`ClassroomKernelManager`
    jupyter-server's kernel manager, culling kernels that no browser ever connected to
    (a health check, ``curl``, a crawler) after ``cull_unconnected_timeout`` seconds
    instead of the general ``cull_idle_timeout``. Voilà's kernel pool wraps this
    class; kernels waiting in the pool are never culled, nor kernels still starting
    (jupyter-server's culler logged a traceback for those).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.identity import PasswordIdentityProvider
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError
from traitlets import Float


def _is_page_request(handler: Any) -> bool:
    """A GET for a Voilà page (not a websocket, not an API call or a static file)."""
    from voila.handler import VoilaHandler

    return (handler.request.method == "GET" and isinstance(handler, VoilaHandler)
            and handler.request.headers.get("Upgrade", "").lower() != "websocket")


def _has_activity(kernel: Any) -> bool:
    """Whether a kernel's ``last_activity`` is set (it is not while it starts)."""
    has_value = getattr(kernel, "trait_has_value", None)
    return has_value("last_activity") if has_value else hasattr(kernel, "last_activity")


class PageIdentityProvider(PasswordIdentityProvider):
    """Voilà's default identity provider (token or password, none by default) that
    also sets the ``_xsrf`` cookie on every page response that lacks it, so that the
    page's shutdown beacon passes jupyter-server's XSRF check."""

    async def get_user(self, handler: Any) -> Any:
        user = await ensure_async(super().get_user(handler))
        if user is not None and _is_page_request(handler) and not handler.get_cookie("_xsrf"):
            # Tornado's xsrf_token sets the cookie; it reads current_user, which
            # jupyter-server's prepare() assigns (to this same user) once we return.
            handler.current_user = user
            handler.xsrf_token  # noqa: B018 - read for its side effect
        return user


class PageKernelConnection(ZMQChannelsWebsocketConnection):
    """The kernel websocket connection of jupyter-server that drops, with a debug
    line, a message whose page has gone (``WebSocketClosedError``) instead of
    raising out of the ZMQ callback. Any other error is raised as before."""

    @property
    def write_message(self) -> Any:
        write = self.websocket_handler.write_message

        def write_or_drop(message: Any, binary: bool = False) -> Any:
            try:
                sent = write(message, binary=binary)
            except WebSocketClosedError:
                # The page closed its websocket (reload, closed tab) a moment before
                # the kernel's streams were closed: nobody is left to read it.
                self.log.debug("kernel %s: message for a closed page dropped", self.kernel_id)
                return None
            if hasattr(sent, "add_done_callback"):
                # Closed while the write was under way: tornado's future fails, and
                # jupyter-server never awaits it ("Task exception was never retrieved").
                sent.add_done_callback(self._written)
            return sent

        return write_or_drop

    def _written(self, future: Any) -> None:
        """A write finished: a closed page's failure is retrieved and dropped, any
        other failure logged."""
        if future.cancelled():
            return
        error = future.exception()  # retrieved: asyncio does not report it at exit
        if isinstance(error, (WebSocketClosedError, StreamClosedError)):
            self.log.debug("kernel %s: message for a closed page dropped", self.kernel_id)
        elif error is not None:
            self.log.error("kernel %s: writing to the page failed", self.kernel_id,
                           exc_info=error)


class ClassroomKernelManager(AsyncMappingKernelManager):
    """Culls idle kernels that were never connected to after ``cull_unconnected_timeout``.

    Every other kernel is culled as jupyter-server does (``cull_idle_timeout``,
    ``cull_connected``, ``cull_interval``); the culler runs only when
    ``cull_idle_timeout`` is positive.
    """

    cull_unconnected_timeout = Float(
        60.0, config=True,
        help="""Seconds a kernel that no browser has connected to may stay idle before it
        is shut down (a page fetched by curl or a health check). Its browser connects
        within seconds of the page arriving. 0 or less: no separate limit.""")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._ever_connected: set[str] = set()

    def notify_connect(self, kernel_id: str) -> None:
        self._ever_connected.add(kernel_id)
        super().notify_connect(kernel_id)

    def remove_kernel(self, kernel_id: str) -> Any:
        self._ever_connected.discard(kernel_id)
        return super().remove_kernel(kernel_id)

    def never_connected_idle(self, kernel_id: str) -> float | None:
        """Seconds an idle kernel nobody ever connected to has been idle (else None)."""
        kernel = self._kernels.get(kernel_id)
        if (kernel is None or kernel_id in self._ever_connected
                or getattr(kernel, "execution_state", None) != "idle"
                or not hasattr(kernel, "last_activity")):
            return None
        return (datetime.now(UTC) - kernel.last_activity).total_seconds()

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        kernel = self._kernels.get(kernel_id)
        if kernel is not None and not _has_activity(kernel):
            # Still starting: jupyter-server's check would read the unset
            # last_activity and log a TraitError traceback. Not idle: nothing to do.
            return
        idle = self.never_connected_idle(kernel_id)
        if idle is not None and 0 < self.cull_unconnected_timeout < idle:
            self.log.warning("Culling kernel %s: no browser connected to it in %d s "
                             "(a page fetched without a browser)", kernel_id, idle)
            await ensure_async(self.shutdown_kernel(kernel_id))
            return
        await ensure_async(super().cull_kernel_if_idle(kernel_id))
