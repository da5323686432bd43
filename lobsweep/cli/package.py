"""CLI commands of the packaging stage: ``lobsweep package``, ``score`` and ``baseline``."""

from __future__ import annotations

import json
import os
import sys

from ..submission.engine_weights import PRECISIONS
from .core import arguments, command


def _package_args(p):
    p.add_argument("--members", default=None, help="comma-separated bundle directories")
    p.add_argument("--weights", default=None,
                   help="an ensemble spec JSON (its members, weights and post_scale are used), "
                        "or a JSON list [[w_t0, w_t1], ...] in --members order; default: uniform")
    p.add_argument("--out", required=True, help="zip path to write")
    p.add_argument("--max-mb", type=float, default=20.0, help="size limit in MB (10^6 bytes)")
    p.add_argument("--precision", default="float16", choices=PRECISIONS,
                   help="how weight matrices are stored in the zip (decoded to float32 once at load); a compact "
                        "mode must keep each member's and the ensemble's score on the report rows within 1e-4 "
                        "of float32 (default: float16); int8-ort also ships onnxruntime int8 step graphs of the "
                        "GRU groups (needs onnx here), gated by streaming the first 32 report sequences")
    p.add_argument("--fallback", action="store_true",
                   help="store a member that fails the precision gate in float32 instead of refusing")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="dataset whose valid report rows the precision gate scores (default: the one the "
                        "members were trained on)")
    p.add_argument("--verify", default=None, metavar="DATA",
                   help="then score the zip step by step on this valid file (or DIR holding valid.parquet) "
                        "and check it matches the members' offline predictions to 1e-4 (a float16/int8 zip: "
                        "their score to 1e-4)")


def resolve_members(members_arg: str | None, weights_arg: str | None):
    """(member paths, weights or None, post_scale) from the command line; one-line UserError on a mismatch."""
    import os

    from ..errors import UserError, read_json
    from ..submission.package import SPEC_FORMAT, read_ensemble_spec

    given = [m.strip() for m in (members_arg or "").split(",") if m.strip()]
    if weights_arg is None:
        if not given:
            raise UserError("give --members B1,B2,... or --weights ENSEMBLE_SPEC.json")
        return given, None, (1.0, 1.0)
    try:
        data = read_json(weights_arg)
    except FileNotFoundError:
        raise UserError(f"--weights file not found: {weights_arg}") from None
    if isinstance(data, dict) and data.get("format") == SPEC_FORMAT:
        members, weights, post_scale = read_ensemble_spec(weights_arg)
        if given:
            norm = {os.path.realpath(m) for m in members}
            extra = [m for m in given if os.path.realpath(m) not in norm]
            missing = [m for m in members if os.path.realpath(m) not in {os.path.realpath(g) for g in given}]
            if extra or missing:
                what = f"not in the spec: {', '.join(extra)}" if extra else f"missing: {', '.join(missing)}"
                raise UserError(f"--members do not match the members of {weights_arg} ({what})")
        return members, weights, post_scale
    if isinstance(data, list):
        if not given:
            raise UserError(f"{weights_arg} holds bare weights; give the members with --members")
        return given, data, (1.0, 1.0)
    raise UserError(f"{weights_arg}: expected an ensemble spec (format {SPEC_FORMAT!r}) or a list of [w_t0, w_t1]")


def _member_lines(info: dict) -> list[str]:
    """Per member: stored mode, bytes in the zip (a bag's K models summed) and, for a compact mode,
    the gate's score delta; then the ensemble's."""
    members: dict[str, list] = {}
    for name, nbytes in info["member_bytes"].items():
        entry = members.setdefault(name.split("#fold")[0], [info["member_precision"][name], 0])
        entry[1] += nbytes
    gate = {g["name"]: g for g in (info["gate"] or {}).get("members", [])}
    lines = []
    for name, (mode, nbytes) in members.items():
        line = f"  {name}: {mode}, {nbytes / 1e6:.3f} MB"
        g = gate.get(name)
        if g is not None:
            delta = f"{g['delta']:+.1e}" if not g.get("problem") else g["problem"]
            line += f"; {info['precision']} score delta {delta}"
            line += f" (kept in float32: {g['fell_back']})" if g.get("fell_back") else ""
        lines.append(line)
    if info["gate"]:
        e = info["gate"]["ensemble"]
        rows = (f"the first {e['streamed_seqs']} report sequences (streamed)" if "streamed_seqs" in e
                else "the report rows")
        lines.append(f"  ensemble score {e['score32']:.6f} (float32) -> {e['score']:.6f} ({e['delta']:+.1e}) on "
                     f"{rows} of {info['gate']['data']}")
        if e.get("fell_back"):
            lines.append(f"  stored in float32: {e['fell_back']} (--fallback)")
        elif info["gate"].get("paths"):
            lines += [f"  {p}" for p in info["gate"]["paths"]]
    return lines


@command("package", "package bundles into a submission zip (fused numpy engine, parity-checked)")
@arguments(_package_args)
def cmd_package(args):
    import os

    from ..errors import UserError
    from ..submission.package import package, parity_check

    members, weights, post_scale = resolve_members(args.members, args.weights)
    info = package(members, args.out, weights=weights, post_scale=post_scale, max_bytes=int(args.max_mb * 1e6),
                   precision=args.precision, fallback=args.fallback, data_dir=args.data)
    fams = ", ".join(f"{k} x{v}" for k, v in info["families"].items())
    line = (f"wrote {info['path']}: {info['bytes'] / 1e6:.2f} MB ({args.precision} weights), {info['n_members']} "
            f"members ({fams}), {info['n_pipelines']} feature pipeline(s)")
    if info["skipped"]:
        line += f"; left out (zero weight): {', '.join(info['skipped'])}"
    if info["n_models"] != info["n_members"]:
        line += f"; {info['n_models']} models in all (bagged members stream their K fold models, averaged)"
    print(line)
    print("\n".join(_member_lines(info)))
    if info.get("note"):
        print(f"note: {info['note']}")
    if args.verify:
        data = os.path.join(args.verify, "valid.parquet") if os.path.isdir(args.verify) else args.verify
        res = parity_check(info["path"], data)
        status = "ok" if res["parity_ok"] else "FAILED"
        check = (f"max |zip - offline| = {res['max_abs_diff']:.2g}" if res["mode"] == "prediction" else
                 f"score - float32 offline score = {res['score_delta']:+.2g} (max |zip - offline| "
                 f"{res['max_abs_diff']:.2g})")
        print(f"parity {status}: {check} over {res['rows']} rows; "
              f"weighted_pearson={res['weighted_pearson']:.4f}, {res['ms_per_row']:.3f} ms/row, "
              f"projected {res['projected_minutes_1500_seq']:.1f} min for 1500 sequences")
        if not res["parity_ok"]:
            what = ("streamed predictions differ from the offline ones by " + f"{res['max_abs_diff']:.2g}"
                    if res["mode"] == "prediction" else
                    f"its score differs from the float32 offline score by {res['score_delta']:+.2g}")
            raise UserError(f"{info['path']}: {what} (> 1e-4)")


@command("score", "score a submission zip step by step, exactly as the competition does")
@arguments(lambda p: (p.add_argument("zip"), p.add_argument("--data", required=True,
                  help="a valid-style parquet file, or a DIR holding valid.parquet"),
                  p.add_argument("--json", action="store_true"),
                  p.add_argument("--max-rows", type=int, default=None)))
def cmd_score(args):
    from ..submission.scorer import score_zip
    data = args.data
    if os.path.isdir(data):
        data = os.path.join(data, "valid.parquet")
    res = score_zip(args.zip, data, progress=not args.json and sys.stderr.isatty(), max_rows=args.max_rows)
    pred = res.pop("predictions", None)
    from ..submission.package import zip_reference_predictions
    reference = zip_reference_predictions(args.zip)      # None for zips whose bundles are not here
    if reference is not None and pred is not None and reference.shape[0] >= pred.shape[0]:
        res["parity_max_abs_diff"] = float(abs(pred - reference[:pred.shape[0]]).max())
    if args.json:
        print(json.dumps(res, default=float))
        return
    line = (f"weighted_pearson={res['weighted_pearson']:.4f} (t0={res['t0']:.4f}, t1={res['t1']:.4f}) "
            f"rows={res['rows']} {res['ms_per_row']:.3f} ms/row, "
            f"projected {res['projected_minutes_1500_seq']:.1f} min for 1500 sequences")
    if "oracle_fraction" in res:
        line += f", {100 * res['oracle_fraction']:.1f}% of oracle"
    if "parity_max_abs_diff" in res:
        line += f", streamed vs offline max |diff| {res['parity_max_abs_diff']:.1e}"
    print(line)


@command("baseline", "fit the trivial EMA-imbalance baseline and write its submission zip")
@arguments(lambda p: (p.add_argument("--data", required=True, help="DIR holding train.parquet"),
                  p.add_argument("--out", required=True, help="zip path to write")))
def cmd_baseline(args):
    from ..submission.baseline import fit_baseline, write_baseline_zip
    from ..data.loader import data_paths
    params = fit_baseline(data_paths(args.data)["train"])
    write_baseline_zip(params, args.out)
    print(f"wrote {args.out}")
