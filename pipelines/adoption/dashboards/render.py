"""A page as one self-contained HTML document: the Jinja template, the data, the Vega bundle."""

from __future__ import annotations

import functools
import json

import jinja2
import vl_convert
from markupsafe import Markup

from pipelines.adoption.dashboards.data import Window
from pipelines.adoption.dashboards.model import Chart, Page

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("pipelines.adoption.dashboards", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
NO_MARTS = (
    "No data: the adoption marts have no rows for this window. Build them with build_marts "
    "(or materialize the adoption assets) and write the dashboards again."
)


@functools.cache
def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed in one script that sets `window.vegaEmbed`.

    Built once per process: bundling takes over a second and the result is ~900 KB.
    """
    # Inline in a <script>: a closing tag inside would end the element early.
    return vl_convert.javascript_bundle().replace("</script", "<\\/script")


def script_json(value: object) -> str:
    """JSON to put inside a <script>: what could close the element or open a comment escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(name: str, page: Page, window: Window | None, nav: dict[str, str]) -> str:
    """Page `name` (one of `nav`, file name to label) as a complete HTML document."""
    specs = {c.name: c.spec for c in page.cards if isinstance(c, Chart) and c.spec is not None}
    return _TEMPLATES.get_template("page.html").render(
        name=name,
        page=page,
        nav=nav,
        window=window,
        notices=page.notices if window else [NO_MARTS, *page.notices],
        # Both are made safe for a <script> above; HTML escaping would break them.
        specs=Markup(script_json(specs)),
        bundle=Markup(javascript_bundle()),
    )
