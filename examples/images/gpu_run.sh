#!/usr/bin/env bash
# Run the image example on a GPU machine and record GPU utilisation next to the run report.
#
#   examples/images/gpu_run.sh [REPORT_DIR] [more `daftscale run` options, e.g. --udf-gpus 0.5]
#
# Writes REPORT_DIR/report.json + report.html (daftscale's run report), REPORT_DIR/gpu_utilization.csv
# (nvidia-smi every 500 ms: timestamp, GPU index, utilisation %, memory used/total MiB) and
# REPORT_DIR/gpu_summary.json (samples, mean and peak utilisation, peak memory per GPU).
# The model actors ask for one GPU each (--udf-gpus 1), so the plan's concurrency is the GPU count.
# IMAGES_ROWS sets the dataset size (default here 20,000 so the GPUs have something to chew on).
#
# UNTESTED ON A GPU: written on a CPU-only machine; the CPU path of the same pipeline is tested.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
report="${1:-$here/report-gpu}"
shift || true
python="${PYTHON:-python}"
export IMAGES_ROWS="${IMAGES_ROWS:-20000}"

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_run.sh: nvidia-smi not found: run this on a machine with an NVIDIA GPU and its driver" >&2
    exit 2
fi
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_run.sh: torch sees no CUDA device: install a CUDA build of torch==2.13.0" >&2
    exit 2
fi

mkdir -p "$report"
csv="$report/gpu_utilization.csv"
# Sample in the background for the whole run (start-up included, so the idle lead-in is visible too).
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,memory.total \
    --format=csv,nounits -lms 500 >"$csv" &
smi=$!
trap 'kill "$smi" 2>/dev/null || true' EXIT

"$python" "$here/pipeline.py" --udf-gpus 1 --report "$report" --overwrite "$@"

kill "$smi" 2>/dev/null || true
wait "$smi" 2>/dev/null || true

"$python" - "$csv" "$report/gpu_summary.json" <<'PY'
import csv, json, sys

source, target = sys.argv[1], sys.argv[2]
with open(source) as handle:
    rows = [[cell.strip() for cell in row] for row in csv.reader(handle)][1:]  # skip the header
per_gpu: dict[str, dict[str, list[float]]] = {}
for row in rows:
    if len(row) < 5 or not row[2].replace(".", "").isdigit():
        continue  # a partial last line, or "[N/A]" on GPUs that do not report utilisation
    gpu = per_gpu.setdefault(row[1], {"util": [], "mem": []})
    gpu["util"].append(float(row[2]))
    gpu["mem"].append(float(row[3]))
summary = {
    index: {
        "samples": len(v["util"]),
        "mean_utilization_pct": round(sum(v["util"]) / len(v["util"]), 1),
        # Utilisation while the GPU was doing anything: the run's start-up and tail are left out.
        "busy_mean_utilization_pct": round(
            sum(u for u in v["util"] if u > 0) / max(1, sum(1 for u in v["util"] if u > 0)), 1
        ),
        "peak_utilization_pct": max(v["util"]),
        "peak_memory_used_mib": max(v["mem"]),
    }
    for index, v in sorted(per_gpu.items())
    if v["util"]
}
with open(target + ".tmp", "w") as handle:
    json.dump(summary, handle, indent=2)
import os

os.replace(target + ".tmp", target)
print(json.dumps(summary, indent=2))
PY
echo "GPU samples: $csv; summary: $report/gpu_summary.json; run report: $report/report.html"
