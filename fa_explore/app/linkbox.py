"""A tiny front-end widget that shows the page's link with the current settings
and copies it to the clipboard.

Only the browser knows the address the page was opened at (a proxy such as
Binder's rewrites host and path), so the link is assembled there from
``window.location`` and the ``query`` the kernel sends.
"""

from __future__ import annotations

import anywidget
import traitlets

_ESM = r"""
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

  const link = () => {
    const query = model.get("query");
    const suffix = query ? "?" + query : "";
    if (!model.get("in_voila")) return suffix || "(defaults: no query needed)";
    return window.location.origin + window.location.pathname + suffix;
  };
  const update = () => { input.value = link(); };
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

_CSS = r"""
.fx-link-row { display: flex; gap: 4px; width: 100%; }
.fx-link-text { flex: 1; min-width: 0; font-size: 12px; padding: 2px 4px;
  border: 1px solid #c8c8c8; border-radius: 3px; color: #333; background: #fafafa; }
.fx-link-copy { font-size: 12px; padding: 2px 8px; border: 1px solid #c8c8c8;
  border-radius: 3px; background: #f0f0f0; cursor: pointer; }
.fx-link-copy:hover { background: #e4e4e4; }
"""


class CopyLink(anywidget.AnyWidget):
    """Shows ``<page address>?<query>`` and a button copying it.

    ``in_voila`` says the page is the dashboard itself (Voilà); inside JupyterLab
    only the query is shown, to append to the dashboard's Voilà address.
    """

    _esm = _ESM
    _css = _CSS
    query = traitlets.Unicode("").tag(sync=True)
    in_voila = traitlets.Bool(False).tag(sync=True)
