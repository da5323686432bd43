#!/usr/bin/env bash
# Run bench/gpu_train.py on a machine with CUDA torch but without this project installed:
# builds the lobsweep namespace from the top-level folders in a temp dir.
set -e
ns=$(mktemp -d)
mkdir -p "$ns/lobsweep"
cp -r lobsweep/*.py "$ns/lobsweep/"
for d in data models features training; do cp -r "$d" "$ns/lobsweep/$d"; done
export PYTHONPATH="$ns" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 bench/gpu_train.py "$@"
