"""A web dashboard: live request analytics and pipeline health in the browser.

Run it against a node::

    datalogger dashboard --config datalogger.toml        # http://127.0.0.1:8050/

or mount it in your own ASGI application, under a path of its own::

    from starlette.routing import Mount
    import datalogger.dashboard

    dl = datalogger.start("datalogger.toml")
    routes = [..., Mount("/admin/datalogger", app=datalogger.dashboard.app(dl))]

The page shows requests per second and p50/p95/p99 latency over time, status
classes, top paths, devices and referers (the numbers of ``datalogger analytics``
for the same window), and per topic and destination the counters of ``stats()``
with a red row wherever ``datalogger health`` would fail. It is read-only unless
``allow_actions`` is given. It needs the ``dashboard`` extra
(``pip install 'datalogger[dashboard]'``): Starlette and uvicorn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .core import Dashboard
from .pipeline import pipeline_view, render_narrow

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..config import Config

__all__ = ["Dashboard", "app", "pipeline_view", "render_narrow"]


def app(
    handle: Any,
    *,
    config: Config | None = None,
    window: str | None = None,
    allow_actions: bool = False,
    token: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The dashboard of ``handle``'s node as an ASGI application, to mount or to serve.

    Args:
        handle: a :class:`~datalogger.DataLogger` (from ``start`` or ``connect``).
        config: the node's configuration, when ``handle`` has none (``connect``);
            the history table, the dead letters and the health threshold come from it.
        window: the analytics window the page opens with (``5m``, ``15m``, ``1h``,
            ``6h``, ``1d``, ``1w`` or ``all``; default ``dashboard.window``).
        allow_actions: offer "replay dead letters" and "shut the node down". They
            need the token: ``application.state.dashboard.token``, sent by the page
            in the ``X-Datalogger-Token`` header once typed in.
        token: that token (default: a random one).
        allowed_hosts: ``Host`` header values to accept; None accepts any (leave
            it to the application the dashboard is mounted in).

    Returns:
        A Starlette application; ``application.state.dashboard`` is its
        :class:`Dashboard` (call ``close()`` on it when the application stops).

    Raises:
        ConfigError: the ``dashboard`` extra is not installed, or ``window`` is unknown.
    """
    try:
        from .web import build_app
    except ImportError as exc:
        from ..exceptions import ConfigError

        raise ConfigError(
            f"the dashboard needs Starlette and uvicorn: pip install 'datalogger[dashboard]' ({exc})"
        ) from exc
    dashboard = Dashboard(
        handle, config=config, window=window, allow_actions=allow_actions, token=token
    )
    return build_app(dashboard, allowed_hosts=allowed_hosts, close_on_shutdown=True)
