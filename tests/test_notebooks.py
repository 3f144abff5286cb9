"""The analyst helper (`pipelines.analyst`) and the notebooks it serves.

Helper tests run on a tiny ledger built in-process. The notebook tests run every notebook in
`notebooks/` top to bottom against a warehouse the real demo builds once per session.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import duckdb
import nbformat
import polars as pl
import pytest
from nbclient import NotebookClient

from pipelines.adoption.marts import SCHEMA
from pipelines.analyst import (
    MissingTableError,
    RawVpaError,
    WarehouseBusyError,
    WarehouseNotFoundError,
    assert_no_raw_vpas,
    open_warehouse,
)
from pipelines.ledger import contract as c
from pipelines.privacy import load_token_key, vpa_token
from pipelines.settings import DATA_DIR_ENV, DataDir

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED_NOTEBOOKS = {"adoption_deep_dive", "fraud_typologies", "model_performance"}
CELL_TIMEOUT_SECONDS = 300
DEMO_USERS = 3000
# At the default 0.4% fraud rate, 3,000 users leave too few labelled frauds for the demo to train
# a model: the notebooks would then only ever take their "table missing" paths.
DEMO_FRAUD_RATE = 0.05
# Environment the demo and the kernels must not inherit: they would point elsewhere.
FOREIGN_ENV = (DATA_DIR_ENV, "UPI_RISK_LEDGER_DSN", "UPI_RISK_OPERATIONAL_DB_URL")
VPA_IN_TEXT = re.compile(r"[a-z0-9._-]{2,}@[a-z0-9]{2,}", re.IGNORECASE)


# --- a tiny ledger for the helper -------------------------------------------------------------


@pytest.fixture(scope="module")
def ledger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with a small real ledger (simulated, ingested): no features, no marts."""
    from pipelines.ledger.current import refresh_accounts, refresh_transfers
    from pipelines.ledger.ingest import ingest_landing
    from pipelines.sandbox.simulator import SimulationConfig, simulate
    from pipelines.warehouse import warehouse

    root = tmp_path_factory.mktemp("ledger")
    paths = DataDir.resolve(root)
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=4)
    simulate(SimulationConfig(users=300, days=4, start=start), paths.landing, paths.ground_truth)
    with warehouse(paths.warehouse) as con:
        ingest_landing(con, paths.landing)
        refresh_transfers(con)
        refresh_accounts(con)
    return root


def _raw(ledger_dir: Path, query: str) -> pl.DataFrame:
    con = duckdb.connect(str(DataDir.resolve(ledger_dir).warehouse), read_only=True)
    try:
        return con.sql(query).pl()
    finally:
        con.close()


def test_tokens_are_vpa_tokens_of_the_raw_vpas(ledger_dir: Path) -> None:
    raw = _raw(ledger_dir, "SELECT transfer_id, payer_vpa, payee_vpa FROM ledger.transfers")
    accounts = _raw(ledger_dir, "SELECT vpa FROM ledger.accounts ORDER BY vpa")
    key = load_token_key(DataDir.resolve(ledger_dir))
    with open_warehouse(ledger_dir) as wh:
        tokens = wh.sql("SELECT transfer_id, payer_token, payee_token FROM transfers")
        users = wh.sql("SELECT user_token FROM accounts")["user_token"].to_list()
        assert wh.token(raw["payer_vpa"][0]) == vpa_token(raw["payer_vpa"][0], key)
        devices = wh.sql("SELECT payer_device_token FROM transfers")["payer_device_token"]
    assert raw.height > 0
    joined = raw.join(tokens, on="transfer_id")
    assert joined.height == raw.height
    for payer, payee, payer_token, payee_token in joined.select(
        "payer_vpa", "payee_vpa", "payer_token", "payee_token"
    ).iter_rows():
        assert payer_token == vpa_token(payer, key)
        assert payee_token == vpa_token(payee, key)
    assert sorted(users) == sorted(vpa_token(v, key) for v in accounts["vpa"])
    assert devices.str.starts_with("d_").all()


def test_views_hold_no_raw_vpas(ledger_dir: Path) -> None:
    with open_warehouse(ledger_dir) as wh:
        listed = wh.tables()
        assert {"transfers", "accounts", "account_events", "labels"} <= set(listed["name"])
        for name in listed["name"]:
            frame = wh.table(name)  # the guard would refuse a VPA
            assert not any("vpa" in column for column in frame.columns), name


def test_warehouse_is_read_only(ledger_dir: Path) -> None:
    before = _raw(ledger_dir, "SELECT count(*) AS n FROM ledger.transfers")["n"][0]
    with open_warehouse(ledger_dir) as wh:
        for statement in (
            "CREATE TABLE main.scratch AS SELECT 1 AS x",
            "DELETE FROM ledger.transfers",
            "INSERT INTO ledger.labels SELECT * FROM ledger.labels",
        ):
            with pytest.raises(duckdb.Error, match="read-only"):
                wh.sql(statement)
    assert _raw(ledger_dir, "SELECT count(*) AS n FROM ledger.transfers")["n"][0] == before
    # Closed means released: a writer can open the file again.
    duckdb.connect(str(DataDir.resolve(ledger_dir).warehouse)).close()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT payer_vpa FROM ledger.transfers",
        "SELECT transfer_id, upper(payee_vpa) AS p FROM ledger.transfers",
        "SELECT list(payer_vpa) AS everyone FROM ledger.transfers",
        "SELECT {'who': vpa} AS s FROM ledger.accounts",
        "SELECT 'paid ' || payee_vpa AS note FROM ledger.transfers",
    ],
)
def test_guard_refuses_raw_vpas(ledger_dir: Path, query: str) -> None:
    with open_warehouse(ledger_dir) as wh, pytest.raises(RawVpaError, match="payer_token"):
        wh.sql(query)


def test_guard_lets_tokenized_sql_through(ledger_dir: Path) -> None:
    with open_warehouse(ledger_dir) as wh:
        frame = wh.sql("SELECT vpa_token(payer_vpa) AS payer FROM ledger.transfers")
    assert frame["payer"].str.starts_with("u_").all()


def test_guard_catches_every_vpa_the_contract_allows() -> None:
    vpas = ["ab@cd", "rupa.2988@wahdfcbank", "x_y-z.9@bank12", "a" * 256 + "@" + "b" * 64]
    assert all(re.match(c.VPA_PATTERN, v) for v in vpas)
    for value in vpas:
        with pytest.raises(RawVpaError):
            assert_no_raw_vpas(pl.DataFrame({"column": ["u_0123456789abcdef", value]}))
    with pytest.raises(RawVpaError):
        assert_no_raw_vpas(pl.DataFrame({"record": ['{"payer_vpa": "meena@waicici"}']}))
    assert_no_raw_vpas(
        pl.DataFrame(
            {
                "token": ["u_0123456789abcdef"],
                "id": ["WAP000000000001"],
                "codes": [["RECENT_SIM_CHANGE"]],
                "text": ["₹500 @ 5pm"],
            }
        )
    )


def test_missing_warehouse_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(WarehouseNotFoundError) as caught:
        open_warehouse(tmp_path / "nowhere")
    assert "make demo" in str(caught.value)
    assert "upi-risk demo" in str(caught.value)


def test_warehouse_being_written_says_so(ledger_dir: Path) -> None:
    holder = (
        "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", holder, str(DataDir.resolve(ledger_dir).warehouse)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        with pytest.raises(WarehouseBusyError, match="another process"):
            open_warehouse(ledger_dir)
    finally:
        writer.communicate(timeout=60)  # closing its stdin lets it exit


def test_missing_table_names_what_builds_it(ledger_dir: Path) -> None:
    with open_warehouse(ledger_dir) as wh:
        assert not wh.has("scores")
        with pytest.raises(MissingTableError, match=r"risk\.transfer_scores"):
            wh.table("scores")
        with pytest.raises(MissingTableError, match="adoption"):
            wh.table("adoption.daily_active")


def test_data_dir_from_the_environment(ledger_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(ledger_dir))
    with open_warehouse() as wh:
        assert wh.path == DataDir.resolve(ledger_dir).warehouse
    with pytest.raises(RuntimeError, match="closed"):
        wh.sql("SELECT 1")


# --- the notebooks as stored ------------------------------------------------------------------


def test_the_notebooks_are_there() -> None:
    assert {path.stem for path in NOTEBOOKS} >= EXPECTED_NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean(path: Path) -> None:
    """No outputs, no execution counts, the python3 kernel, no machine paths."""
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for index, cell in enumerate(notebook.cells):
        assert str(ROOT) not in cell.source, f"cell {index} holds this machine's path"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} has outputs: clear them before committing"
            assert cell.execution_count is None, f"cell {index} has an execution count"
            # Data comes through pipelines.analyst only (read-only, tokens), never a raw connection.
            assert "duckdb" not in cell.source, f"cell {index} connects to DuckDB directly"


# --- the notebooks run against a demo warehouse -----------------------------------------------


@dataclass(frozen=True)
class DemoWarehouse:
    data_dir: Path
    marts_built_by_demo: bool
    seconds: float


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory) -> DemoWarehouse:
    """A data directory the real demo filled (simulate, ingest, train, score, marts), once."""
    root = tmp_path_factory.mktemp("demo")
    cli = Path(sys.executable).parent / "upi-risk"
    started = time.perf_counter()
    common = ["--users", str(DEMO_USERS), "--data-dir", str(root)]
    for args in (
        ["simulate", *common, "--fraud-rate", str(DEMO_FRAUD_RATE)],
        ["demo", *common, "--json"],
    ):
        done = subprocess.run(
            [str(cli), *args], capture_output=True, text=True, env=_clean_env(), timeout=900
        )
        if done.returncode != 0:
            pytest.fail(
                f"`upi-risk {' '.join(args)}` exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
            )
    paths = DataDir.resolve(root)
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        marts = con.sql(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ?", params=[SCHEMA]
        ).fetchall()[0][0]
    finally:
        con.close()
    if not marts:
        # The notebooks should still be exercised on marts; test_demo_builds_the_adoption_marts
        # reports the gap.
        from pipelines.adoption.marts import build_marts, ledger_days
        from pipelines.warehouse import warehouse

        warnings.warn("the demo built no adoption marts; built them here", stacklevel=1)
        with warehouse(paths.warehouse) as con:
            days = ledger_days(con)
            build_marts(con, days.first, days.last, token_key=load_token_key(paths))
    return DemoWarehouse(root, bool(marts), time.perf_counter() - started)


@pytest.mark.slow
@pytest.mark.xdist_group("demo_warehouse")
def test_demo_builds_the_adoption_marts(demo_warehouse: DemoWarehouse) -> None:
    assert demo_warehouse.marts_built_by_demo, "`upi-risk demo` did not build the adoption.* marts"


@pytest.mark.slow
@pytest.mark.xdist_group("demo_warehouse")
def test_demo_warehouse_has_what_the_notebooks_read(demo_warehouse: DemoWarehouse) -> None:
    with open_warehouse(demo_warehouse.data_dir) as wh:
        for name in ("transfers", "labels", "features", "scores", "adoption.daily_active"):
            assert wh.has(name), name
        assert wh.live_model() is not None
        assert wh.sql("SELECT count(*) AS n FROM scores WHERE NOT shadow")["n"][0] > 0


@pytest.mark.slow
@pytest.mark.xdist_group("demo_warehouse")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, demo_warehouse: DemoWarehouse) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    # A failing cell raises CellExecutionError with the cell and its traceback.
    client.execute(env={**_clean_env(), DATA_DIR_ENV: str(demo_warehouse.data_dir)})
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
            texts.append(output.get("text", ""))
            data = output.get("data", {})
            texts += [data.get(kind, "") for kind in ("text/plain", "text/html", "text/markdown")]
    leaked = VPA_IN_TEXT.findall("\n".join(t if isinstance(t, str) else "".join(t) for t in texts))
    assert not leaked, f"{len(leaked)} VPA-like strings in the outputs of {path.name}"
