#!/usr/bin/env bash
# Import CSV files already in S3, like the original's run-task:
#
#   deploy/run-import.sh ENV s3://BUCKET/KEY.csv [more sources] [splitter flags]
#
# e.g. deploy/run-import.sh test s3://pfml-test-bulk-user-import-source-xyz/incoming/admins.csv --force-registration
# The splitter prints the job id in its log; follow the job with
# deploy/run-task.sh ENV splitter status JOB.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,8p' "$0"
  exit 2
fi
env_name=$1; shift
exec "$(dirname "$0")/run-task.sh" "$env_name" splitter "$@"
