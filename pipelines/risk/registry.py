"""Model registry: one folder per version under `models/`, one live version, challengers in shadow.

    models/<version>/model.pkl       the fitted estimator (pickle)
    models/<version>/manifest.json   version, kind, windows, features, metrics, the hyper-parameter
                                     selection and calibration the fit recorded, sha256 of model.pkl
    models/<version>/model_card.md   what it is for, data, metrics, limitations
    models/LIVE                      the live version's name (replaced atomically)
    models/promotions.jsonl          every promotion decision, appended

A version folder is written under a temporary name and renamed into place, so a reader never sees
half a version. `load` reads the artifact once, checks its sha256 against the manifest and only
then unpickles those same bytes: a tampered, truncated or missing artifact is refused before any
of it runs. (The manifest itself is not signed: the check catches corruption and naive tampering,
not someone able to rewrite both files.)
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
import os
import pickle
import platform
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pipelines.features.definitions import FEATURES_BY_NAME

ARTIFACT_FILE = "model.pkl"
MANIFEST_FILE = "manifest.json"
MODEL_CARD_FILE = "model_card.md"
LIVE_FILE = "LIVE"
PROMOTIONS_FILE = "promotions.jsonl"
PROMOTION_METRIC = "average_precision"
MANIFEST_SCHEMA = "upi-risk-model-manifest/1"
_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LIBRARIES = ("scikit-learn", "numpy", "scipy", "polars", "numba")


class RegistryError(Exception):
    """A registry operation that cannot proceed: unknown version, bad input, corrupt files."""


class ArtifactIntegrityError(RegistryError):
    """A model artifact is missing or does not match the checksum its manifest records."""


@dataclass(frozen=True)
class PromotionDecision:
    """Whether `candidate` became live, and why (the Dagster blocking check reports this)."""

    candidate: str
    promoted: bool
    reason: str
    live_before: str | None
    live_after: str | None
    metric: str
    candidate_value: float | None
    live_value: float | None
    test_window: dict[str, str] | None
    decided_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelRegistry:
    """The versions under `root` (created on first write)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # --- writing ---------------------------------------------------------------------------

    def register(
        self,
        model: Any,
        *,
        kind: str,
        feature_names: Sequence[str],
        training_window: tuple[dt.datetime | None, dt.datetime],
        test_window: tuple[dt.datetime, dt.datetime],
        metrics: Mapping[str, Any],
        version: str | None = None,
        label_policy: Mapping[str, Any] | None = None,
        notes: str = "",
        created_at: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Store a fitted model as a new version (not live: see `promote`); returns its manifest.

        A model whose artifact bytes equal a registered version's is that version: its manifest
        is returned and nothing new is written (unless `version` names a new one).

        `metrics` are the model's metrics on `test_window` (at least `average_precision` for
        promotion); `label_policy` records how targets were built (e.g. maturity_days).
        """
        created = (created_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        checksum = hashlib.sha256(payload).hexdigest()
        if version is None:
            # Training again on the same data gives the same bytes: the same model is the same
            # version, not a new challenger to score in shadow on every re-run.
            for existing in self.versions():
                manifest = self.manifest(existing)
                if manifest.get("artifact", {}).get("sha256") == checksum:
                    return manifest
        version = version or f"{created:%Y%m%dT%H%M%S}Z-{kind}-{checksum[:8]}"
        _check_version(version)
        target = self.root / version
        if target.exists():
            raise RegistryError(f"version {version!r} already exists at {target}")
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "version": version,
            "created_at": created.isoformat(),
            "kind": kind,
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "training_window": {
                "start": _iso(training_window[0]),
                "end": _iso(training_window[1]),
            },
            "test_window": {"start": _iso(test_window[0]), "end": _iso(test_window[1])},
            "feature_names": list(feature_names),
            "metrics": _json_safe(dict(metrics)),
            "label_policy": _json_safe(dict(label_policy or {})),
            # What the fit chose inside its training window (model.py records it as it fits).
            "selection": _json_safe(_fitted_record(model, "selection_", "best_params_")),
            "calibration": _json_safe(getattr(model, "calibration_", None)),
            "artifact": {"file": ARTIFACT_FILE, "sha256": checksum, "bytes": len(payload)},
            "library_versions": _library_versions(),
            "notes": notes,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root))
        try:
            _write_bytes(staging / ARTIFACT_FILE, payload)
            _write_bytes(
                staging / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
            )
            _write_bytes(staging / MODEL_CARD_FILE, model_card(manifest).encode("utf-8"))
            staging.chmod(0o755)
            os.rename(staging, target)  # atomic; fails if the version appeared meanwhile
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return manifest

    def promote(
        self,
        version: str,
        *,
        live_metrics: Mapping[str, Any] | None = None,
        force: bool = False,
        dry_run: bool = False,
    ) -> PromotionDecision:
        """Make `version` live if it beats the live one on the same test window, by average
        precision (a tie does not promote); otherwise it stays a challenger.

        The live version's metrics come from `live_metrics` (the live model re-scored by the
        caller on the candidate's test window) or, failing that, from its own manifest when its
        test window is the candidate's. Without comparable metrics nothing is promoted.
        `force` promotes regardless (a recorded, deliberate override, e.g. a rollback).
        `dry_run` returns the decision without making anything live or recording it (the
        blocking check asks first; the promotion step then acts).
        """
        decide = functools.partial(self._decide, dry_run=dry_run)
        candidate = self.manifest(version)
        self._verify(version, candidate)  # never make live what cannot be loaded
        live = self.live_version()
        window = candidate.get("test_window")
        value = _metric(candidate.get("metrics", {}))
        live_value: float | None = None
        if live == version:
            return decide(version, False, f"{version} is already live", live, value, value)
        if force:
            reason = f"forced promotion over {live or 'no live version'}"
            return decide(version, True, reason, live, value, None)
        if live is None:
            return decide(version, True, "no live version yet", live, value, None)
        if live_metrics is not None:
            live_value = _metric(live_metrics)
            basis = "live model re-scored on the candidate's test window"
        else:
            live_manifest = self.manifest(live)
            if live_manifest.get("test_window") != window:
                return decide(
                    version,
                    False,
                    f"not comparable: live {live} was tested on {live_manifest.get('test_window')}"
                    f", candidate on {window}; re-score the live model on the candidate's window "
                    "and pass live_metrics",
                    live,
                    value,
                    None,
                )
            live_value = _metric(live_manifest.get("metrics", {}))
            basis = "same test window in both manifests"
        if value is None or live_value is None:
            missing = "candidate" if value is None else "live version"
            return decide(
                version,
                False,
                f"no {PROMOTION_METRIC} for the {missing}; stays a challenger",
                live,
                value,
                live_value,
            )
        if value > live_value:
            reason = (
                f"{PROMOTION_METRIC} {value:.6f} beats live {live} at {live_value:.6f} ({basis})"
            )
            return decide(version, True, reason, live, value, live_value)
        verb = "ties" if value == live_value else "is below"
        reason = (
            f"{PROMOTION_METRIC} {value:.6f} {verb} live {live} at {live_value:.6f} ({basis}); "
            "stays a challenger"
        )
        return decide(version, False, reason, live, value, live_value)

    # --- reading ---------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Registered versions, oldest first (by manifest created_at, then name)."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            if path.is_dir() and not path.name.startswith(".") and (path / MANIFEST_FILE).is_file():
                found.append((self.manifest(path.name)["created_at"], path.name))
        return [name for _, name in sorted(found)]

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest of `version`."""
        _check_version(version)
        path = self.root / version / MANIFEST_FILE
        if not path.is_file():
            known = ", ".join(self.versions()) if self.root.is_dir() else ""
            raise RegistryError(
                f"no model version {version!r} in {self.root} (known: {known or 'none'})"
            )
        try:
            return json.loads(path.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise RegistryError(f"manifest {path} is not valid JSON: {exc}") from exc

    def load(self, version: str | None = None) -> Any:
        """The model of `version` (default: the live one), after verifying its checksum."""
        if version is None:
            version = self.live_version()
            if version is None:
                raise RegistryError(f"no live model version in {self.root}")
        manifest = self.manifest(version)
        payload = self._verify(version, manifest)
        return pickle.loads(payload)  # only bytes whose checksum was just verified

    def live_version(self) -> str | None:
        """The live version's name, or None before the first promotion."""
        path = self.root / LIVE_FILE
        if not path.is_file():
            return None
        name = path.read_text("utf-8").strip()
        return name or None

    def challengers(self) -> list[str]:
        """Versions registered after the live one (newest first): scored in shadow, not live."""
        live = self.live_version()
        versions = self.versions()
        if live is None:
            return list(reversed(versions))
        live_created = self.manifest(live)["created_at"]
        return [
            v
            for v in reversed(versions)
            if v != live and (self.manifest(v)["created_at"], v) > (live_created, live)
        ]

    def promotions(self) -> list[dict[str, Any]]:
        """Every promotion decision recorded, oldest first."""
        path = self.root / PROMOTIONS_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]

    # --- internals -------------------------------------------------------------------------

    def _verify(self, version: str, manifest: Mapping[str, Any]) -> bytes:
        """The artifact's bytes, if their sha256 is the manifest's; else ArtifactIntegrityError."""
        artifact = manifest.get("artifact") or {}
        expected = artifact.get("sha256")
        path = self.root / version / artifact.get("file", ARTIFACT_FILE)
        if not expected:
            raise ArtifactIntegrityError(f"manifest of {version} records no sha256 for {path}")
        if not path.is_file():
            raise ArtifactIntegrityError(
                f"model artifact {path} is missing (manifest expects sha256 {expected})"
            )
        payload = path.read_bytes()
        actual = hashlib.sha256(payload).hexdigest()
        if actual != expected:
            raise ArtifactIntegrityError(
                f"model artifact {path} failed its checksum: expected sha256 {expected}, "
                f"got {actual}; refusing to unpickle it"
            )
        return payload

    def _decide(
        self,
        version: str,
        promoted: bool,
        reason: str,
        live_before: str | None,
        value: float | None,
        live_value: float | None,
        *,
        dry_run: bool = False,
    ) -> PromotionDecision:
        if promoted and not dry_run:
            _write_bytes(self.root / LIVE_FILE, f"{version}\n".encode())
        manifest = self.manifest(version)
        decision = PromotionDecision(
            candidate=version,
            promoted=promoted,
            reason=reason,
            live_before=live_before,
            live_after=version if promoted else live_before,
            metric=PROMOTION_METRIC,
            candidate_value=value,
            live_value=live_value,
            test_window=manifest.get("test_window"),
            decided_at=dt.datetime.now(dt.UTC).isoformat(),
        )
        if not dry_run:
            self.record(decision)
        return decision

    def record(self, decision: PromotionDecision) -> None:
        """Append a decision to promotions.jsonl: `promote` does for what it acts on, and the
        blocking check for a candidate it stops (nothing downstream then records it).

        A decision that changes nothing (not promoted) equal but for its time to the candidate's
        latest one is not appended again: a re-run job leaves the log as it was. Every change
        of the live version is appended.
        """
        entry = decision.as_dict()
        latest = [p for p in self.promotions() if p.get("candidate") == decision.candidate]
        if not decision.promoted and latest and _without_time(latest[-1]) == _without_time(entry):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / PROMOTIONS_FILE, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")


def _without_time(decision: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in decision.items() if k != "decided_at"}


def _fitted_record(model: Any, record: str, params: str) -> dict[str, Any] | None:
    """The model's selection record with the parameters it was fitted with, if it keeps one."""
    found = getattr(model, record, None)
    if found is None:
        return None
    return {**found, "fitted_params": getattr(model, params, None)}


def _selection_lines(selection: Mapping[str, Any] | None) -> list[str]:
    if not selection:
        return ["No record: the model was fitted without the selection protocol.", ""]
    validation = selection.get("validation", {})
    fitted_on = selection.get("fitted_on", {})
    lines = [
        "Chosen inside the training window, never on the test window: each candidate was fitted "
        f"on the {fitted_on.get('rows')} rows ({fitted_on.get('frauds')} frauds) before the "
        f"validation slice and judged on it: {validation.get('rows')} matured rows, "
        f"{validation.get('frauds')} frauds, {validation.get('start')} to "
        f"{validation.get('end')}. The chosen one was then refitted on the whole window.",
        "",
        f"- rule: {selection.get('rule')}",
        f"- chosen: candidate {selection.get('chosen')}, "
        f"`{json.dumps(selection.get('chosen_params'))}`",
        "",
        "| candidate | overrides | validation average precision | s.e. of difference from best |",
        "|---|---|---|---|",
    ]
    for i, entry in enumerate(selection.get("candidates", [])):
        mark = " (chosen)" if i == selection.get("chosen") else ""
        lines.append(
            f"| {i}{mark} | `{json.dumps(entry.get('params'))}` | "
            f"{_fmt(entry.get('average_precision'))} | "
            f"{_fmt(entry.get('se_of_difference_from_best'))} |"
        )
    params = selection.get("fitted_params")
    if params:
        lines += ["", f"Fitted with: `{json.dumps(params)}`"]
    return [*lines, ""]


def _calibration_lines(calibration: Mapping[str, Any] | None) -> list[str]:
    if not calibration:
        return ["No record: the model was fitted without the calibration protocol.", ""]
    lines = [
        f"- method: {calibration.get('method')}",
        f"- map: `{json.dumps(calibration.get('map'))}`",
        f"- rows: {calibration.get('rows')} matured rows, {calibration.get('frauds')} frauds, "
        f"{calibration.get('start')} to {calibration.get('end')}",
        "",
        "| block | rows | frauds | from | to | scored by |",
        "|---|---|---|---|---|---|",
    ]
    for i, block in enumerate(calibration.get("blocks", [])):
        scored = block.get("scored_by") or f"skipped: {block.get('skipped')}"
        lines.append(
            f"| {i} | {block.get('rows')} | {block.get('frauds')} | {block.get('start')} | "
            f"{block.get('end')} | {scored} |"
        )
    return [*lines, ""]


def model_card(manifest: Mapping[str, Any]) -> str:
    """The model card (Markdown) of a manifest."""
    metrics = manifest.get("metrics", {})
    train, test = manifest["training_window"], manifest["test_window"]
    policy = manifest.get("label_policy", {})
    maturity = policy.get("maturity_days", 30)
    rows = [
        f"| {name} | {_fmt(value)} |"
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    by_type = metrics.get("recall_by_fraud_type") or {}
    type_rows = [f"| {t} | {_fmt(r)} |" for t, r in sorted(by_type.items())]
    # Each feature with its meaning from the catalogue (which also says how the label delay
    # enters each label feature); a name the catalogue no longer has is listed bare.
    features = "\n".join(
        f"- `{name}`: {FEATURES_BY_NAME[name].meaning}"
        if name in FEATURES_BY_NAME
        else f"- `{name}`"
        for name in manifest["feature_names"]
    )
    libs = ", ".join(f"{k} {v}" for k, v in manifest.get("library_versions", {}).items())
    return "\n".join(
        [
            f"# Model card: {manifest['version']}",
            "",
            "## What it is for",
            "",
            "Scores each UPI transfer of the messaging app with the calibrated probability that it "
            "is fraud (`risk_score`, decisions-v1). The policy turns scores into ALLOW / HOLD "
            "decisions; held transfers go to the risk team's review queue. It ranks and calibrates "
            "transfers like those it was trained on; it is not a credit, identity or AML decision.",
            "",
            f"- kind: `{manifest['kind']}` (`{manifest.get('model_class', '')}`)",
            f"- registered: {manifest['created_at']}",
            f"- artifact: `{manifest['artifact']['file']}`, sha256 `{manifest['artifact']['sha256']}`",
            f"- libraries: {libs}",
            "",
            "## Data",
            "",
            f"- training window: {train['start'] or 'all history'} to {train['end']} (targets as "
            f"known at {train['end']})",
            f"- test window: {test['start']} to {test['end']}",
            f"- label policy: {json.dumps(policy) if policy else f'maturity {maturity} days'}",
            "",
            "## Metrics on the test window",
            "",
            "| metric | value |",
            "|---|---|",
            *rows,
            "",
            *(
                [
                    "### Recall at the hold rate, by fraud type",
                    "",
                    "| type | recall |",
                    "|---|---|",
                    *type_rows,
                    "",
                ]
                if type_rows
                else []
            ),
            "## Hyper-parameter selection",
            "",
            *_selection_lines(manifest.get("selection")),
            "## Calibration",
            "",
            *_calibration_lines(manifest.get("calibration")),
            f"## Features ({len(manifest['feature_names'])})",
            "",
            features,
            "",
            "## Limitations and label-delay caveats",
            "",
            f"- Fraud labels arrive days to weeks late and many never arrive. Training used only "
            f"labels reported before the end of the training window; an unlabelled transfer "
            f"counted as legitimate only once {maturity} days old. Frauds never reported are "
            "learnt as legitimate, so the score estimates the probability of a *reported* fraud "
            "and under-states true fraud where reporting is low (e.g. mule cash-outs).",
            "- Calibration was fitted on matured rows of the training window, scored by models "
            "that had not seen them (see Calibration); it drifts as fraud patterns and reporting rates change. Re-check calibration (mean score "
            "vs fraud rate) on every new test window.",
            "- Test-window metrics use the labels known at evaluation time; for recent windows they "
            "are incomplete, so recall and precision there are estimates that will move as "
            "reports arrive.",
            "- Reviewer verdicts on held transfers feed the next training set: transfers that were "
            "never held are labelled only by victims and banks (selection bias).",
            "- Features are computed point-in-time; the model must be scored with the same "
            "feature definitions and names it was trained with (listed above).",
            "",
        ]
    )


def _metric(metrics: Mapping[str, Any]) -> float | None:
    value = metrics.get(PROMOTION_METRIC)
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if value == value else None  # NaN is no value


def _check_version(version: str) -> None:
    if not isinstance(version, str) or not _VERSION_PATTERN.match(version):
        raise RegistryError(
            f"invalid model version {version!r}: expected 1-100 characters [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )


def _write_bytes(path: Path, data: bytes) -> None:
    """Write `path` atomically: a temporary file in the same folder, fsynced, then renamed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat()


def _json_safe(value: Any) -> Any:
    """Plain JSON values: NaN and infinities become None, numpy scalars and datetimes plain."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # numpy scalar
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
