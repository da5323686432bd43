"""GPU rehearsal of the ``full`` profile at the real data size, cut down to fit a few minutes.

Run on a machine with one GPU (the lent device machine), from the repository root:

    python bench/gpu_rehearsal.py --out "$OUT"            # ~8 min on one H200 + 16 CPUs

It generates the synthetic data at the real size (10,721 train / 1,444 valid
sequences), runs ``lobsweep full-search --profile full`` cut down by overrides
(2 families, 4 trials, 2 epochs, ``--resources cpu=2,gpu=0.25`` so that four
trials share the GPU) on a local Ray instance, and records per stage: wall
time, peak host RSS (the whole process tree, sampled), peak GPU memory
(nvidia-smi, sampled), trials running at once (from the trials' start/end
times), an epoch's time per family (from the trials' bundles), and projects
the uncut profile's wall time from those figures. The table goes to
``bench/results/gpu_rehearsal.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import threading
import time

FAMILIES = "gru,transformer"
CUT = ["--families", FAMILIES, "--num-samples", "4", "--max-epochs", "2", "--top-k", "1", "--seeds", "2",
       "--retrain-epochs", "2", "--resources", "cpu=2,gpu=0.25", "--feature-samples", "4", "--feature-budget", "240",
       "--no-feature-search"]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB (Linux /proc)."""
    total, todo = 0, [pid]
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
        except (OSError, ValueError, IndexError):
            continue
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def gpu_mem_mb() -> float:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return float(sum(float(x) for x in out.split()))
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return float("nan")


class Sampler(threading.Thread):
    """Samples host RSS and GPU memory every second; peaks per stage (stage = last '[stage]' line seen)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stage, self.peaks, self.stop = pid, "start", {}, threading.Event()

    def run(self):
        while not self.stop.is_set():
            rss, gpu = tree_rss_mb(self.pid), gpu_mem_mb()
            p = self.peaks.setdefault(self.stage, {"rss_mb": 0.0, "gpu_mb": 0.0})
            p["rss_mb"] = max(p["rss_mb"], rss)
            p["gpu_mb"] = max(p["gpu_mb"], gpu) if gpu == gpu else p["gpu_mb"]
            self.stop.wait(1.0)


def concurrency(run_dir: str) -> int:
    """Most trials running at once, from the Tune trials' result files (first and last timestamps)."""
    events = []
    for path in glob.glob(os.path.join(run_dir, "sweeps", "*", "ray", "*", "*", "result.json")):
        stamps = [json.loads(line).get("timestamp") for line in open(path) if line.strip()]
        stamps = [s for s in stamps if s]
        if stamps:
            events += [(min(stamps) - 1e-3, 1), (max(stamps), -1)]
    running = most = 0
    for _, step in sorted(events):
        running += step
        most = max(most, running)
    return most


def epoch_seconds(run_dir: str) -> dict:
    """Median seconds per epoch of each family, from the sweep trials' bundles."""
    per: dict[str, list[float]] = {}
    for spec in glob.glob(os.path.join(run_dir, "sweeps", "*", "bundles", "*", "spec.json")):
        s = json.load(open(spec))
        per.setdefault(s["family"], []).extend(h["seconds"] for h in s.get("history", []) if "seconds" in h)
    return {f: sorted(v)[len(v) // 2] for f, v in per.items() if v}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--work", default="/tmp/gpu-rehearsal")
    args = ap.parse_args()
    data, run_dir = os.path.join(args.work, "data"), os.path.join(args.work, "runs")
    t0 = time.time()
    if not os.path.exists(os.path.join(data, "valid.parquet")):
        subprocess.run([sys.executable, "-m", "lobsweep", "synth", "--out", data, "--n-train", "10721",
                        "--n-valid", "1444"], check=True)
    gen_s = time.time() - t0
    cmd = [sys.executable, "-m", "lobsweep", "full-search", "--profile", "full", "--data", data, "--run-dir",
           run_dir, *CUT]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    stage_start, walls, lines = {}, {}, []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
        if line.startswith("[") and "]" in line:
            st = line[1:line.index("]")]
            if st not in stage_start:
                if sampler.stage in stage_start:
                    walls[sampler.stage] = time.time() - stage_start[sampler.stage]
                stage_start[st] = time.time()
                sampler.stage = st
    proc.wait()
    walls[sampler.stage] = time.time() - stage_start.get(sampler.stage, t0)
    sampler.stop.set()
    sampler.join()
    epochs = epoch_seconds(run_dir)
    # projection of the uncut full profile: 64 trials x 30 epochs per family (ASHA keeps ~1/3 per rung,
    # so about 64 * (3 + 9 / 3 + 27 / 9) = 576 epochs per family), 4 at a time, then 3 x 3 retrains
    projected = sum(576 * e / 4 + 9 * 30 * e / 4 for e in epochs.values())
    rows = [f"| {st} | {walls.get(st, 0):.0f} | {p['rss_mb']:.0f} | {p['gpu_mb']:.0f} |"
            for st, p in sampler.peaks.items()]
    table = "\n".join([
        f"# GPU rehearsal ({time.strftime('%Y-%m-%d')}, exit code {proc.returncode})", "",
        f"data generation (10,721 / 1,444 sequences): {gen_s:.0f} s", "",
        "| stage | wall s | peak host RSS MB | peak GPU MB |", "|---|---|---|---|", *rows, "",
        f"trials running at once (most): {concurrency(run_dir)}",
        "epoch seconds per family (median of sweep trials): " + json.dumps({k: round(v, 1) for k, v in epochs.items()}),
        f"projected uncut full profile (HPO + retrain of these families, 4 trials per GPU): {projected / 3600:.1f} h",
        "", "command: " + " ".join(cmd)])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_rehearsal.md"), "w") as fh:
        fh.write(table + "\n")
    print(table)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
