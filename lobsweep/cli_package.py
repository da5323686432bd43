"""`lobsweep package`: checkpoint bundles (+ ensemble weights) -> submission zip."""

from __future__ import annotations

from .cli import _args, command


def _package_args(p):
    p.add_argument("--members", default=None, help="comma-separated bundle directories")
    p.add_argument("--weights", default=None,
                   help="an ensemble spec JSON (its members, weights and post_scale are used), "
                        "or a JSON list [[w_t0, w_t1], ...] in --members order; default: uniform")
    p.add_argument("--out", required=True, help="zip path to write")
    p.add_argument("--max-mb", type=float, default=20.0, help="size limit in MB (10^6 bytes)")
    p.add_argument("--verify", default=None, metavar="DATA",
                   help="then score the zip step by step on this valid file (or DIR holding valid.parquet) "
                        "and check it matches the members' offline predictions to 1e-4")


def resolve_members(members_arg: str | None, weights_arg: str | None):
    """(member paths, weights or None, post_scale) from the command line; one-line UserError on a mismatch."""
    import os

    from .errors import UserError, read_json
    from .submission.package import SPEC_FORMAT, read_ensemble_spec

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


@command("package", "package bundles into a submission zip (fused numpy engine, parity-checked)")
@_args(_package_args)
def cmd_package(args):
    import os

    from .submission.package import package, parity_check

    members, weights, post_scale = resolve_members(args.members, args.weights)
    info = package(members, args.out, weights=weights, post_scale=post_scale, max_bytes=int(args.max_mb * 1e6))
    fams = ", ".join(f"{k} x{v}" for k, v in info["families"].items())
    line = (f"wrote {info['path']}: {info['bytes'] / 1e6:.2f} MB, {info['n_members']} members ({fams}), "
            f"{info['n_pipelines']} feature pipeline(s)")
    if info["skipped"]:
        line += f"; left out (zero weight): {', '.join(info['skipped'])}"
    if info["n_models"] != info["n_members"]:
        line += f"; {info['n_models']} models in all (bagged members stream their K fold models, averaged)"
    print(line)
    if info.get("note"):
        print(f"note: {info['note']}")
    if args.verify:
        data = os.path.join(args.verify, "valid.parquet") if os.path.isdir(args.verify) else args.verify
        res = parity_check(info["path"], data)
        status = "ok" if res["parity_ok"] else "FAILED"
        print(f"parity {status}: max |zip - offline| = {res['max_abs_diff']:.2g} over {res['rows']} rows; "
              f"weighted_pearson={res['weighted_pearson']:.4f}, {res['ms_per_row']:.3f} ms/row, "
              f"projected {res['projected_minutes_1500_seq']:.1f} min for 1500 sequences")
        if not res["parity_ok"]:
            from .errors import UserError, read_json
            raise UserError(f"{info['path']}: streamed predictions differ from the offline ones by "
                            f"{res['max_abs_diff']:.2g} (> 1e-4)")
