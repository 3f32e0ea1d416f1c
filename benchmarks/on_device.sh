#!/usr/bin/env bash
# Run benchmark or notebook commands on a lent GPU machine and bring every result back through $OUT.
#
# Prepare here once: bash scripts/device_wheels.sh (fills the git-ignored .whl/ and .data/). Then, as the
# device tool's command, with carry [".whl", ".data"]:
#     bash benchmarks/on_device.sh "python benchmarks/gpu_targets.py" "python benchmarks/levers.py --part speed"
# Each command runs in turn; after each one, RESULTS.md, the new results/*.json and the log are copied to $OUT
# (so a command that runs out of time loses nothing earlier). Copy them back into the checkout and commit.
# A command "notebook NAME" executes notebooks/NAME.ipynb in full mode (DDPM_SMOKE is unset here) and log.txt times
# it; "notebook NAME keep" writes the executed notebook, figures included, straight into $OUT/NAME.ipynb (the device
# returns at most 8 files, 16 MiB each, so keep only the ones you need). CMD_LIMIT=S stops any one command after
# S seconds, so that one that runs long cannot use up the call and the next still starts; every benchmark script
# takes that SIGTERM as a stop and still records the rows it finished. Notebooks run through
# scripts/run_notebook.py, which saves after every cell (with each cell's seconds), so a stopped one keeps what ran,
# and a kept one is in $OUT even if the whole call is cut off. Their kernels see the warnings (PYTHONWARNINGS is
# unset for them), so that run_notebook.py's summary in log.txt lists the ones that full runs on a GPU print.
# CALL_LIMIT=S (the device tool's timeout_s less a few seconds) also shortens each command's limit to what is left of
# S seconds since this script started, less 25 s for the stop and the copies, and skips a command when nothing is
# left: so the set-up (installing the wheels, the first import of torch) cannot push the last copies past the tool's
# limit, where a killed call brings nothing back from this script. log.txt records the set-up's seconds.
set -uo pipefail
: "${OUT:?OUT is not set: run this through the device tool, or set OUT to a folder}"
if [ -z "${SKIP_WHEELS:-}" ] && compgen -G ".whl/*.whl" > /dev/null; then  # SKIP_WHEELS=1: test it on a CPU here
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" >&2; exit 3; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v python > /dev/null; then  # the commands say "python"; the device may only have "python3"
  mkdir -p /tmp/shim && ln -sf "$(command -v python3)" /tmp/shim/python && export PATH="/tmp/shim:$PATH"
fi
if [ -d .data/MNIST/raw ]; then
  export DDPM_DATA_DIR="$PWD/.data"
elif [ -z "${DDPM_DATA_DIR:-}" ]; then  # offline, load_mnist would first try a download that cannot succeed
  echo "no MNIST here: name .data in the device tool's carry (bash scripts/device_wheels.sh fills it)" >&2
  exit 2
fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore
unset DDPM_SMOKE
notebook() {  # notebook NAME [keep]: run notebooks/NAME.ipynb top to bottom (inline figures: no Agg), saved per cell
  local out="/tmp/notebooks/$1.ipynb"
  [ "${2:-}" = keep ] && out="$OUT/$1.ipynb"
  env -u MPLBACKEND -u PYTHONWARNINGS python3 scripts/run_notebook.py "notebooks/$1.ipynb" --out "$out"
}
export -f notebook
mkdir -p "$OUT/results"
{ nvidia-smi 2>&1 || true; python3 -c "import torch; print('torch', torch.__version__)"; } > "$OUT/machine.txt"
echo "=== set-up took $SECONDS s" | tee -a "$OUT/log.txt"
status=0
for cmd in "$@"; do
  limit=${CMD_LIMIT:-0}
  if [ -n "${CALL_LIMIT:-}" ]; then
    left=$(( CALL_LIMIT - SECONDS - 25 ))
    if [ "$left" -lt 1 ]; then
      echo "=== skipped, CALL_LIMIT reached: $cmd" | tee -a "$OUT/log.txt"
      status=124
      continue
    fi
    if [ "$limit" -eq 0 ] || [ "$left" -lt "$limit" ]; then limit=$left; fi
  fi
  if [ "$limit" -eq 0 ]; then shown="no limit"; else shown="limit $limit s"; fi
  echo "=== $(date -u +%FT%TZ) ($shown) $cmd" | tee -a "$OUT/log.txt"
  start=$(date +%s)
  timeout --kill-after=15 "$limit" bash -c "$cmd" 2>&1 | tee -a "$OUT/log.txt"  # rc 124: over the limit
  rc=${PIPESTATUS[0]}
  echo "=== rc=$rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/log.txt"
  [ "$rc" -ne 0 ] && status=$rc
  cp benchmarks/RESULTS.md "$OUT/"
  find benchmarks/results -maxdepth 1 -name '*.json' -newer "$OUT/machine.txt" -exec cp {} "$OUT/results/" \;
done
exit "$status"
