"""Small front-end widgets of the dashboard.

- :class:`CopyLink` shows the page's link with the current settings, copies it, and
  keeps the browser's address bar on it (``history.replaceState``), so a reload or
  a bookmark opens the same settings. Only the browser knows the address the page
  was opened at (a proxy such as Binder's rewrites host and path), so the link is
  assembled there from ``window.location`` and the ``query`` the kernel sends.
- :class:`Downloader` hands bytes from the kernel to the browser as a file
  download (a ``Blob``); nothing is written on the server.
- :class:`Uploader` is a button like the others that sends a file the user picks
  to the kernel (ipywidgets' ``FileUpload`` labels itself "Load run (0)").
- :class:`TooltipShim` puts tooltips (``title``) on the controls' DOM elements,
  which ipywidgets does for sliders only.
- :class:`ExperimentLinks` shows links that preset the dashboard: a click applies
  them in place (no reload); opened in a new tab they are ordinary links.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anywidget
import traitlets

from .controls import CREDENTIAL_QUERY_KEYS, VOILA_QUERY_KEYS

_LINK_ESM = r"""
function render({ model, el }) {
  const row = document.createElement("div");
  row.className = "fx-link-row";
  const input = document.createElement("input");
  input.type = "text";
  input.readOnly = true;
  input.className = "fx-link-text";
  input.setAttribute("aria-label", "link to this dashboard with these settings");
  const button = document.createElement("button");
  button.className = "fx-link-copy";
  button.textContent = "Copy link";
  button.title = "Copy a link that opens the dashboard with these settings";
  row.append(input, button);
  el.append(row);

  // The page's own keys (Voilà's theme, template) stay; the settings follow the kernel.
  // A credential (?token=) stays in the address bar, so a reload still logs in, but
  // never goes into the link shown for copying: it is this user's, not the link's.
  const pageSearch = (query, withPrivate) => {
    const keep = new URLSearchParams();
    const current = new URLSearchParams(window.location.search);
    const keys = model.get("page_keys").concat(withPrivate ? model.get("private_keys") : []);
    for (const key of keys) {
      if (current.has(key)) keep.set(key, current.get(key));
    }
    const kept = keep.toString();
    return [kept, query].filter((part) => part).join("&");
  };
  const link = () => {
    const query = model.get("query");
    if (!model.get("in_voila")) return query ? "?" + query : "(defaults: no query needed)";
    const search = pageSearch(query, false);
    return window.location.origin + window.location.pathname + (search ? "?" + search : "");
  };
  const update = () => {
    input.value = link();
    if (!model.get("in_voila")) return;  // in JupyterLab the address is JupyterLab's
    const search = pageSearch(model.get("query"), true);
    const target = window.location.pathname + (search ? "?" + search : "") + window.location.hash;
    if (target !== window.location.pathname + window.location.search + window.location.hash) {
      try { window.history.replaceState(window.history.state, "", target); } catch (e) { }
    }
  };
  model.on("change:query", update);
  model.on("change:in_voila", update);
  update();

  button.addEventListener("click", async () => {
    input.focus();
    input.select();
    let copied = false;
    try {
      await navigator.clipboard.writeText(input.value);
      copied = true;
    } catch (error) {
      try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
    }
    button.textContent = copied ? "Copied ✓" : "Select + Ctrl-C";
    setTimeout(() => { button.textContent = "Copy link"; }, 1500);
  });
}
export default { render };
"""

_LINK_CSS = r"""
.fx-link-row { display: flex; gap: 4px; width: 100%; }
.fx-link-text { flex: 1; min-width: 0; font-size: 12px; padding: 2px 4px;
  border: 1px solid #c8c8c8; border-radius: 3px; color: #333; background: #fafafa; }
.fx-link-copy { font-size: 12px; padding: 2px 8px; border: 1px solid #c8c8c8;
  border-radius: 3px; background: #f0f0f0; cursor: pointer; }
.fx-link-copy:hover { background: #e4e4e4; }
"""


class CopyLink(anywidget.AnyWidget):
    """Shows ``<page address>?<query>`` and a button copying it; in Voilà the
    address bar follows ``query`` too.

    ``in_voila`` says the page is the dashboard itself (Voilà); inside JupyterLab
    only the query is shown, to append to the dashboard's Voilà address, and the
    address bar is left alone.
    """

    _esm = _LINK_ESM
    _css = _LINK_CSS
    query = traitlets.Unicode("").tag(sync=True)
    in_voila = traitlets.Bool(False).tag(sync=True)
    page_keys = traitlets.List(traitlets.Unicode(), list(VOILA_QUERY_KEYS)).tag(sync=True)
    private_keys = traitlets.List(traitlets.Unicode(), list(CREDENTIAL_QUERY_KEYS)
                                  ).tag(sync=True)


_DOWNLOAD_ESM = r"""
function render({ model, el }) {
  el.style.display = "none";
  const onMessage = (msg, buffers) => {
    if (!msg || msg.type !== "download") return;
    const blob = new Blob(buffers || [], { type: msg.mime || "application/octet-stream" });
    const url = URL.createObjectURL(blob);
    const anchor = document.createElement("a");
    anchor.href = url;
    anchor.download = msg.name || "download";
    anchor.style.display = "none";
    document.body.appendChild(anchor);
    anchor.click();
    anchor.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    model.send({ type: "downloaded", name: msg.name, bytes: blob.size });
  };
  model.on("msg:custom", onMessage);
  return () => model.off("msg:custom", onMessage);
}
export default { render };
"""


class Downloader(anywidget.AnyWidget):
    """Invisible; :meth:`download` makes the browser save ``data`` as ``name``.
    ``on_done(name, size)`` is called when the page reports the download made."""

    _esm = _DOWNLOAD_ESM

    def __init__(self, on_done: Callable[[str, int], None] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.on_done = on_done
        self.on_msg(self._handle)

    def download(self, name: str, data: bytes, mime: str = "application/zip") -> None:
        self.send({"type": "download", "name": name, "mime": mime}, buffers=[data])

    def _handle(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "downloaded" and self.on_done:
            self.on_done(str(content.get("name", "")), int(content.get("bytes", 0) or 0))


_UPLOAD_ESM = r"""
function render({ model, el }) {
  const button = document.createElement("button");
  button.className = "jupyter-widgets jupyter-button widget-button fx-upload-button";
  const input = document.createElement("input");
  input.type = "file";
  input.style.display = "none";
  el.append(button, input);
  const update = () => {
    button.replaceChildren();
    if (model.get("icon")) {
      const icon = document.createElement("i");
      icon.className = "fa fa-" + model.get("icon");
      button.append(icon);
    }
    button.append(document.createTextNode(model.get("description")));
    button.title = model.get("tooltip");
    button.disabled = model.get("disabled");
    input.accept = model.get("accept");
  };
  for (const name of ["description", "icon", "tooltip", "disabled", "accept"]) {
    model.on("change:" + name, update);
  }
  update();
  button.addEventListener("click", () => input.click());
  input.addEventListener("change", async () => {
    const file = input.files && input.files[0];
    if (!file) return;
    const data = await file.arrayBuffer();
    input.value = "";  // the same file can be picked again
    model.send({ type: "file", name: file.name, size: file.size }, undefined, [data]);
  });
}
export default { render };
"""


class Uploader(anywidget.AnyWidget):
    """A button that lets the user pick one file and sends it to the kernel:
    ``on_file(name, data)`` is called with its name and bytes."""

    _esm = _UPLOAD_ESM
    _css = ".fx-upload-button { width: auto; }"  # as wide as its label, like the others
    description = traitlets.Unicode("Upload").tag(sync=True)
    icon = traitlets.Unicode("upload").tag(sync=True)
    tooltip = traitlets.Unicode("").tag(sync=True)
    accept = traitlets.Unicode("").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)

    def __init__(self, on_file: Callable[[str, bytes], None] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.on_file = on_file
        self.on_msg(self._handle)

    def _handle(self, _widget: Any, content: Any, buffers: Any) -> None:
        if (isinstance(content, dict) and content.get("type") == "file" and buffers
                and self.on_file):
            self.on_file(str(content.get("name") or "upload"), bytes(buffers[0]))


_TIPS_ESM = r"""
function render({ model, el }) {
  el.style.display = "none";
  let scheduled = false;
  const apply = () => {
    scheduled = false;
    const root = el.closest(".fx-dashboard") || document;
    const tips = model.get("tips") || {};
    for (const [css, text] of Object.entries(tips)) {
      root.querySelectorAll("." + css).forEach((node) => {
        if (node.title !== text) node.title = text;
        node.querySelectorAll("select, input, textarea, button, label, .widget-label, "
                              + ".widget-readout").forEach((child) => {
          if (child.title !== text) child.title = text;
        });
      });
    }
  };
  const later = () => { if (!scheduled) { scheduled = true; requestAnimationFrame(apply); } };
  model.on("change:tips", later);
  // A number typed into a slider's readout: the slider clamps it to its range
  // without a word, so tell the kernel what was typed first (it widens the range,
  // or says that the value was out of bounds).
  const typed = (event) => {
    if (event.type === "keydown" && event.key !== "Enter") return;
    const readout = event.target.closest && event.target.closest(".widget-readout");
    if (!readout) return;
    const field = readout.closest(".fx-field");
    if (!field) return;
    const css = [...field.classList].find((c) => c.startsWith("fx-") && c !== "fx-field");
    if (css) model.send({ type: "typed", css, text: readout.textContent || "" });
  };
  // Controls re-render (new options, a control shown again): put the titles back.
  // Only the controls and the toolbar are watched, never the plots.
  let observers = [];
  const watch = () => {
    const root = el.closest(".fx-dashboard");
    if (!root) { setTimeout(watch, 200); return; }
    for (const area of root.querySelectorAll(".fx-controls, .fx-toolbar, .fx-panel-head")) {
      const observer = new MutationObserver(later);
      observer.observe(area, { childList: true, subtree: true });
      observers.push(observer);
    }
    const controls = root.querySelector(".fx-controls");
    if (controls) {
      controls.addEventListener("keydown", typed, true);
      controls.addEventListener("blur", typed, true);
      observers.push({ disconnect: () => {
        controls.removeEventListener("keydown", typed, true);
        controls.removeEventListener("blur", typed, true);
      } });
    }
    later();
  };
  setTimeout(watch, 0);
  return () => observers.forEach((o) => o.disconnect());
}
export default { render };
"""


class TooltipShim(anywidget.AnyWidget):
    """Invisible; sets ``title`` on every element with one of ``tips``' CSS classes
    (and on its inputs, selects, labels), inside the dashboard it is part of. It also
    reports what is typed into a slider's readout (``on_typed(css, text)``), which
    the slider itself would clamp to its range silently."""

    _esm = _TIPS_ESM
    tips = traitlets.Dict(traitlets.Unicode()).tag(sync=True)

    def __init__(self, on_typed: Callable[[str, str], None] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.on_typed = on_typed
        self.on_msg(self._handle)

    def _handle(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "typed" and self.on_typed:
            css, text = content.get("css"), content.get("text")
            if isinstance(css, str) and isinstance(text, str) and len(text) < 100:
                self.on_typed(css, text)


_EXPERIMENTS_ESM = r"""
function render({ model, el }) {
  const box = document.createElement("div");
  box.className = "fx-experiments";
  el.appendChild(box);
  const draw = () => {
    box.replaceChildren();
    const label = document.createElement("span");
    label.className = "fx-experiments-label";
    label.textContent = model.get("label");
    box.appendChild(label);
    for (const item of model.get("links")) {
      const anchor = document.createElement("a");
      anchor.className = "fx-experiment";
      anchor.textContent = item.label;
      anchor.title = item.title || "";
      anchor.href = window.location.pathname + "?" + item.query;
      anchor.addEventListener("click", (event) => {
        if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
        event.preventDefault();  // applied in place: no reload, no new kernel
        model.send({ type: "open", query: item.query });
      });
      box.appendChild(anchor);
    }
  };
  model.on("change:links", draw);
  draw();
}
export default { render };
"""

_EXPERIMENTS_CSS = r"""
.fx-experiments { font-size: 13px; display: flex; flex-wrap: wrap; gap: 4px 14px;
  align-items: baseline; }
.fx-experiments-label { color: #555; }
.fx-experiment { color: #0b61a4; text-decoration: none; border-bottom: 1px dotted #0b61a4; }
.fx-experiment:hover { color: #07477a; border-bottom-style: solid; }
"""


class ExperimentLinks(anywidget.AnyWidget):
    """Links (``{"label", "query", "title"}``) that preset the dashboard;
    ``on_open(query)`` is called when one is clicked."""

    _esm = _EXPERIMENTS_ESM
    _css = _EXPERIMENTS_CSS
    label = traitlets.Unicode("").tag(sync=True)
    links = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(self, on_open: Callable[[str], None] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.on_open = on_open
        self.on_msg(self._handle)

    def _handle(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "open" and self.on_open:
            query = content.get("query")
            if isinstance(query, str) and len(query) < 2000:
                self.on_open(query)
