"""Adoption dashboards: every page renders its charts in a real browser with no network at all."""

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import duckdb
import markupsafe
import pytest
from playwright.sync_api import sync_playwright

from pipelines.adoption.dashboards import (
    PAGES,
    format_count,
    format_rupees,
    indian_grouping,
    javascript_bundle,
    render_page,
    write_dashboards,
)
from pipelines.adoption.dashboards.data import Window
from pipelines.adoption.dashboards.formatting import count_column, rupee_column
from pipelines.adoption.dashboards.model import Chart, Column, Page, Table, Tile
from pipelines.adoption.marts import (
    AGGREGATE_MARTS,
    MARTS,
    SCHEMA,
    build_marts,
    ensure_schema,
    ledger_days,
)
from pipelines.decisions.scoring import ensure_score_tables, record_decisions
from pipelines.ledger.current import refresh_accounts, refresh_transfers
from pipelines.ledger.ingest import ingest_landing
from pipelines.sandbox.simulator import SimulationConfig, simulate
from pipelines.warehouse import warehouse

START = dt.date(2026, 1, 5)  # a Monday: three complete weeks in 21 days
KEY = b"dashboard-test-key"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.xdist_group("dashboards")


def _score_some(con: duckdb.DuckDBPyConnection) -> None:
    """Decisions for transfers from the second week on: the risk page shows unscored days, then
    friction, and held payers to compare with the rest."""
    ensure_score_tables(con)
    con.execute(
        """INSERT INTO risk.transfer_scores
        SELECT transfer_id, created_at, 'm1', 'p1', false, 0.5,
            CASE WHEN hash(transfer_id) % 1000 < 15 THEN 'HOLD'
                WHEN hash(transfer_id) % 1000 < 20 THEN 'BLOCK' ELSE 'ALLOW' END,
            []::VARCHAR[], created_at + INTERVAL 1 SECOND
        FROM ledger.transfers WHERE created_at >= TIMESTAMPTZ '2026-01-12 00:00:00+05:30'"""
    )
    record_decisions(con)  # the decisions of record, which the marts read


@pytest.fixture(scope="module")
def warehouse_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dash-warehouse")
    simulate(
        SimulationConfig(users=3_000, days=21, start=START, seed=3),
        root / "landing",
        root / "truth",
    )
    path = root / "warehouse.duckdb"
    with warehouse(path) as con:
        ingest_landing(con, root / "landing")
        refresh_transfers(con)
        refresh_accounts(con)
        _score_some(con)
        days = ledger_days(con)
        assert days is not None
        build_marts(con, days.first, days.last, token_key=KEY)
    return path


@pytest.fixture(scope="module")
def pages(warehouse_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dashboards")
    # Read-only: the dashboards must never need to write to the warehouse.
    with warehouse(warehouse_path, read_only=True) as con:
        return write_dashboards(con, out)


@pytest.fixture(scope="module")
def empty_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dash-empty")
    with duckdb.connect(str(root / "empty.duckdb")) as con:
        ensure_schema(con)  # every mart table, with no rows
        return write_dashboards(con, root / "out")


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "chromium not found on PATH: the dashboard tests need Debian's `chromium` package "
            "(apt-get install chromium); `playwright install` is not used"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _open(browser, path: Path, screenshot: Path) -> dict:
    """Load a page with networking off; return what the browser saw."""
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    seen = {"blocked": [], "page_errors": [], "console_errors": [], "console_warnings": []}

    def route(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            seen["blocked"].append(route.request.url)
            route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda error: seen["page_errors"].append(str(error)))
    # Vega reports spec problems (conflicting scales, bad fields) as console warnings.
    page.on(
        "console",
        lambda message: (
            message.type in ("error", "warning")
            and seen[f"console_{message.type}s"].append(message.text)
        ),
    )
    try:
        page.goto(path.as_uri(), wait_until="load")
        page.wait_for_function("document.body.dataset.chartsRendered !== undefined", timeout=30_000)
        seen |= page.evaluate(
            """() => ({
                rendered: Number(document.body.dataset.chartsRendered),
                chartErrors: document.body.dataset.chartErrors,
                charts: Array.from(document.querySelectorAll('.chart')).map(el => {
                    const drawn = el.querySelector('svg, canvas');
                    const box = drawn ? drawn.getBoundingClientRect() : null;
                    return {name: el.dataset.chart, width: box ? box.width : 0,
                            height: box ? box.height : 0,
                            marks: el.querySelectorAll('svg .mark-group, svg path, svg rect').length,
                            axes: Array.from(el.querySelectorAll('g.role-axis')).map(axis =>
                                Array.from(axis.querySelectorAll('.role-axis-label text'))
                                    .map(t => t.textContent)),
                            // Pieces of each line or area drawn: a gap starts a new one ("M").
                            pieces: Array.from(el.querySelectorAll('.mark-line path, .mark-area path'))
                                .map(p => (p.getAttribute('d') || '').split('M').length - 1)};
                }),
                tables: Array.from(document.querySelectorAll('.card table')).map(t => ({
                    columns: Array.from(t.querySelectorAll('th')).map(th => th.textContent),
                    rows: Array.from(t.querySelectorAll('tbody tr')).map(tr =>
                        Array.from(tr.querySelectorAll('td')).map(td => td.textContent)),
                })),
                links: Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href')),
                text: document.body.innerText,
            })"""
        )
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        context.close()
    return seen


def _check_rendered(seen: dict, directory: Path, screenshot: Path) -> None:
    assert seen["blocked"] == [], f"requests that left the disk: {seen['blocked']}"
    assert seen["page_errors"] == []
    assert seen["console_errors"] == []
    assert seen["console_warnings"] == []
    assert seen["chartErrors"] == ""
    assert seen["rendered"] == len(seen["charts"])
    for chart in seen["charts"]:
        assert chart["width"] > 50 and chart["height"] > 50, chart
        assert chart["marks"] > 3, chart
    assert sorted(seen["links"]) == sorted(f"{name}.html" for name in PAGES)
    for link in seen["links"]:
        assert (directory / link).is_file(), link
    data = screenshot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 20_000  # a blank page of this size compresses to a few KB


@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_offline(name: str, pages: dict[str, Path], browser, tmp_path: Path):
    screenshot = tmp_path / f"{name}.png"
    seen = _open(browser, pages[name], screenshot)
    _check_rendered(seen, pages[name].parent, screenshot)
    # Enough data for every chart on every page: none should fall back to a "no data" note.
    assert seen["rendered"] >= 4
    assert "No data" not in seen["text"]
    assert "keyed tokens" in seen["text"]
    assert "Data window: 5 Jan – 26 Jan 2026" in seen["text"]


def test_pages_are_written_for_every_page(pages: dict[str, Path]):
    assert set(pages) == set(PAGES)
    for name, path in pages.items():
        assert path.name == f"{name}.html"
        text = path.read_text()
        # The Vega bundle is inlined exactly once per page, and nothing points off the disk.
        assert text.count("window.vegaEmbed=") == 1
        assert "<script src" not in text and "<link" not in text
        assert "cdn.jsdelivr" not in text and "fonts.googleapis" not in text


def test_pages_show_no_vpas_and_no_tokens(pages: dict[str, Path], warehouse_path: Path):
    with warehouse(warehouse_path, read_only=True) as con:
        vpas = {
            row[0]
            for row in con.sql(
                "SELECT payer_vpa FROM ledger.transfers UNION SELECT payee_vpa FROM ledger.transfers "
                "WHERE payee_type = 'PERSON' UNION SELECT vpa FROM ledger.account_events"
            ).fetchall()
        }
        tokens = {
            row[0] for row in con.sql(f"SELECT payer_token FROM {SCHEMA}.payer_days").fetchall()
        }
    assert len(vpas) > 1_000 and len(tokens) > 1_000
    # The Vega bundle is the same fixed library code on every page and holds no data: leaving
    # it out makes the search of every VPA fast.
    bundle = javascript_bundle()
    for path in pages.values():
        text = path.read_text()
        assert bundle in text
        data = text.replace(bundle, "")
        assert re.findall(r"[\w.-]+@[\w.-]+", data) == [], f"{path.name} shows VPA-like strings"
        leaked = [v for v in vpas if v in data]
        assert leaked == [], f"{path.name} shows VPAs: {leaked[:5]}"
        assert [t for t in tokens if t in data] == [], f"{path.name} shows payer tokens"
        assert re.findall(r"u_[0-9a-f]{16}", data) == [], f"{path.name} shows token-like strings"


def test_overview_compares_the_last_week(pages: dict[str, Path]):
    text = pages["overview"].read_text()
    for tile in ("Transfers", "Value", "Average DAU", "MAU", "Success rate", "Held or blocked"):
        assert f'<div class="label">{tile}</div>' in text
    # Decisions start in the second week, so the held share changes against the week before.
    assert "pp</div>" in text
    assert "₹" in text and (" L<" in text or " Cr<" in text)


def test_as_of_limits_the_window(warehouse_path: Path, tmp_path: Path):
    with warehouse(warehouse_path, read_only=True) as con:
        written = write_dashboards(con, tmp_path, as_of=dt.date(2026, 1, 11))
    text = written["overview"].read_text()
    assert "5 Jan – 11 Jan 2026" in text
    assert "no earlier week" in text  # the window has one week only
    assert "2026-01-12T00:00:00" not in text


def test_empty_marts_still_make_pages(empty_pages: dict[str, Path], browser, tmp_path: Path):
    assert set(empty_pages) == set(PAGES)
    for name, path in empty_pages.items():
        screenshot = tmp_path / f"{name}.png"
        seen = _open(browser, path, screenshot)
        assert seen["blocked"] == [] and seen["page_errors"] == [] and seen["console_errors"] == []
        assert seen["rendered"] == len(seen["charts"]) == 0
        assert "No data" in seen["text"]
        assert screenshot.read_bytes().startswith(PNG_MAGIC)


def _pages_of_edited_marts(warehouse_path: Path, out: Path, edit: str) -> dict[str, Path]:
    """The pages of a copy of the fixture's marts, changed by the SQL `edit`."""
    with warehouse(warehouse_path, read_only=True) as source:
        frames = {
            name: source.sql(f"SELECT * FROM {SCHEMA}.{name}").pl() for name in AGGREGATE_MARTS
        }
    with duckdb.connect() as con:
        con.execute(f"CREATE SCHEMA {SCHEMA}")
        for name, frame in frames.items():
            con.register("_frame", frame)
            con.execute(f"CREATE TABLE {SCHEMA}.{name} AS SELECT * FROM _frame")
            con.unregister("_frame")
        con.execute(edit)
        return write_dashboards(con, out)


def test_risk_page_without_decisions(warehouse_path: Path, browser, tmp_path: Path):
    # The same marts as if the risk loop had never run: every transfer UNSCORED, nobody held.
    written = _pages_of_edited_marts(
        warehouse_path,
        tmp_path / "out",
        f"""CREATE OR REPLACE TABLE {SCHEMA}.daily_friction AS
        SELECT day, payee_type, 'UNSCORED' AS decision, sum(transfers)::BIGINT AS transfers,
            sum(value_paise)::BIGINT AS value_paise
        FROM {SCHEMA}.daily_friction GROUP BY ALL;
        DELETE FROM {SCHEMA}.friction_retention WHERE held""",
    )
    seen = _open(browser, written["risk"], tmp_path / "risk.png")
    _check_rendered(seen, written["risk"].parent, tmp_path / "risk.png")
    assert "No risk decisions yet" in seen["text"]
    assert seen["rendered"] >= 3


def test_network_guard_catches_remote_requests(browser, tmp_path: Path):
    # The guard itself: a page that reaches off the disk must show up as a blocked request.
    page = tmp_path / "remote.html"
    page.write_text(
        '<html><body data-charts-rendered="0" data-chart-errors="">'
        '<img src="http://127.0.0.1:9/pixel.png"></body></html>'
    )
    seen = _open(browser, page, tmp_path / "remote.png")
    assert seen["blocked"] == ["http://127.0.0.1:9/pixel.png"]


def test_missing_marts_name_what_is_missing(tmp_path: Path):
    with duckdb.connect() as con, pytest.raises(LookupError, match=r"adoption\.daily_volume"):
        write_dashboards(con, tmp_path)


def test_money_in_lakh_and_crore():
    assert indian_grouping(123) == "123"
    assert indian_grouping(1234567) == "12,34,567"
    assert indian_grouping(123456789) == "12,34,56,789"
    assert format_rupees(95_000) == "₹950"
    assert format_rupees(4_530_000) == "₹45,300"
    assert format_rupees(34_000_000) == "₹3.4 L"
    assert format_rupees(1_200_000_000) == "₹1.2 Cr"
    assert format_rupees(1_234_500_000_000) == "₹1,234.5 Cr"
    assert format_count(99_999) == "99,999"
    assert format_count(250_000) == "2.5 L"


def test_a_table_column_keeps_one_unit():
    # The unit of the column's smallest amount, so that none of it reads as zero.
    assert count_column([98_203, 110_234, None]) == ["98,203", "1,10,234", "–"]
    assert count_column([250_000, 12_000_000]) == ["2.5 L", "120.0 L"]
    assert rupee_column([21_200_000, 7_314_100, 7_400]) == ["₹2,12,000", "₹73,141", "₹74"]
    assert rupee_column([2_120_000_000, 1_500_000_000]) == ["₹2.1 Cr", "₹1.5 Cr"]


def test_the_page_template_escapes_what_it_shows():
    hostile = '<script>alert("x")</script> & <b>'
    page = Page(
        hostile,
        intro=hostile,
        notices=[hostile],
        tiles=[Tile(hostile, hostile, change=hostile, note=hostile)],
        cards=[
            Chart("a", hostile, {"data": {"values": [{"v": hostile}]}}, note=hostile),
            Chart("b", hostile, None, empty=hostile),
            Table(hostile, [Column(hostile)], [[hostile]], note=hostile),
        ],
    )
    day = dt.date(2026, 1, 5)
    html = render_page("overview", page, Window(day, day), {"overview": hostile})
    assert "<script>alert" not in html and "<b>" not in html
    # Everywhere it was put, and in the title and the navigation: 17 places.
    assert html.count(str(markupsafe.escape(hostile))) == 17
    # Chart data goes into a JSON <script>: nothing in it may close the element.
    specs = html.split('id="chart-specs">', 1)[1].split("</script>", 1)[0]
    assert json.loads(specs)["a"]["data"]["values"][0]["v"] == hostile


def _repeated_axis_labels(seen: dict) -> list[tuple[str, list[str]]]:
    return [
        (chart["name"], labels)
        for chart in seen["charts"]
        for labels in chart["axes"]
        if len(labels) != len(set(labels))
    ]


def test_axis_labels_never_repeat(pages: dict[str, Path], warehouse_path, browser, tmp_path):
    # Friction at a tenth of the fixture's: shares of a few tenths of a percent, ticks 0.05% apart.
    low = _pages_of_edited_marts(
        warehouse_path,
        tmp_path / "low",
        f"""UPDATE {SCHEMA}.daily_friction
        SET transfers = transfers // 10, value_paise = value_paise // 10
        WHERE decision IN ('HOLD', 'BLOCK')""",
    )
    seen = _open(browser, low["risk"], tmp_path / "low-risk.png")
    shares = next(c["axes"][-1] for c in seen["charts"] if c["name"] == "friction-transfers")
    assert len(shares) >= 4 and all(label.endswith("%") for label in shares), shares
    assert _repeated_axis_labels(seen) == []
    for name, path in pages.items():
        seen = _open(browser, path, tmp_path / f"{name}.png")
        assert _repeated_axis_labels(seen) == [], name


def test_a_day_without_data_breaks_the_lines(
    pages: dict[str, Path], warehouse_path: Path, browser, tmp_path: Path
):
    # No row at all for 14 Jan (a ledger outage, say): no line may bridge it.
    daily = [name for name in AGGREGATE_MARTS if not MARTS[name].weekly]
    written = _pages_of_edited_marts(
        warehouse_path,
        tmp_path / "gap",
        ";".join(
            f"DELETE FROM {SCHEMA}.{name} WHERE {MARTS[name].day_column} = DATE '2026-01-14'"
            for name in daily
        ),
    )
    seen = _open(browser, written["overview"], tmp_path / "gap.png")
    pieces = {chart["name"]: chart["pieces"] for chart in seen["charts"]}
    # One path per series (P2P, P2M; DAU, WAU, MAU), each in two pieces: before and after.
    assert pieces["transfers-by-type"] == [2, 2]
    assert pieces["active-payers"] == [2, 2, 2]
    assert pieces["value-by-type"] and set(pieces["value-by-type"]) == {2}
    # Every day has data in the fixture itself: one piece each.
    whole = _open(browser, pages["overview"], tmp_path / "whole.png")
    assert {c["name"]: set(c["pieces"]) for c in whole["charts"] if c["pieces"]} == {
        "transfers-by-type": {1},
        "value-by-type": {1},
        "active-payers": {1},
        "success-rate": {1},
    }


def _unit(cell: str) -> str:
    return " Cr" if cell.endswith(" Cr") else " L" if cell.endswith(" L") else ""


def test_table_columns_show_one_unit(pages: dict[str, Path], browser, tmp_path: Path):
    tables = [
        table
        for name, path in pages.items()
        for table in _open(browser, path, tmp_path / f"{name}.png")["tables"]
    ]
    assert any(t["columns"][:3] == ["State", "Transfers", "Value"] for t in tables)
    for table in tables:
        for i, column in enumerate(table["columns"]):
            units = {_unit(row[i]) for row in table["rows"] if row[i] != "–"}
            assert len(units) <= 1, (column, sorted(row[i] for row in table["rows"]))
