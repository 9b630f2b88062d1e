#!/usr/bin/env bash
# Run the whole study: train every missing run of the plan (lib/plan.py), then execute every
# numbered notebook in notebooks/, in order, under papermill; the notebooks only read.
#
#   ./run_all.sh [--profile smoke|cpu|paper] [--only NN[,NN...]] [--plan] [--force | --force-runs A,B]
#                [--data-dir DIR] [--executor serial|ray]
#
# --plan lists every run of the plan with its status (cached / missing), an estimated cost and its
# directory, and exits without training (like `dvc status`). --only restricts both the training and
# the notebooks to those chapters. --force retrains every selected run; --force-runs only the named
# ones (names from --plan). --data-dir validates and uses another copy of the RuSentNE-23 files
# (same file names) instead of data/raw. --executor ray trains all jobs at once as Ray tasks
# (RAY_ADDRESS: an existing cluster; otherwise a local one); see lib/executors.py.
# The profile (default: cpu) is injected into each notebook's `parameters` cell. Executed copies
# go to runs/<profile>/notebooks/, never over the sources. The cpu profile writes the committed
# figures in figures/ and readable chapter pages in reports/ (HTML with outputs, working offline);
# other profiles write theirs under runs/<profile>/.
set -euo pipefail

profile=cpu only="" force=() data_dir="" plan_only=0
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --only) only=${2:?--only needs a value}; shift 2 ;;
    --force) force=(--force); shift ;;
    --force-runs) force=(--force-runs "${2:?--force-runs needs a value}"); shift 2 ;;
    --plan) plan_only=1; shift ;;
    --data-dir) data_dir=${2:?--data-dir needs a value}; shift 2 ;;
    --executor) export HAMAM_EXECUTOR=${2:?--executor needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$profile" in smoke|cpu|paper) ;; *) echo "run_all.sh: unknown profile '$profile' (smoke|cpu|paper)" >&2; exit 2 ;; esac
case "${HAMAM_EXECUTOR:-serial}" in serial|ray) ;; *) echo "run_all.sh: unknown executor '$HAMAM_EXECUTOR' (serial|ray)" >&2; exit 2 ;; esac
if [ -n "$data_dir" ]; then  # relative to where the user stands, not to notebooks/
  data_dir=$(cd "$data_dir" 2>/dev/null && pwd) || { echo "run_all.sh: --data-dir: no such directory" >&2; exit 2; }
fi
cd "$(dirname "$0")"

source scripts/setup_env.sh

# Bad data stops here with one line naming file, row and rule (not a traceback inside a notebook).
python -m lib.data ${data_dir:+--data-dir "$data_dir"}

plan_args=(--profile "$profile" ${only:+--only "$only"} ${data_dir:+--data-dir "$data_dir"})
if [ "$plan_only" = 1 ]; then exec python -m lib.train status "${plan_args[@]}"; fi
# Train first (every chapter's missing runs at once: on Ray, folds of different chapters in parallel).
run_start=$(date +%s)
start=$(date +%s)
python -m lib.train materialise "${plan_args[@]}" ${force[@]+"${force[@]}"} ${HAMAM_EXECUTOR:+--executor "$HAMAM_EXECUTOR"}
echo "   plan materialised: $(( $(date +%s) - start ))s"

out="runs/$profile/notebooks"
mkdir -p "$out"
shopt -s nullglob
notebooks=(notebooks/[0-9][0-9]_*.ipynb)
[ ${#notebooks[@]} -gt 0 ] || { echo "run_all.sh: no numbered notebooks in notebooks/" >&2; exit 1; }
total_start=$(date +%s)
ran=0
for nb in "${notebooks[@]}"; do
  name=$(basename "$nb")
  num=${name:0:2}
  if [ -n "$only" ] && [[ ",$only," != *",$num,"* && ",$only," != *",${num#0},"* ]]; then continue; fi
  start=$(date +%s)
  echo "== $name (profile $profile)"
  if ! papermill "$nb" "$out/$name" --cwd notebooks --progress-bar \
      -p profile "$profile" -p data_dir "$data_dir"; then
    echo "FAILED: $name after $(( $(date +%s) - start ))s; the executed copy with the error cell is $out/$name" >&2
    exit 1
  fi
  echo "   $name: $(( $(date +%s) - start ))s"
  ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "run_all.sh: --only '$only' matched no notebook" >&2; exit 1; }
if [ "$profile" = cpu ]; then reports=reports; else reports="runs/$profile/reports"; fi
python scripts/export_html.py "$out" "$reports"
echo "done: $ran notebook$([ "$ran" = 1 ] || echo s) in $(( $(date +%s) - total_start ))s; executed copies in $out/"
# the run as data: commit, wall seconds (parts of one commit add up), hardware, precision, versions, per-run seconds
if [ -z "$data_dir" ]; then
  python scripts/run_record.py --profile "$profile" --seconds "$(( $(date +%s) - run_start ))" ${only:+--only "$only"}
  # the README's results block says what results.json says (the committed profile only)
  if [ "$profile" = cpu ]; then python scripts/readme_results.py --write; fi
fi
