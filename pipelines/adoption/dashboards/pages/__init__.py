"""The pages, one module each: `LABEL` (its name in the navigation) and `build(marts) -> Page`."""

from types import ModuleType

from pipelines.adoption.dashboards.pages import (
    cohorts,
    funnel,
    geography,
    merchants,
    overview,
    risk,
)

# By file name (`<name>.html`), in navigation order.
PAGE_MODULES: dict[str, ModuleType] = {
    "overview": overview,
    "geography": geography,
    "merchants": merchants,
    "cohorts": cohorts,
    "funnel": funnel,
    "risk": risk,
}
PAGES = {name: module.LABEL for name, module in PAGE_MODULES.items()}
