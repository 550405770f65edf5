#!/usr/bin/env bash
# The demo: starts the local stack (embedded AWS emulator + FINEOS stub),
# prepares a database, runs two workers and imports the sample CSV with
# --wait, prints the summary and the failed rows; then plays the on-call
# engineer: lists the dead-letter queue, fixes the data, replays, waits,
# writes the report. It stops what it started.
#
# Database: $DATABASE_URL if set (used as is), else a throw-away database
# bulk_user_import_demo on the local server, recreated on each run.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting the local stack (AWS emulator and FINEOS stub)"
bin/devstack serve --addr 127.0.0.1:0 --fineos-addr 127.0.0.1:0 --env-file "$work/env" >"$work/stack.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  [ -s "$work/env" ] && break
  if ! kill -0 "${pids[0]}" 2>/dev/null; then cat "$work/stack.log"; exit 1; fi
  sleep 0.1
done
[ -s "$work/env" ] || { echo "the local stack did not start"; cat "$work/stack.log"; exit 1; }
# shellcheck disable=SC1091
source "$work/env"
grep -E 'IMPORT_QUEUE_URL|COGNITO_USER_POOL_ID|AWS_ENDPOINT_URL|FINEOS_STUB_URL' "$work/env" | sed 's/^/   /'

echo "== preparing the database"
if [ -n "${DATABASE_URL:-}" ]; then
  echo "   using DATABASE_URL as is (users from earlier demo runs stay: the emulator forgets their Cognito accounts, so expect EMAIL_CONFLICT on a re-run)"
  bin/devstack db
else
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/bulk_user_import_demo"
  bin/devstack db --recreate
fi

echo "== starting two workers sharing fleet budgets of 20 Cognito user creations (and the 20 password settings they need) and 20 FINEOS calls a second (logs in the work directory)"
export LOG_FORMAT=text COGNITO_CREATE_BUDGET=20 COGNITO_PASSWORD_BUDGET=20 FINEOS_BUDGET=20
# Completion events go to the local stack's SNS topic; its receiver queue
# gets them (bin/devstack events prints them).
export COMPLETION_SNS_TOPIC_ARN="$DEMO_COMPLETION_SNS_TOPIC_ARN"
for i in 1 2; do
  bin/worker --concurrency 8 --wait-time 2s --retry-base 1s --retry-max 5s --maintain-interval 1s >"$work/worker$i.log" 2>&1 &
  pids+=($!)
done

echo "== planning the import first: what it would do, changing nothing (exit 3: some rows would fail)"
set +e
bin/splitter plan --force-registration localstack/samples/leave_admins.csv
status=$?
set -e
case $status in
  0|3) ;;
  *) echo "== demo FAILED: splitter plan exited with $status"; exit "$status" ;;
esac

job="demo-$(date +%Y%m%d-%H%M%S)"
echo "== importing localstack/samples/leave_admins.csv as job $job, with --force-registration --wait"
set +e
bin/splitter --job "$job" --force-registration --wait --poll-interval 500ms localstack/samples/leave_admins.csv
status=$?
set -e
case $status in
  0|3) ;;
  *) echo "== demo FAILED: splitter exited with $status"; for f in "$work"/worker*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit "$status" ;;
esac

echo
echo "== the completion event the workers' maintainer published (SNS topic -> receiver queue)"
bin/devstack events --job "$job" --wait 30s

echo
echo "== the on-call loop: what is in the dead-letter queue, and why"
bin/worker dlq list --log-format text
echo
echo "== fix the data (add the missing employer 999999999), then replay the EMPLOYER_NOT_FOUND rows"
bin/devstack employer --fein 999999999 --fineos-id 1009 --name "Nobody Ltd (added by the demo)"
bin/worker dlq replay --error EMPLOYER_NOT_FOUND --log-format text
set +e
bin/splitter wait "$job" --poll-interval 500ms
status=$?
set -e

echo
echo "== the replay completed the job again: its second completion event"
bin/devstack events --job "$job" --wait 30s

echo
echo "== the job and the fleet: splitter status"
bin/splitter status "$job"

echo
echo "== the result files (also written to s3://$RESULTS_BUCKET/$job/ by the workers' maintainer)"
bin/splitter report "$job" --out "$work/report"
echo "--- FAILED.csv"
cat "$work/report/FAILED.csv"
echo "== FINEOS stub:"
curl -fsS "$FINEOS_STUB_URL/__stub/stats" 2>/dev/null || echo "   (curl not available)"
echo
case $status in
  0) echo "== demo finished: every row succeeded" ;;
  3) echo "== demo finished: after the replay only the rows that are wrong by data remain (exit status 3 from splitter wait)" ;;
  *) echo "== demo FAILED: splitter wait exited with $status"; for f in "$work"/worker*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit "$status" ;;
esac
