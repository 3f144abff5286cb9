"""Dagster entry point: every definition under `defs/`, with resources from the instance settings."""

from pathlib import Path

import dagster as dg

from pipelines.defs.resources import default_resources
from pipelines.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    """The project's definitions, their resources built from `settings` (the CLI passes its own,
    with its options; the code location `dg dev` serves reads the environment and data dir)."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(resources=default_resources(settings), executor=dg.in_process_executor),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs(Settings())
