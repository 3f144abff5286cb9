"""One configuration: `Settings` from options, `UPI_RISK_*`, settings.toml and defaults, in that
order, read by the CLI and the Dagster resources alike; nothing writes the process environment."""

import ast
from pathlib import Path

import dagster as dg
import pytest

from pipelines.defs.resources import default_resources
from pipelines.settings import Settings, write_settings_file
from tests.factories import load_definitions

PROTOCOL = {
    "test_days": 5,
    "delay_days": 2,
    "folds": 4,
    "maturity_days": 9,
    "hold_rate": 0.01,
    "review_capacity": 40,
    "delivery_window_hours": 6.0,
    "random_state": 3,
}


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("UPI_RISK_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("name", sorted(PROTOCOL))
def test_every_protocol_setting_comes_from_the_environment(clean_env, tmp_path, name):
    clean_env.setenv(f"UPI_RISK_{name.upper()}", str(PROTOCOL[name]))
    settings = Settings(data_dir=tmp_path)
    assert getattr(settings, name) == PROTOCOL[name]
    assert getattr(settings, name) != Settings.model_fields[name].default


def test_option_beats_environment_beats_file_beats_default(clean_env, tmp_path):
    write_settings_file(Settings(data_dir=tmp_path).paths, {"test_days": 3, "folds": 2})
    assert Settings(data_dir=tmp_path).test_days == 3
    assert Settings(data_dir=tmp_path).folds == 2
    assert Settings(data_dir=tmp_path).delay_days == Settings.model_fields["delay_days"].default
    clean_env.setenv("UPI_RISK_TEST_DAYS", "4")
    assert Settings(data_dir=tmp_path).test_days == 4
    assert Settings(data_dir=tmp_path, test_days=6).test_days == 6
    # The data directory itself may come from the environment, and its file then applies.
    clean_env.setenv("UPI_RISK_DATA_DIR", str(tmp_path))
    assert Settings().folds == 2


def test_the_dagster_resources_read_the_same_settings(clean_env, tmp_path):
    settings = Settings(data_dir=tmp_path, **PROTOCOL, freshness_hours=12)
    resources = default_resources(settings)
    with dg.build_resources({"settings": resources["settings"]}) as built:
        assert built.settings is settings
    assert resources["ledger_source"].freshness_hours == 12
    assert resources["warehouse"].path == str(settings.paths.warehouse)


def test_secrets_reach_the_steps_but_never_the_stored_run(clean_env, tmp_path):
    """Dagster stores each run's job snapshot and resource config, and the UI shows them: the
    secrets are read from the settings at run time instead, wherever they were set."""
    from dagster._core.snap import JobSnap

    clean_env.setenv("UPI_RISK_TOKEN_KEY", "env-tok3n")
    settings = Settings(
        data_dir=tmp_path,
        ledger_dsn="postgresql://risk:s3cret@db/ledger",
        operational_db_url="postgresql://risk:0pdb@db/ops",
    )
    definitions = load_definitions(settings)
    for job in definitions.resolve_all_job_defs():
        stored = dg.serialize_value(JobSnap.from_job_def(job))
        for secret in ("s3cret", "0pdb", "env-tok3n"):
            assert secret not in stored, (job.name, secret)
    with dg.build_resources(default_resources(settings)) as built:
        assert built.ledger_source.postgres.dsn == "postgresql://risk:s3cret@db/ledger"
        assert built.risk.operational_db_url == "postgresql://risk:0pdb@db/ops"
        assert built.adoption.token_key == b"env-tok3n"


def test_settings_file_errors_name_the_file_and_the_key(clean_env, tmp_path):
    (tmp_path / "settings.toml").write_text("folds = 2\nfold = 3\n")
    with pytest.raises(ValueError, match=r"settings.toml: unknown settings \['fold'\]"):
        Settings(data_dir=tmp_path)
    (tmp_path / "settings.toml").write_text("folds = [\n")
    with pytest.raises(ValueError, match="not a readable TOML settings file"):
        Settings(data_dir=tmp_path)


def _writes_environment(node: ast.AST) -> bool:
    """`os.environ[...] = `, `os.environ.setdefault/update/pop/...(`, `os.putenv(`."""
    if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        return any(
            isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ" for t in targets
        )
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        owner, method = ast.unparse(node.func.value), node.func.attr
        mutators = {"setdefault", "update", "pop", "popitem", "clear", "__setitem__"}
        return (owner == "os.environ" and method in mutators) or (
            owner == "os" and method in {"putenv", "unsetenv"}
        )
    return False


def test_no_product_code_writes_the_process_environment():
    package = Path(__file__).parents[1] / "pipelines"
    writers = [
        f"{path.relative_to(package.parent)}:{node.lineno}"
        for path in sorted(package.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if _writes_environment(node)
    ]
    assert writers == []
    # The check itself finds what it looks for.
    assert _writes_environment(ast.parse("os.environ['A'] = '1'").body[0])
    assert _writes_environment(ast.parse("os.environ.setdefault('A', '1')").body[0].value)
