"""Dashboard controls generated from the settings schema, one :class:`Field` per setting.

Each :class:`~fa_explore.settings.Setting` declares its kind, bounds, slider range
(``ui_minimum``/``ui_maximum``), control kind, whether it is optional and what
None means, help text and where it applies; :func:`make_field` builds the widget
from that alone, so a setting added to the schema appears as a control. Only the
choices of a few dropdowns come from elsewhere (the rules, datasets, models and
devices registered; :func:`fa_explore.app.controls.dropdown_choices`), and the
hidden widths are a depth slider and a width box.

A dashboard setting (:data:`fa_explore.settings.APP_SETTINGS`) gets its field the
same way and shows an :class:`~fa_explore.app.appsettings.AppSettings` instead of a
config. A field shows a config (:meth:`Field.show`), turns what the user did into config
changes (``on_change(changes, what)``), and says when it had to clamp a value to
the setting's hard bounds (the note goes to the status line).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..config import RunConfig
from ..settings import Setting
from .appsettings import AppSettings
from .controls import (
    DEFAULT_CHOICE,
    clamp_to_bounds,
    dropdown_choices,
    help_text,
    log_base,
    log_exponents,
    parse_ints,
    parse_number,
    shown_value,
    slider_step,
    ui_range,
)

DESCRIPTION_WIDTH = "92px"
CONTROL_WIDTH = "318px"
# CSS classes the page and its tests know some controls by (fx-<name> for the rest).
CSS_NAMES = {"feedback_sparsity": "fx-sparsity", "batch_size": "fx-batch",
             "expansion_ratio": "fx-expansion", "init_angle": "fx-angle"}
# on_change(field, value, note): the user set ``value`` (None: the default); ``note``
# says when it was clamped to the setting's bounds.
ChangeHandler = Callable[["Field", Any, str], None]


def css_name(name: str) -> str:
    return CSS_NAMES.get(name, "fx-" + name.replace("_", "-"))


def _style() -> dict[str, str]:
    return {"description_width": DESCRIPTION_WIDTH}


def _layout(width: str = CONTROL_WIDTH) -> widgets.Layout:
    return widgets.Layout(width=width)


def _hint() -> widgets.HTML:
    hint = widgets.HTML("")
    hint.add_class("fx-hint")
    return hint


class Field:
    """One setting's control: ``box`` (what the page shows), ``main`` (the value
    widget), ``hint`` (a reason or note under it). ``option_of`` names the rule
    whose option this is (its changes go into ``rule_options``)."""

    def __init__(self, setting: Setting, on_change: ChangeHandler,
                 syncing: Callable[[], bool], option_of: str | None = None):
        self.setting, self.name = setting, setting.name
        self.option_of = option_of
        self.on_change, self.syncing = on_change, syncing
        # on_error(field, error): what the user typed cannot be used (set by the owner).
        self.on_error: Callable[[Field, ValueError], None] | None = None
        self.hint = _hint()
        self.main: widgets.Widget = self._build()
        self.main.add_class(self.css)
        self.main.add_class("fx-field")
        self.tooltip = help_text(setting)
        self.box = widgets.VBox([*self._row(), self.hint])
        self.box.add_class("fx-field-box")
        self.box.add_class(self.css + "-box")

    @property
    def css(self) -> str:
        return ("fx-option-" + self.name.replace("_", "-")) if self.option_of else css_name(
            self.name)

    # ----------------------------------------------------------- to override
    def _build(self) -> widgets.Widget:
        raise NotImplementedError

    def _row(self) -> list[widgets.Widget]:
        return [self.main]

    def value_of(self, config: RunConfig | AppSettings) -> Any:
        if self.option_of:
            return config.rule_option(self.name)
        if isinstance(config, AppSettings):  # a dashboard setting: no rule defaults
            return getattr(config, self.name)
        return shown_value(config, self.name)

    def raw_of(self, config: RunConfig | AppSettings) -> Any:
        """The config's own value (None where it means a default)."""
        if self.option_of:
            return config.rule_options.get(self.name)
        return getattr(config, self.name)

    def show(self, config: RunConfig) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------- helpers
    def changes(self, value: Any, config: RunConfig) -> dict[str, Any]:
        """The config changes that setting this field to ``value`` means."""
        if self.option_of:
            options = dict(config.rule_options)
            if value is None:
                options.pop(self.name, None)
            else:
                options[self.name] = value
            return {"rule_options": options}
        return {self.name: value}

    def _emit(self, value: Any, note: str = "") -> None:
        self.on_change(self, value, note)

    def _observe(self, widget: widgets.Widget, handler: Callable[[Any], None]) -> None:
        def observer(change: dict) -> None:
            if self.syncing():
                return
            try:
                handler(change["new"])
            except ValueError as exc:
                if self.on_error is None:
                    raise
                self.on_error(self, exc)

        widget.observe(observer, names="value")

    def set_state(self, shown: bool, reason: str | None, note: str = "") -> None:
        """Show or hide the control; disabled with ``reason`` where it does not apply."""
        self.box.layout.display = None if shown else "none"
        self._disable(reason is not None)
        self.hint.value = html.escape(reason or note or "")

    def _disable(self, disabled: bool) -> None:
        self.main.disabled = disabled


class DropdownField(Field):
    def _build(self) -> widgets.Widget:
        dropdown = widgets.Dropdown(options=[], description=self.setting.label,
                                    style=_style(), layout=_layout())
        self._observe(dropdown, lambda v: self._emit(None if v == DEFAULT_CHOICE else v))
        return dropdown

    def show(self, config: RunConfig) -> None:
        options = dropdown_choices(config, self.name, option_of=self.option_of)
        raw = self.raw_of(config)
        values = [v for _, v in options]
        value = DEFAULT_CHOICE if raw is None and DEFAULT_CHOICE in values else (
            raw if raw in values else values[0] if values else None)
        if list(self.main.options) != options:
            self.main.options = options
        self.main.value = value


class CheckboxField(Field):
    def _build(self) -> widgets.Widget:
        box = widgets.Checkbox(description=self.setting.label, indent=False,
                               layout=_layout())
        self._observe(box, lambda v: self._emit(bool(v)))
        return box

    def show(self, config: RunConfig) -> None:
        self.main.value = bool(self.value_of(config))


class NumberField(Field):
    """A number box: an integer or float box for required settings, a text box for
    optional ones (empty means the setting's ``none_means``). Values outside the
    hard bounds are clamped, and the note says so."""

    def _build(self) -> widgets.Widget:
        s = self.setting
        if s.optional:
            box = widgets.Text(description=s.label, style=_style(), layout=_layout(),
                               placeholder=s.none_means or "default", continuous_update=False)
            self._observe(box, self._typed)
        else:
            kind = widgets.IntText if s.kind == "int" else widgets.FloatText
            box = kind(description=s.label, style=_style(), layout=_layout())
            self._observe(box, self._number)
        return box

    def _typed(self, text: str) -> None:
        value = parse_number(self.setting, text)
        self._number(value)

    def _number(self, value: Any) -> None:
        if value is None:
            self._emit(None)
            return
        clamped, note = clamp_to_bounds(self.setting, value)
        self._emit(clamped, note)

    def show(self, config: RunConfig) -> None:
        value = self.value_of(config) if not self.setting.optional else self.raw_of(config)
        if self.setting.optional:
            self.main.value = "" if value is None else _number_text(value)
        else:
            self.main.value = value


def _number_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class _TypedMixin:
    """Sliders: what was typed into the readout (reported by the page before the
    slider clamps it) wins over the clamped value that follows."""

    typed: Any = None

    def take_typed(self, text: str) -> None:
        try:
            self.typed = parse_number(self.setting, text)
        except ValueError:
            self.typed = None

    def _typed_or(self, value: Any) -> tuple[Any, str]:
        typed, self.typed = self.typed, None
        if typed is None:
            return value, ""
        low, high = self.main.min, self.main.max
        if self.setting.control == "log_slider":
            base = self.main.base
            low, high = base ** low, base ** high
        fitted = min(max(typed, low), high)
        if not math.isclose(fitted, value, rel_tol=1e-6, abs_tol=1e-12):
            return value, ""  # the typed value was not what this change is about
        return clamp_to_bounds(self.setting, typed)


class SliderField(_TypedMixin, Field):
    """A slider over the declared UI range, widened to show a value from a link or
    the API that lies outside it. An optional setting gets a checkbox for its
    default (``none_means``) beside it."""

    def _build(self) -> widgets.Widget:
        s = self.setting
        low, high = ui_range(s)
        kind = widgets.IntSlider if s.kind == "int" else widgets.FloatSlider
        slider = kind(min=low, max=high, step=slider_step(s, low, high),
                      description=s.label, style=_style(), layout=_layout(),
                      continuous_update=False,
                      readout_format="d" if s.kind == "int" else (
                          ".0f" if s.unit == "degrees" else ".2f"))
        self._observe(slider, self._moved)
        self.default_box = None
        if s.optional and not s.rule_default:  # the rule's defaults have their own button
            text = (s.none_means or "default")
            self.default_box = widgets.Checkbox(description=text[0].upper() + text[1:],
                                                indent=False, layout=_layout())
            self.default_box.add_class(self.css + "-default")
            self._observe(self.default_box,
                          lambda v: self._emit(None if v else self._slider_value()))
        return slider

    def _moved(self, value: Any) -> None:
        value, note = self._typed_or(value)
        self._emit(value if self.setting.kind == "int" else float(f"{value:.6g}"), note)

    def _slider_value(self) -> Any:
        value = self.main.value
        return value if self.setting.kind == "int" else float(f"{value:.6g}")

    def _row(self) -> list[widgets.Widget]:
        return [self.default_box, self.main] if self.default_box is not None else [self.main]

    def show(self, config: RunConfig) -> None:
        value = self.value_of(config)
        low, high = ui_range(self.setting, value)
        # Range first: a slider clamps a value outside its range without a word.
        if low < self.main.min:
            self.main.min = low
        if high > self.main.max:
            self.main.max = high
        if value is not None:
            self.main.value = value
        if self.default_box is not None:
            self.default_box.value = self.raw_of(config) is None

    def _disable(self, disabled: bool) -> None:
        if self.default_box is not None:
            self.default_box.disabled = disabled
            self.main.disabled = disabled or bool(self.default_box.value)
        else:
            self.main.disabled = disabled


class LogSliderField(_TypedMixin, Field):
    """A log-scale slider (powers of two for integers, such as the batch size)."""

    def _build(self) -> widgets.Widget:
        s = self.setting
        low, high = log_exponents(s)
        base = log_base(s)
        slider = widgets.FloatLogSlider(
            min=low, max=high, step=1 if base == 2 else 0.1, base=base,
            description=s.label, style=_style(), layout=_layout(), continuous_update=False,
            readout_format=".0f" if s.kind == "int" else ".2e")
        self._observe(slider, self._moved)
        return slider

    def _moved(self, value: float) -> None:
        value, note = self._typed_or(value)
        if self.setting.kind == "int":
            self._emit(max(1, int(round(value))), note)
        else:
            self._emit(float(f"{value:.3g}"), note)

    def show(self, config: RunConfig) -> None:
        value = self.value_of(config)
        if value is None:
            return
        low, high = log_exponents(self.setting, value)
        if low < self.main.min:
            self.main.min = low
        if high > self.main.max:
            self.main.max = high
        self.main.value = value


class ListField(Field):
    """A list of integers (convolution widths, milestones) as ``16, 32``."""

    def _build(self) -> widgets.Widget:
        box = widgets.Text(description=self.setting.label, style=_style(), layout=_layout(),
                           placeholder="none", continuous_update=False)
        self._observe(box, lambda text: self._emit(parse_ints(self.setting, text)))
        return box

    def show(self, config: RunConfig) -> None:
        self.main.value = ", ".join(str(v) for v in self.value_of(config))


class TextField(Field):
    def _build(self) -> widgets.Widget:
        box = widgets.Text(description=self.setting.label, style=_style(), layout=_layout(),
                           continuous_update=False)
        self._observe(box, lambda text: self._emit(text or None))
        return box

    def show(self, config: RunConfig) -> None:
        value = self.value_of(config)
        self.main.value = "" if value is None else str(value)


class WidthsField(Field):
    """The hidden widths as a depth slider and one width for every layer (a link's
    uneven widths are shown, and kept until depth or width changes)."""

    def _build(self) -> widgets.Widget:
        s = self.setting
        self.depth = widgets.IntSlider(min=0, max=min(8, s.max_items or 8), description="depth",
                                       style=_style(), layout=_layout(),
                                       continuous_update=False)
        self.depth.add_class("fx-depth")
        self.depth.add_class("fx-field")
        width = widgets.IntText(description="width", style=_style(), layout=_layout())
        width.add_class("fx-width")
        self._observe(self.depth, lambda d: self._emit((self._width(),) * d))
        self._observe(width, self._typed_width)
        self.width = width
        return width

    @property
    def css(self) -> str:
        return "fx-hidden"

    def _width(self) -> int:
        value, _ = clamp_to_bounds(self.setting, self.width.value, "width")
        return int(value)

    def _typed_width(self, value: int) -> None:
        clamped, note = clamp_to_bounds(self.setting, value, "width")
        self._emit((int(clamped),) * max(1, self.depth.value), note)

    def _row(self) -> list[widgets.Widget]:
        return [self.depth, self.main]

    def show(self, config: RunConfig) -> None:
        hidden = self.value_of(config)
        if len(hidden) > self.depth.max:
            self.depth.max = len(hidden)
        self.depth.value = len(hidden)
        if hidden:
            self.width.value = hidden[0]
        self.hint.value = ("" if len(set(hidden)) <= 1 else html.escape(
            f"hidden layers from the link: {', '.join(map(str, hidden))}; changing depth or "
            "width makes them all equal"))

    def set_state(self, shown: bool, reason: str | None, note: str = "") -> None:
        self.box.layout.display = None if shown else "none"
        self.depth.disabled = self.width.disabled = reason is not None
        if reason or note:
            self.hint.value = html.escape(reason or note)


FIELD_KINDS: dict[str, type[Field]] = {
    "dropdown": DropdownField, "checkbox": CheckboxField, "number": NumberField,
    "slider": SliderField, "log_slider": LogSliderField, "text": TextField,
}


def make_field(setting: Setting, on_change: ChangeHandler, syncing: Callable[[], bool],
               option_of: str | None = None) -> Field | None:
    """The control for a setting, from its declaration (None for kinds without one:
    the rule options mapping, which gets a field per option instead)."""
    if setting.kind == "options":
        return None
    if setting.control == "widths":
        if setting.name == "hidden":
            return WidthsField(setting, on_change, syncing, option_of)
        return ListField(setting, on_change, syncing, option_of)
    if setting.control == "dropdown" or setting.allowed_choices() is not None:
        return DropdownField(setting, on_change, syncing, option_of)
    if setting.kind == "bool":
        return CheckboxField(setting, on_change, syncing, option_of)
    if setting.kind == "str":
        return TextField(setting, on_change, syncing, option_of)
    cls = FIELD_KINDS.get(setting.control, NumberField)
    if cls in (SliderField, LogSliderField) and setting.kind not in ("int", "float"):
        cls = NumberField
    return cls(setting, on_change, syncing, option_of)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
