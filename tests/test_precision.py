"""Compact weight storage: float16 / int8 round trips, the score gate, fallback, size and cost.

Members are tiny real models trained one epoch on a small synthetic dataset, plus two
made from the GRU to break one mode on purpose: "outlier" (an int8 row scale blown up
by weights that multiply a unit which is always 0, so float32 computes the GRU's own
function while int8 rounds the rest of those rows to 0) and "huge" (a weight beyond
float16's range in the same dead spot). Zips are scored by the real step-by-step scorer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from lobsweep.cli import main as cli_main
from lobsweep.data.synth import write_dataset
from lobsweep.errors import UserError
from lobsweep.submission import cost
from lobsweep.submission.engine_weights import SCALE_SUFFIX, decode, encode, round_trip
from lobsweep.data.metric import score
from lobsweep.submission.assemble import engine_from_bundles
from lobsweep.submission.package import PackageError, package, read_manifest
from lobsweep.submission.precision import PrecisionError, _predict, gate_data, stream_predictions
from lobsweep.submission.scorer import score_zip
from lobsweep.training.bundle import load_bundle, save_bundle
from lobsweep.training.member import predict_bundle, train_member
from test_package import PROBE

GATE = 1e-4
# Big enough that the members learn some signal and the report split has 32 sequences: the score moves
# that float16 causes shrink with the spread of the predictions and the number of rows (about 1e-5 here;
# one-epoch members on 4 report sequences moved by up to 1e-4, too close to the gate for a test).
TRAIN = {"epochs": 3, "batch_size": 8, "device": "cpu"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("prec-data")
    write_dataset(str(d), n_train=32, n_valid=64, seed=0)
    return str(d)


def _broken_copy(src: str, dest: str, outlier: float, valid_path: str) -> str:
    """The GRU with in_proj unit 0 silenced and ``outlier`` in every row of the weights that read it."""
    b = load_bundle(src)
    sd = b.state_dict()
    sd["in_proj.weight"][0] = 0.0
    sd["in_proj.bias"][0] = 0.0
    sd["rnn.weight_ih_l0"][:, 0] = outlier
    model = b.build_model()
    model.load_state_dict(sd)
    save_bundle(dest, model, b.spec, b.valid_pred)
    save_bundle(dest, model, b.spec, predict_bundle(dest, valid_path))      # its own float32 predictions
    return dest


@pytest.fixture(scope="module")
def members(data_dir, tmp_path_factory) -> dict[str, str]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("prec-bundles")
    out = {}
    for seed, (name, hp) in enumerate([("gru", {"hidden": 24, "layers": 2, "head_hidden": 8}),
                                       ("lstm", {"hidden": 24, "layers": 2, "head": "linear"})]):
        out[name] = train_member(data_dir, name, str(root / name), hparams=hp, train_cfg=TRAIN, seed=seed).path
    valid = os.path.join(data_dir, "valid.parquet")
    out["outlier"] = _broken_copy(out["gru"], str(root / "outlier"), 100.0, valid)
    out["huge"] = _broken_copy(out["gru"], str(root / "huge"), 1e6, valid)
    return out


@pytest.fixture(scope="module")
def valid_path(data_dir):
    return os.path.join(data_dir, "valid.parquet")


def scored(zip_path, valid_path, max_rows=None) -> dict:
    return score_zip(zip_path, valid_path, progress=False, max_rows=max_rows)


# ---------------------------------------------------------------- round trips
def _state(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"rnn.weight_hh_l0": rng.normal(0, 0.3, (48, 16)).astype(np.float32),
            "head.out.weight": rng.normal(0, 2.0, (2, 16)).astype(np.float32),
            "rnn.bias_hh_l0": rng.normal(0, 0.3, 48).astype(np.float32),
            "norm.weight": rng.normal(1, 0.1, 16).astype(np.float32),
            "blocks.0.attn.rel_bias": rng.normal(0, 0.1, (2, 8)).astype(np.float32)}


def test_float16_round_trip_is_within_half_an_ulp_and_leaves_small_arrays_exact():
    sd = _state()
    stored = encode(sd, "float16")
    assert stored["rnn.weight_hh_l0"].dtype == np.float16 and stored["head.out.weight"].dtype == np.float16
    back = decode(stored)
    for name, w in sd.items():
        assert back[name].dtype == np.float32
        if name.endswith(("weight_hh_l0", "out.weight")):
            assert np.all(np.abs(back[name] - w) <= np.abs(w) * 2.0 ** -11 + 2.0 ** -25)    # half an ulp
            assert stored[name].nbytes * 2 == w.nbytes
        else:                    # biases, norm gains, attention biases: float32, bit for bit
            np.testing.assert_array_equal(back[name], w)


def test_int8_round_trip_error_is_at_most_half_a_step_of_its_row():
    sd = _state()
    sd["rnn.weight_hh_l0"][3] = 0.0                          # a row of zeros stays exactly zero
    stored = encode(sd, "int8")
    q, s = stored["rnn.weight_hh_l0"], stored["rnn.weight_hh_l0" + SCALE_SUFFIX]
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (48,) and np.abs(q).max() == 127
    back = round_trip(sd, "int8")
    for name in ("rnn.weight_hh_l0", "head.out.weight"):
        w = sd[name]
        step = np.abs(w).max(axis=1, keepdims=True) / 127
        assert np.all(np.abs(back[name] - w) <= step / 2 * (1 + 1e-5) + 1e-8)
    assert np.all(back["rnn.weight_hh_l0"][3] == 0.0)
    np.testing.assert_array_equal(back["rnn.bias_hh_l0"], sd["rnn.bias_hh_l0"])
    assert set(back) == set(sd)                              # scales never leak into the state_dict


def test_weights_a_mode_cannot_hold_are_refused():
    sd = _state()
    sd["rnn.weight_hh_l0"][0, 0] = 1e6
    with pytest.raises(ValueError, match="float16's range"):
        encode(sd, "float16")
    sd["rnn.weight_hh_l0"][0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        encode(sd, "int8")
    with pytest.raises(ValueError, match="unknown precision"):
        encode(sd, "int4")


# ---------------------------------------------------------------- the zip
# test_package's clean-room probe (imports the zip, predicts 120 rows, prints the modules it imported), with
# every other package of the container made unimportable first
NUMPY_ONLY_PROBE = """
import sys
for name in ("torch", "onnxruntime", "pandas", "pyarrow", "scipy", "lobsweep"):
    sys.modules[name] = None                     # importing any of them now raises ImportError
""" + PROBE


def test_float16_zip_runs_on_numpy_alone_and_scores_within_the_gate_of_the_float32_zip(members, valid_path, tmp_path):
    paths = [members["gru"], members["lstm"]]
    f32 = package(paths, str(tmp_path / "f32.zip"))
    f16 = package(paths, str(tmp_path / "f16.zip"), precision="float16")
    assert {m["precision"] for m in read_manifest(f16["path"])["members"]} == {"float16"}
    assert f16["bytes"] < f32["bytes"] and all(f16["member_bytes"][n] < f32["member_bytes"][n] for n in ("gru", "lstm"))
    a, b = scored(f32["path"], valid_path), scored(f16["path"], valid_path)
    assert abs(b["weighted_pearson"] - a["weighted_pearson"]) <= GATE
    assert np.abs(b["predictions"] - a["predictions"]).max() > 0       # it really computed with other weights

    sol = tmp_path / "solution"
    with zipfile.ZipFile(f16["path"]) as zf:
        zf.extractall(sol)
    (tmp_path / "probe.py").write_text(NUMPY_ONLY_PROBE)
    out = subprocess.run([sys.executable, "-I", str(tmp_path / "probe.py"), str(sol)], capture_output=True,
                         text=True, cwd=tmp_path, check=True)
    imported = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert imported - set(sys.stdlib_module_names) - {"solution", "lsrt_engine", "lsrt_features"} == {"numpy"}


def test_zip_computes_what_the_gate_scores_for_int8(members, valid_path, tmp_path):
    """The gate scores the batch forward over the decoded weights; the int8 zip streams the same numbers."""
    z = package([members["gru"]], str(tmp_path / "i8.zip"), precision="int8", tolerance=1.0)
    P = scored(z["path"], valid_path, max_rows=8000)["predictions"]           # the first 8 sequences
    b = load_bundle(members["gru"])
    from lobsweep.data.loader import load
    valid = load(valid_path)
    decoded = [round_trip({k: v.numpy() for k, v in b.state_dict().items()}, "int8")]
    ref = _predict(b, decoded, b.pipeline().transform(valid.X[:8]), valid.mask[:8])
    assert np.abs(P - ref).max() <= 1e-4
    assert np.abs(P - b.valid_pred[:len(P)]).max() > 1e-3      # and int8 really moved the predictions


def test_a_bagged_member_is_gated_as_one_and_stores_all_its_folds_compact(members, valid_path, tmp_path):
    """A K=2 bag (the GRU and a noise-perturbed copy): one gate line, both fold models in float16."""
    b = load_bundle(members["gru"])
    rng = np.random.default_rng(0)
    sets = {f"fold0.{k}": v for k, v in b.state_dict().items()}
    sets.update({f"fold1.{k}": v * (1 + 0.05 * torch.from_numpy(rng.standard_normal(tuple(v.shape)).astype(np.float32)))
                 for k, v in b.state_dict().items()})
    spec = {**b.spec, "bag": {"k": 2}}
    bag = save_bundle(str(tmp_path / "bag"), b.build_model(), spec, b.valid_pred, state_dict=sets)
    save_bundle(bag, b.build_model(), spec, predict_bundle(bag, valid_path), state_dict=sets)
    paths = [bag, members["lstm"]]
    f16 = package(paths, str(tmp_path / "f16.zip"), precision="float16")
    assert f16["n_models"] == 3 and [g["name"] for g in f16["gate"]["members"]] == ["bag", "lstm"]
    assert f16["member_precision"] == {"bag#fold0": "float16", "bag#fold1": "float16", "lstm": "float16"}
    f32 = package(paths, str(tmp_path / "f32.zip"))
    a, c = scored(f32["path"], valid_path), scored(f16["path"], valid_path)
    assert abs(a["weighted_pearson"] - c["weighted_pearson"]) <= GATE


# ---------------------------------------------------------------- the gate
def _one_line_refusal(capsys, code) -> str:
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_gate_refuses_a_member_int8_cannot_represent_in_one_line_and_writes_nothing(members, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code = cli_main(["package", "--members", f"{members['gru']},{members['outlier']}", "--precision", "int8",
                     "--fallback", "--out", str(out / "ok.zip")])
    assert code == 0                                          # with --fallback it is stored in float32
    manifest = read_manifest(str(out / "ok.zip"))
    assert {m["name"]: m["precision"] for m in manifest["members"]}["outlier"] == "float32"
    os.remove(out / "ok.zip")
    capsys.readouterr()
    code = cli_main(["package", "--members", members["outlier"], "--precision", "int8", "--out", str(out / "z.zip")])
    err = _one_line_refusal(capsys, code)
    assert "member outlier" in err and "int8 changes its score by" in err and "--fallback" in err
    assert os.listdir(out) == []


def test_gate_compares_real_scores(members, tmp_path):
    """At a tolerance below float16's own rounding effect, the same member is refused."""
    with pytest.raises(PrecisionError, match=r"member gru: float16 changes its score by [-+]\d"):
        package([members["gru"]], str(tmp_path / "z.zip"), precision="float16", tolerance=1e-12)
    assert os.listdir(tmp_path) == []


def test_fallback_keeps_the_failing_member_in_float32_and_the_rest_compact(members, valid_path, tmp_path, capsys):
    paths = [members["gru"], members["huge"]]
    with pytest.raises(PrecisionError, match="member huge: float16 cannot store its weights"):
        package(paths, str(tmp_path / "refused.zip"), precision="float16")
    info = package(paths, str(tmp_path / "fb.zip"), precision="float16", fallback=True)
    assert info["member_precision"] == {"gru": "float16", "huge": "float32"}
    assert [g["stored"] for g in info["gate"]["members"]] == ["float16", "float32"]
    f32 = package(paths, str(tmp_path / "f32.zip"))
    a, b = scored(f32["path"], valid_path), scored(info["path"], valid_path)
    assert abs(a["weighted_pearson"] - b["weighted_pearson"]) <= GATE
    assert not (tmp_path / "refused.zip").exists()


def test_gate_without_a_dataset_is_one_line_and_float32_needs_none(members, tmp_path):
    with pytest.raises(UserError, match="--data .*no valid.parquet"):
        package([members["gru"]], str(tmp_path / "z.zip"), precision="int8", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="precision must be one of float32, float16, int8"):
        package([members["gru"]], str(tmp_path / "z.zip"), precision="int4")
    assert os.listdir(tmp_path) == []
    package([members["gru"]], str(tmp_path / "z.zip"), data_dir=str(tmp_path / "nowhere"))    # no gate to run


# ---------------------------------------------------------------- size, verify, cost
def test_size_limit_counts_the_compressed_zip_bytes(members, tmp_path):
    paths = [members["gru"], members["lstm"]]
    f16 = package(paths, str(tmp_path / "f16.zip"), precision="float16")
    with zipfile.ZipFile(f16["path"]) as zf:
        unpacked = sum(i.file_size for i in zf.infolist())
    assert unpacked > f16["bytes"]
    again = package(paths, str(tmp_path / "again.zip"), precision="float16", max_bytes=f16["bytes"])
    assert again["bytes"] == f16["bytes"]                   # fits exactly, though it unpacks to more
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PackageError, match="over the"):
        package(paths, str(out / "f32.zip"), max_bytes=f16["bytes"])     # float32 does not fit the same limit
    assert os.listdir(out) == []


def test_cli_verify_checks_the_score_of_a_compact_zip(members, data_dir, tmp_path, capsys):
    z = tmp_path / "sub.zip"
    code = cli_main(["package", "--members", f"{members['gru']},{members['lstm']}", "--out", str(z),
                     "--data", data_dir, "--verify", data_dir])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(float16 weights)" in out and "parity ok: score - float32 offline score" in out
    assert "  gru: float16" in out and "float16 score delta" in out and "ensemble score" in out


def test_member_cost_is_measured_and_cached_per_precision(members, tmp_path, monkeypatch):
    b = str(tmp_path / "gru")
    shutil.copytree(members["gru"], b)
    built = []
    real = cost.engine_from_bundles
    monkeypatch.setattr(cost, "engine_from_bundles", lambda *a, **k: built.append(k["precision"]) or real(*a, **k))
    assert cost.member_cost_ms(b, steps=120, precision="int8") > 0
    assert cost.member_cost_ms(b, steps=120, precision="int8") > 0 and built == ["int8"]     # cached
    record = json.load(open(os.path.join(b, "latency-int8.json")))
    assert record["precision"] == "int8" and not os.path.exists(os.path.join(b, cost.LATENCY_FILE))
    cost.member_cost_ms(b, steps=120)
    assert built == ["int8", "float32"] and os.path.exists(os.path.join(b, cost.LATENCY_FILE))


def test_gate_data_is_the_report_split_of_the_members_dataset(members, data_dir):
    from lobsweep.data.loader import load
    from lobsweep.data.splits import split_roles
    b = load_bundle(members["gru"])
    g = gate_data(None, [b])
    valid = load(os.path.join(data_dir, "valid.parquet"))
    _, report = split_roles(valid.seq_ix, b.spec["data"]["split"]["tune_frac"], b.spec["data"]["split"]["seed"])
    np.testing.assert_array_equal(g.X, valid.X[report])
    assert 0 < len(g.X) < valid.n_seq


def test_onnxruntime_step_graph_matches_the_numpy_engine_and_int8_stays_close(members):
    """engine_ort.py: float32 graph = the numpy engine; int8 matrices move predictions a little."""
    from lobsweep.submission.engine_ort import ORTEngine
    paths = [members["gru"], members["outlier"]]
    engines = [engine_from_bundles(paths), ORTEngine(engine_from_bundles(paths)),
               ORTEngine(engine_from_bundles(paths), quantize=True)]
    rows = cost.sample_rows(150, seed=3)
    for e in engines:
        e.reset()
    P = np.array([[e.step(r) for e in engines] for r in rows])        # [rows, engine, 2]
    assert np.abs(P[:, 1] - P[:, 0]).max() <= 1e-5
    assert 0 < np.abs(P[:, 2] - P[:, 0]).max() <= 0.1 * np.abs(P[:, 0]).max()
    with pytest.raises(ValueError, match="plain GRU groups only"):
        ORTEngine(engine_from_bundles([members["lstm"]]))


# ---------------------------------------------------------------- int8-ort: onnxruntime int8 graphs in the zip
# Streams report sequences through the unpacked zip in a clean subprocess: argv = solution dir, npz of raw X
# [N, T, 32] and mask [N, T], output .npy, comma-separated modules made unimportable first. Prints the modules
# the zip imported (beyond start-up); the zip's own log line goes to stderr.
STREAM_PROBE = """
import json, sys
for name in sys.argv[4].split(","):
    sys.modules[name] = None                     # importing any of them now raises ImportError
before = {n.split(".")[0] for n in sys.modules}
sys.path.insert(0, sys.argv[1])
from solution import PredictionModel
import numpy as np

class Row:
    def __init__(self, s, t, need, state):
        self.seq_ix, self.step_in_seq, self.need_prediction, self.state = s, t, bool(need), state

with np.load(sys.argv[2]) as d:
    X, mask = d["X"], d["mask"]
m = PredictionModel()
P = [m.predict(Row(s, t, mask[s, t], X[s, t])) for s in range(len(X)) for t in range(X.shape[1])]
np.save(sys.argv[3], np.asarray([p for p in P if p is not None]))
print(json.dumps(sorted({n.split(".")[0] for n in sys.modules} - before)))
"""
CONTAINER_ONLY = "torch,pandas,pyarrow,scipy,lobsweep,onnx"      # the container has onnxruntime, never onnx
ORT_SEQS = 32             # = precision.STREAM_SEQS, the gate's default


@pytest.fixture(scope="module")
def gru64(data_dir, tmp_path_factory) -> str:
    """A GRU of hidden 64: int8-ort moves its score by ~5e-5 here; the hidden-24 one moves by ~3e-4 (refused)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("prec-gru64")
    return train_member(data_dir, "gru", str(root / "gru64"), hparams={"hidden": 64, "layers": 2, "head_hidden": 8},
                        train_cfg=TRAIN, seed=2).path


@pytest.fixture(scope="module")
def ort_zip(gru64, members, tmp_path_factory) -> dict:
    """int8-ort zip of the hidden-64 GRU and the LSTM, gated on the first 32 report sequences (the default)."""
    return package([gru64, members["lstm"]], str(tmp_path_factory.mktemp("ort-zip") / "ort.zip"),
                   precision="int8-ort")


def _stream_in_clean_room(zip_path: str, tmp_path, n_seq: int, block: str, bundle: str):
    """(predictions [rows, 2], imported modules, stderr, Y [rows, 2]) of the zip streamed over the first
    ``n_seq`` report sequences, in a subprocess where ``block`` cannot be imported."""
    sol = tmp_path / "solution"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(sol)
    data = gate_data(None, [load_bundle(bundle)])
    np.savez(tmp_path / "rows.npz", X=data.X[:n_seq], mask=data.mask[:n_seq])
    (tmp_path / "probe.py").write_text(STREAM_PROBE)
    out = subprocess.run([sys.executable, "-I", str(tmp_path / "probe.py"), str(sol), str(tmp_path / "rows.npz"),
                          str(tmp_path / "P.npy"), block], capture_output=True, text=True, cwd=tmp_path, check=True)
    imported = set(json.loads(out.stdout.strip().splitlines()[-1])) - set(sys.stdlib_module_names)
    Y = data.Y[:n_seq][data.mask[:n_seq]]
    return np.load(tmp_path / "P.npy"), imported - {"solution", "lsrt_engine", "lsrt_features"}, out.stderr, Y


def test_int8_ort_zip_steps_its_gru_through_onnxruntime_alone_and_keeps_the_float32_score(
        ort_zip, gru64, members, tmp_path):
    """Clean room (no onnx, torch or lobsweep): the GRU group runs the shipped .onnx bytes, the LSTM numpy int8;
    its streamed score is the one the gate measured, within 1e-4 of the float32 engine's (= the float32 zip's)."""
    with zipfile.ZipFile(ort_zip["path"]) as zf:
        graph = zf.read("model/ort_g000.onnx")
        assert [n for n in zf.namelist() if n.endswith(".onnx")] == ["model/ort_g000.onnx"]
    assert len(graph) > 1000 and ort_zip["ort_files"] == ["ort_g000.onnx"]
    manifest = read_manifest(ort_zip["path"])
    (entry,) = manifest["ort"]                                               # the GRU; no graph for the LSTM
    assert entry["file"] == "ort_g000.onnx" and entry["members"] == [0]
    assert {m["precision"] for m in manifest["members"]} == {"int8-ort"}
    # its per-member int8 matrices are external: the zip holds them once, in the member's .npz
    import onnx
    external = {t.name for t in onnx.load_from_string(graph).graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL}
    assert {r["param"] for r in entry["external"]} == {"rnn.weight_hh_l0", "rnn.weight_hh_l1", "rnn.weight_ih_l1"}
    assert external == {r["name"] for r in entry["external"]}
    i8 = package([gru64, members["lstm"]], str(tmp_path / "i8.zip"), precision="int8", tolerance=1.0)
    assert ort_zip["bytes"] - i8["bytes"] < i8["member_bytes"]["gru64"] / 2     # graph: first layer and head only

    P, imported, err, Y = _stream_in_clean_room(ort_zip["path"], tmp_path, ORT_SEQS, CONTAINER_ONLY, gru64)
    assert "onnxruntime" in imported and not imported & {"onnx", "torch", "lobsweep", "pandas"}
    assert "group 0 (gru x1): onnxruntime int8" in err and "group 1 (lstm x1): numpy float32" in err
    gate = ort_zip["gate"]["ensemble"]
    assert gate["streamed_seqs"] == ORT_SEQS and gate["stored"] == "int8-ort"
    assert abs(score(Y, P)["mean"] - gate["score"]) <= 1e-6                  # the zip runs what the gate scored
    P32 = stream_predictions(engine_from_bundles([gru64, members["lstm"]]), *_report(gru64, ORT_SEQS))
    assert abs(score(Y, P32)["mean"] - gate["score32"]) <= 1e-9
    assert abs(score(Y, P)["mean"] - score(Y, P32)["mean"]) <= GATE
    assert np.abs(P - P32).max() > 1e-4                                      # and it really computed in int8


def _report(bundle: str, n_seq: int):
    data = gate_data(None, [load_bundle(bundle)])
    return data.X[:n_seq], data.mask[:n_seq]


def test_int8_ort_zip_without_onnxruntime_runs_numpy_over_its_int8_weights_and_says_so(ort_zip, gru64, members,
                                                                                      tmp_path):
    P, imported, err, _ = _stream_in_clean_room(ort_zip["path"], tmp_path, 3, CONTAINER_ONLY + ",onnxruntime", gru64)
    assert imported == {"numpy"}
    assert "group 0 (gru x1): numpy float32 over int8 weights (onnxruntime not importable)" in err
    P8 = stream_predictions(engine_from_bundles([gru64, members["lstm"]], precision="int8"), *_report(gru64, 3))
    assert np.abs(P - P8).max() <= 1e-5                                      # exactly what an int8 zip computes


def test_int8_ort_gate_refuses_in_one_line_and_fallback_stores_everything_in_float32(members, tmp_path, capsys):
    """The hidden-24 GRU: int8 activations quantised per step move its streamed score by ~3e-4 (over 1e-4)."""
    out = tmp_path / "out"
    out.mkdir()
    code = cli_main(["package", "--members", members["gru"], "--precision", "int8-ort", "--out", str(out / "z.zip")])
    err = _one_line_refusal(capsys, code)
    assert "ensemble: int8-ort changes its score by" in err and "first 32 report sequences" in err
    assert "--fallback" in err and os.listdir(out) == []
    code = cli_main(["package", "--members", members["gru"], "--precision", "int8-ort", "--fallback",
                     "--out", str(out / "fb.zip")])
    printed = capsys.readouterr().out
    assert code == 0 and "stored in float32: the ensemble is over the gate" in printed
    manifest = read_manifest(str(out / "fb.zip"))
    assert {m["precision"] for m in manifest["members"]} == {"float32"} and "ort" not in manifest
    with zipfile.ZipFile(out / "fb.zip") as zf:
        assert not [n for n in zf.namelist() if n.endswith(".onnx")]


def test_int8_ort_cost_is_measured_on_the_onnxruntime_engine(gru64, tmp_path, monkeypatch):
    from lobsweep.submission.engine_ort_run import ORTGroup
    b = str(tmp_path / "gru64")
    shutil.copytree(gru64, b)
    built = []
    real = cost.engine_from_bundles
    monkeypatch.setattr(cost, "engine_from_bundles", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    assert cost.member_cost_ms(b, steps=120, precision="int8-ort") > 0
    assert len(built) == 1 and built[0].ort_graphs == 1 and isinstance(built[0].groups[0], ORTGroup)
    assert json.load(open(os.path.join(b, "latency-int8-ort.json")))["precision"] == "int8-ort"


def test_int8_ort_without_onnx_at_package_time_is_one_line(members, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(PackageError, match="int8-ort builds its onnxruntime graphs with the onnx package"):
        package([members["gru"]], str(tmp_path / "z.zip"), precision="int8-ort")
    assert os.listdir(tmp_path) == []
