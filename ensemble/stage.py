"""The ensemble stage: bundles in, an ensemble spec out, evidence in MLflow.

It needs nothing but checkpoint bundles (from a folder, or downloaded from an
MLflow experiment) and the valid file they were scored on, so it can be rerun
alone whenever new bundles arrive, including bundles trained elsewhere.

    bundles -> validate (spec, weights_only, data fingerprint)
            -> member costs in the packaged engine, in the zip's weight
               precision (cached per bundle and precision; int8-ort: the
               onnxruntime int8 engine the zip runs)
            -> select_ensemble on tune rows (or out-of-fold pool rows for
               bagged members, see rows.py), reported on report rows
            -> ensemble spec JSON (what `lobsweep package` consumes)
            -> MLflow run: table, weights per target, member correlation,
               registry version with alias "champion" if its tune score
               (cross-fitted, or out-of-fold) beats the champion's

The report split decides nothing here: not the method, not the fallback to
uniform, not the champion alias. A final fit (bagged members that saw the
report split) has no honest score, and the spec and table say so.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from ..data.loader import load, load_oracle
from ..data.metric import score
from ..errors import UserError
from ..training.bundle import BundleError, find_bundles, validate_bundle
from .rows import selection_rows
from .selection import budget_from_minutes, select_ensemble

FORMAT = "lobsweep.ensemble/1"
REGISTERED_MODEL = "lob-sweep-ensemble"
NO_HONEST_SCORE = ("final fit: the report split was in the training pool, so these report numbers "
                   "are not an honest score")


def collect_bundles(checkpoints: str | None = None, from_mlflow: str | None = None,
                    tracking_uri: str | None = None, run_dir: str | None = None) -> list[str]:
    """Bundle directories from a folder, or from the ``bundle`` artifacts of an MLflow experiment."""
    if bool(checkpoints) == bool(from_mlflow):
        raise UserError("give exactly one of --checkpoints DIR or --from-mlflow EXPERIMENT")
    if checkpoints:
        if not os.path.isdir(checkpoints):
            raise UserError(f"--checkpoints {checkpoints}: not a directory")
        found = find_bundles(checkpoints)
        if not found:
            raise UserError(f"--checkpoints {checkpoints}: no bundles (folders holding spec.json) found")
        return found
    import mlflow
    from .. import tracking as trk
    trk.setup(tracking_uri, run_dir)
    exp = mlflow.get_experiment_by_name(from_mlflow)
    if exp is None:
        raise UserError(f"--from-mlflow: no MLflow experiment named '{from_mlflow}'")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              output_format="list")
    dest = os.path.join(trk.run_dir(run_dir), "cache", "mlflow-bundles", from_mlflow)
    out = []
    for r in runs:
        local = os.path.join(dest, r.info.run_id)
        if not os.path.exists(os.path.join(local, "spec.json")):
            try:
                got = mlflow.artifacts.download_artifacts(run_id=r.info.run_id, artifact_path="bundle", dst_path=local)
            except Exception:          # a run without a bundle artifact (a parent run, a failed trial)
                continue
            if os.path.normpath(got) != os.path.normpath(local):
                local = got
        if os.path.exists(os.path.join(local, "spec.json")):
            out.append(local)
    if not out:
        raise UserError(f"--from-mlflow {from_mlflow}: no run has a bundle artifact")
    return sorted(out)


def _valid_data(bundle_paths: list[str], data_dir: str | None):
    from ..training.bundle import read_spec
    spec = read_spec(bundle_paths[0])
    d = data_dir or spec["data"].get("data_dir")
    if not d or not os.path.exists(os.path.join(d, "valid.parquet")):
        raise UserError("cannot find the valid file the bundles were scored on; pass --data DIR")
    return d, load(os.path.join(d, "valid.parquet")), spec["data"]["split"]


def run_ensemble(*, checkpoints: str | None = None, from_mlflow: str | None = None, data_dir: str | None = None,
                 budget_minutes: float = 60.0, safety: float = 2.0, n_seq_test: int = 1500, out: str | None = None,
                 methods=("uniform", "greedy", "weighted"), tracking_uri: str | None = None,
                 run_dir: str | None = None, use_mlflow: bool = True, register: bool = True,
                 n_boot: int = 200, seed: int = 0, precision: str = "float32") -> dict:
    """Select an ensemble from bundles and write its spec. Returns a summary.

    ``precision``: the weight storage the zip will use; members cost what the engine measures in that mode.
    """
    from .. import tracking as trk
    from ..submission.cost import ensemble_cost_ms, member_costs
    if budget_minutes <= 0 or safety < 1:
        raise UserError(f"--budget-minutes must be > 0 and the safety factor >= 1, got {budget_minutes}, {safety}")
    paths = collect_bundles(checkpoints, from_mlflow, tracking_uri, run_dir)
    data_dir, valid, split = _valid_data(paths, data_dir)
    n_rows = int(valid.mask.sum())
    members, rejected = [], []
    for p in paths:
        try:
            members.append(validate_bundle(p, valid.fingerprint, n_rows))
        except BundleError as exc:
            rejected.append({"bundle": p, "reason": str(exc)})
    if not members:
        raise UserError(f"no usable bundle among {len(paths)}; first problem: {rejected[0]['reason']}")
    rows = selection_rows(members, valid, split, data_dir)
    costs = member_costs([m.path for m in members], precision)
    budget = budget_from_minutes(budget_minutes, n_seq=n_seq_test, safety=safety)
    floor = floor_members(checkpoints, members)
    rep = select_ensemble(rows.P_tune, rows.Y_tune, rows.g_tune, rows.P_report, rows.Y_report, rows.g_report,
                          costs=costs, budget=budget, methods=methods, seed=seed, n_boot=n_boot, floor=floor)
    P = rows.P_report
    W = np.asarray(rep.weights)
    keep = np.flatnonzero(W.sum(axis=1) > 0)
    W_keep = W[keep] / W[keep].sum(axis=0, keepdims=True)
    used_row = next(r for r in rep.table() if r["method"] == rep.used)
    oracle = _oracle_report(data_dir, valid, rows.report_rows)
    spec = {"format": FORMAT, "members": [members[i].path for i in keep], "weights": W_keep.tolist(),
            "post_scale": [float(s) for s in np.asarray(rep.scale if rep.scale is not None else [1.0, 1.0])],
            "method": rep.used, "chosen": rep.chosen, "fell_back_to_uniform": rep.fell_back_to_uniform,
            "reference": rep.reference, "floor": [members[i].path for i in floor],
            "reason": rep.reason, "report_note": rep.report_note, "tune_gain": rep.tune_gain,
            "selected_on": rows.selected_on, "tune_score": used_row["tune_cv_mean"],
            "honest_report": rows.honest, "report": used_row, "table": rep.table(),
            "budget_ms_per_step": float(budget), "cost_ms_per_step": float(costs[keep].sum()),
            "measured_ms_per_step": ensemble_cost_ms([members[i].path for i in keep], weights=W_keep,
                                                     precision=precision),
            "budget_minutes": budget_minutes, "safety": safety, "precision": precision, "rejected": rejected,
            "data": {"valid_fingerprint": valid.fingerprint, "split": split, "data_dir": data_dir},
            "fraction_of_oracle": (used_row["mean"] / oracle["mean"]) if oracle else None,
            "oracle_report": oracle, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "candidates": [m.path for m in members], "details": rep.to_dict()}
    out = out or os.path.join(trk.run_dir(run_dir), "ensemble", "ensemble.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(spec, f, indent=1, default=float)
    os.replace(out + ".tmp", out)
    summary = {"spec_path": os.path.abspath(out), "spec": spec, "members": [m.name for m in members],
               "rejected": rejected, "P": P, "names": [m.name for m in members], "W": W}
    if use_mlflow:
        summary.update(log_ensemble(spec, out, summary, tracking_uri, run_dir, register))
    return summary


def floor_members(checkpoints: str | None, members: list) -> list[int]:
    """Indices of the pool's floor members (retrain's ``floor.json``: the strongest default's
    seeds); none for a pool without one (bundles from elsewhere, or from MLflow)."""
    from ..training.member import FLOOR_FILE
    path = os.path.join(checkpoints, FLOOR_FILE) if checkpoints else None
    if not path or not os.path.isfile(path):
        return []
    try:
        with open(path) as fh:
            names = set(json.load(fh).get("members") or [])
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: not a floor file ({exc})") from None
    return [i for i, m in enumerate(members) if os.path.basename(m.path) in names]


def _oracle_report(data_dir: str, valid, report_rows: np.ndarray) -> dict | None:
    path = os.path.join(data_dir, "oracle_valid.parquet")
    if not os.path.exists(path):
        return None
    O = load_oracle(path, valid)[valid.mask]
    return score(valid.Y[valid.mask][report_rows], O[report_rows])


def format_table(spec: dict) -> str:
    """The comparison table as aligned text (the CLI and the flows print it)."""
    rep = "report" if spec.get("honest_report", True) else "report*"
    lines = [f"{'method':<12}{'tune cv':>8}{'t0':>8}{'t1':>8}{'mean':>8}   {'95% CI':<17}{'members':>8}{'ms/step':>9}"
             f"   ({'t0, t1, mean, CI' + ' on ' + rep})"]
    for r in spec["table"]:
        mark = " <- used" if r["method"] == spec["method"] else ""
        lines.append(f"{r['method']:<12}{r['tune_cv_mean']:>8.4f}{r['t0']:>8.4f}{r['t1']:>8.4f}{r['mean']:>8.4f}   "
                     f"[{r['ci_lo']:.4f}, {r['ci_hi']:.4f}] {r['n_members']:>7}{r['cost']:>9.3f}{mark}")
    lines.append(f"chosen on {spec.get('selected_on', 'tune')}: {spec['chosen']}; used: {spec['method']}. "
                 f"{spec['reason']}")
    if spec.get("report_note"):
        lines.append(f"note: {spec['report_note']}")
    if not spec.get("honest_report", True):
        lines.append(f"* {NO_HONEST_SCORE}")
    if spec.get("fraction_of_oracle") is not None:
        lines.append(f"report score {spec['report']['mean']:.4f} = {100 * spec['fraction_of_oracle']:.1f}% of the oracle")
    return "\n".join(lines)


def log_ensemble(spec: dict, spec_path: str, summary: dict, tracking_uri, run_dir, register: bool) -> dict:
    import mlflow
    from .. import tracking as trk
    from .plots import correlation_figure, table_figure, weights_figure
    exp = trk.ensure_experiment("ensemble", tracking_uri, run_dir)
    with mlflow.start_run(experiment_id=exp, run_name=f"ensemble-{spec['method']}",
                          tags={"stage": "ensemble", "method": spec["method"], "chosen": spec["chosen"],
                                "fell_back_to_uniform": str(spec["fell_back_to_uniform"]),
                                "selected_on": spec["selected_on"], "honest_report": str(spec["honest_report"]),
                                **({"note": NO_HONEST_SCORE} if not spec["honest_report"] else {})}) as run:
        mlflow.log_params({"budget_minutes": spec["budget_minutes"], "safety": spec["safety"],
                           "n_candidates": len(spec["candidates"]), "n_members": len(spec["members"])})
        for r in spec["table"]:
            mlflow.log_metrics({f"{r['method']}_report_{k}": float(r[k]) for k in ("t0", "t1", "mean")})
        rep = spec["report"]
        metrics = {"tune_mean": spec["tune_score"],
                   "report_t0": rep["t0"], "report_t1": rep["t1"], "report_mean": rep["mean"],
                   "ms_per_step": spec["cost_ms_per_step"], "measured_ms_per_step": spec["measured_ms_per_step"],
                   "n_members": len(spec["members"])}
        if spec.get("fraction_of_oracle") is not None:
            metrics["fraction_of_oracle"] = spec["fraction_of_oracle"]
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_artifact(spec_path)
        mlflow.log_text(format_table(spec), "comparison_table.txt")
        trk.log_figure(table_figure(spec), "comparison_table.png")
        trk.log_figure(weights_figure(summary["names"], summary["W"]), "weights_per_target.png")
        trk.log_figure(correlation_figure(summary["names"], summary["P"]), "member_correlation.png")
        run_id = run.info.run_id
    out = {"mlflow_run_id": run_id}
    if register:
        out.update(register_champion(run_id, spec["tune_score"]))
    return out


def register_champion(run_id: str, tune_score: float) -> dict:
    """A registry version for this ensemble; alias ``champion`` moves to it when its tune score
    (cross-fitted, or out-of-fold) beats the holder's. The report score plays no part."""
    import mlflow
    from mlflow.tracking import MlflowClient
    client = MlflowClient()
    try:
        client.get_registered_model(REGISTERED_MODEL)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(REGISTERED_MODEL, description="lob-sweep ensembles; alias champion = "
                                       "best cross-fitted tune (or out-of-fold) score")
    run = client.get_run(run_id)
    mv = client.create_model_version(REGISTERED_MODEL, source=f"{run.info.artifact_uri}", run_id=run_id)
    current = None
    try:
        holder = client.get_model_version_by_alias(REGISTERED_MODEL, "champion")
        current = client.get_run(holder.run_id).data.metrics.get("tune_mean")
    except mlflow.exceptions.MlflowException:
        holder = None
    promoted = current is None or tune_score > current
    if promoted:
        client.set_registered_model_alias(REGISTERED_MODEL, "champion", mv.version)
    return {"registry_version": int(mv.version), "champion": promoted, "previous_champion_tune_mean": current}
