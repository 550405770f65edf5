#!/usr/bin/env bash
# Run a one-off task of an environment (see the README, "Running in AWS"):
#
#   deploy/run-task.sh ENV splitter ARGS...   e.g. splitter status JOB, splitter s3://bucket/file.csv --wait
#   deploy/run-task.sh ENV dlq ARGS...        e.g. dlq list, dlq replay --error EMPLOYER_NOT_FOUND
#
# It reads the environment's Terraform outputs (deploy/terraform/environments/ENV),
# starts the task on Fargate, and prints how to follow it. Needs the AWS CLI,
# terraform and jq, and credentials for the account.
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,9p' "$0"
  exit 2
fi
env_name=$1; tool=$2; shift 2
dir="$(cd "$(dirname "$0")" && pwd)/terraform/environments/$env_name"
[ -d "$dir" ] || { echo "no environment $dir" >&2; exit 2; }
out=$(terraform -chdir="$dir" output -json)
get() { jq -r "$1" <<<"$out"; }

case $tool in
  splitter) taskdef=$(get .splitter_task_definition.value); container=splitter; logs=$(get .tasks_log_group.value) ;;
  dlq)      taskdef=$(get .dlq_tools_task_definition.value); container=dlq-tools; logs=$(get .tasks_log_group.value) ;;
  *) echo "tool must be splitter or dlq" >&2; exit 2 ;;
esac
cluster=$(get .cluster_name.value)
network=$(jq -c '{awsvpcConfiguration: {subnets: .subnet_ids.value, securityGroups: .security_group_ids.value,
  assignPublicIp: (if .assign_public_ip.value then "ENABLED" else "DISABLED" end)}}' <<<"$out")
# "--" ends jq's own options: the task's arguments (--wait, --error, …)
# are passed as they are.
overrides=$(jq -cn --arg name "$container" '{containerOverrides: [{name: $name, command: $ARGS.positional}]}' --args -- "$@")
# startedBy allows letters, digits, hyphens, underscores and slashes, at
# most 128: first.last becomes first-last.
started_by=$(printf '%s' "${USER:-operator}" | tr -c 'A-Za-z0-9_/-' '-' | cut -c1-128)

answer=$(aws ecs run-task --cluster "$cluster" --task-definition "$taskdef" --launch-type FARGATE \
  --network-configuration "$network" --overrides "$overrides" --started-by "${started_by:-operator}" --output json)
if [ "$(jq '.failures | length' <<<"$answer")" != 0 ] || [ "$(jq '.tasks | length' <<<"$answer")" = 0 ]; then
  echo "the task did not start:" >&2
  jq -r '.failures[]? | "  \(.reason // "unknown reason")\(if .detail then ": " + .detail else "" end) (\(.arn // "no ARN"))"' <<<"$answer" >&2
  exit 1
fi
task=$(jq -r '.tasks[0].taskArn' <<<"$answer")
echo "started $task"
echo "follow its output:  aws logs tail $logs --follow --log-stream-names $container/$container/${task##*/}"
echo "wait for its end:   aws ecs wait tasks-stopped --cluster $cluster --tasks $task"
