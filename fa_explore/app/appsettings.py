"""The dashboard's own settings (:data:`fa_explore.settings.APP_SETTINGS`), as values.

They belong to the page, not to a run: ``seeds`` says how many runs the dashboard
trains for one config. :class:`AppSettings` holds validated values (read-only, as
a config); :func:`app_settings_from_query` and :meth:`AppSettings.to_query` are
their half of the page link (``?rule=fa&seeds=4``), next to
:meth:`fa_explore.RunConfig.to_query`.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from ..settings import APP_SETTINGS, short_repr

WHERE = "dashboard"  # errors read "dashboard.seeds must be ..."


class AppSettings:
    """Validated dashboard settings: ``AppSettings(seeds=4).seeds``. Unknown names
    and bad values raise ``ValueError`` naming the setting and what is allowed."""

    __slots__ = ("_values",)

    def __init__(self, **values: Any):
        unknown = [k for k in values if k not in APP_SETTINGS]
        if unknown:
            raise ValueError(f"unknown dashboard setting {short_repr(unknown[0])}; allowed: "
                             f"{', '.join(APP_SETTINGS)}")
        checked = {name: setting.coerce(values.get(name, setting.default), where=WHERE)
                   for name, setting in APP_SETTINGS.items()}
        object.__setattr__(self, "_values", checked)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("dashboard settings are read-only; use AppSettings.replace")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AppSettings) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return "AppSettings(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def replace(self, **changes: Any) -> AppSettings:
        return AppSettings(**{**self._values, **changes})

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def to_query(self) -> str:
        """The link's part for these settings: only values that differ from the defaults."""
        items = {name: json.dumps(value) for name, value in self._values.items()
                 if value != APP_SETTINGS[name].default}
        return urllib.parse.urlencode(items)


def app_settings_from_query(query: str | None) -> tuple[AppSettings, list[str]]:
    """The dashboard settings a page link asks for, and one message per bad value
    (left at its default); keys that are not dashboard settings are not looked at."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, raw in urllib.parse.parse_qsl((query or "").lstrip("?"), keep_blank_values=True):
        if name not in APP_SETTINGS:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        try:
            values[name] = APP_SETTINGS[name].coerce(value, where=WHERE)
        except ValueError as exc:
            problems.append(str(exc).replace(f"{WHERE}.", ""))
    return AppSettings(**values), problems


def join_query(*parts: str) -> str:
    """Query strings joined with ``&`` (empty parts left out)."""
    return "&".join(p for p in parts if p)


__all__ = ["AppSettings", "app_settings_from_query", "join_query"]
