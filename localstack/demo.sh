#!/usr/bin/env bash
# The demo: starts the local stack (embedded AWS emulator + FINEOS stub),
# prepares a database, runs two workers and imports the sample CSV with
# --wait, prints the summary and the failed rows, and stops what it started.
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

echo "== starting two workers (logs in the work directory)"
export LOG_FORMAT=text
for i in 1 2; do
  bin/worker --concurrency 8 --wait-time 2s --retry-base 1s --retry-max 5s >"$work/worker$i.log" 2>&1 &
  pids+=($!)
done

echo "== importing localstack/samples/leave_admins.csv with --force-registration --wait"
set +e
bin/splitter --force-registration --wait --poll-interval 500ms localstack/samples/leave_admins.csv
status=$?
set -e

echo "== FINEOS stub: users provisioned"
curl -fsS "$FINEOS_STUB_URL/__stub/stats" 2>/dev/null || echo "   (curl not available)"
echo
case $status in
  0) echo "== demo finished: every row succeeded" ;;
  3) echo "== demo finished: the rows above failed or were rejected, as the sample intends (exit status 3 from splitter --wait)" ;;
  *) echo "== demo FAILED: splitter exited with $status"; for f in "$work"/worker*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit "$status" ;;
esac
