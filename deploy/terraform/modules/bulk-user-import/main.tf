# bulk-user-import on AWS: the import queue and its dead-letter queue, the
# source and results buckets, an ECS cluster with the worker service
# (Fargate, autoscaled on the queue's backlog) and the splitter and DLQ-tool
# task definitions, least-privilege roles, logs and alarms.

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # Secrets come from Secrets Manager or SSM Parameter Store, told by ARN.
  secret_arns = compact([
    var.db_password_secret_arn,
    var.fineos == null ? "" : var.fineos.client_secret_arn,
  ])
  secretsmanager_arns = [for a in local.secret_arns : a if startswith(a, "arn:${local.partition}:secretsmanager:")]
  ssm_arns            = [for a in local.secret_arns : a if startswith(a, "arn:${local.partition}:ssm:")]

  # The environment of every container.
  common_environment = concat([
    { name = "AWS_REGION", value = local.region },
    { name = "DB_HOST", value = var.db_host },
    { name = "DB_PORT", value = tostring(var.db_port) },
    { name = "DB_NAME", value = var.db_name },
    { name = "DB_USER", value = var.db_user },
    { name = "IMPORT_QUEUE_URL", value = aws_sqs_queue.import.url },
    { name = "IMPORT_DLQ_URL", value = aws_sqs_queue.dlq.url },
    { name = "COGNITO_USER_POOL_ID", value = var.cognito_user_pool_id },
    { name = "RESULTS_BUCKET", value = aws_s3_bucket.results.bucket },
    { name = "LOG_FORMAT", value = "json" },
    ], var.fineos == null ? [] : [
    { name = "FINEOS_CLIENT_INTEGRATION_SERVICES_API_URL", value = var.fineos.integration_services_api_url },
    { name = "FINEOS_CLIENT_OAUTH2_URL", value = var.fineos.oauth2_url },
    { name = "FINEOS_CLIENT_OAUTH2_CLIENT_ID", value = var.fineos.oauth2_client_id },
    { name = "FINEOS_CLIENT_WSCOMPOSER_USER_ID", value = var.fineos.wscomposer_user_id },
  ])
  common_secrets = concat([
    { name = "DB_PASSWORD", valueFrom = var.db_password_secret_arn },
    ], var.fineos == null ? [] : [
    { name = "FINEOS_CLIENT_OAUTH2_CLIENT_SECRET", valueFrom = var.fineos.client_secret_arn },
  ])

  worker_command = [
    "--concurrency", tostring(var.worker_concurrency),
    "--db-max-conns", tostring(var.worker_db_max_conns),
    "--visibility-timeout", "${var.visibility_timeout_seconds}s",
    "--shutdown-timeout", "${var.worker_shutdown_timeout_seconds}s",
    "--cognito-get-rate", tostring(var.cognito_rates.get),
    "--cognito-create-rate", tostring(var.cognito_rates.create),
    "--cognito-password-rate", tostring(var.cognito_rates.password),
    "--fineos-rate", tostring(var.fineos_rate),
    "--retention", "${var.row_data_retention_days}d",
    "--summary-interval", "60s",
    "--emf",
  ]
}

resource "aws_ecs_cluster" "this" {
  name = var.name
  setting {
    # Container Insights publishes RunningTaskCount, which the autoscaling uses.
    name  = "containerInsights"
    value = "enabled"
  }
  tags = var.tags
}

resource "aws_cloudwatch_log_group" "worker" {
  name              = "/ecs/${var.name}/worker"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "tasks" {
  name              = "/ecs/${var.name}/tasks"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}
