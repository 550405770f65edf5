# bulk-user-import on AWS: the import queue and its dead-letter queue, the
# source and results buckets, an ECS cluster with the worker service
# (Fargate, autoscaled on the queue's backlog) and the splitter and DLQ-tool
# task definitions, least-privilege roles, logs and alarms.

data "aws_region" "current" {}
data "aws_partition" "current" {}

# The account: given (var.account_id), or looked up.
data "aws_caller_identity" "current" {
  count = var.account_id == null ? 1 : 0
}

locals {
  region     = data.aws_region.current.name
  account_id = var.account_id != null ? var.account_id : one(data.aws_caller_identity.current[*].account_id)
  partition  = data.aws_partition.current.partition
  dns_suffix = data.aws_partition.current.dns_suffix

  # Names and ARNs, derived from var.name, so that they are known when the
  # plan is made (policies and task definitions then show in full).
  import_queue_name = var.name
  dlq_name          = "${var.name}-dlq"
  import_queue_arn  = "arn:${local.partition}:sqs:${local.region}:${local.account_id}:${local.import_queue_name}"
  dlq_arn           = "arn:${local.partition}:sqs:${local.region}:${local.account_id}:${local.dlq_name}"
  import_queue_url  = "https://sqs.${local.region}.${local.dns_suffix}/${local.account_id}/${local.import_queue_name}"
  dlq_url           = "https://sqs.${local.region}.${local.dns_suffix}/${local.account_id}/${local.dlq_name}"
  # Bucket names are global: a short hash of the account, region and name
  # keeps them unique, and within S3's 63 characters for any valid name.
  bucket_suffix = substr(sha1("${local.account_id}/${local.region}/${var.name}"), 0, 8)
  # The source bucket: the module's own, or an existing one (shared: the
  # splitter may read only source_prefix of it; see iam.tf for listing).
  create_source_bucket = var.source_bucket_name == null || var.source_bucket_name == ""
  source_bucket        = local.create_source_bucket ? "${var.name}-source-${local.bucket_suffix}" : var.source_bucket_name
  source_read_prefix   = local.create_source_bucket ? "" : var.source_prefix
  results_bucket       = "${var.name}-results-${local.bucket_suffix}"
  source_bucket_arn    = "arn:${local.partition}:s3:::${local.source_bucket}"
  results_bucket_arn   = "arn:${local.partition}:s3:::${local.results_bucket}"
  cluster_arn          = "arn:${local.partition}:ecs:${local.region}:${local.account_id}:cluster/${var.name}"
  splitter_family      = "${var.name}-splitter"
  dlq_tools_family     = "${var.name}-dlq-tools"
  completion_topic_arn = "arn:${local.partition}:sns:${local.region}:${local.account_id}:${var.name}-completions"
  # A bus given by name is this account's, in this region.
  completion_event_bus_arn = startswith(var.completion_event_bus, "arn:") ? var.completion_event_bus : "arn:${local.partition}:events:${local.region}:${local.account_id}:event-bus/${var.completion_event_bus}"
  task_definition          = "arn:${local.partition}:ecs:${local.region}:${local.account_id}:task-definition"
  role_arn                 = "arn:${local.partition}:iam::${local.account_id}:role"

  # Secrets come from Secrets Manager or SSM Parameter Store, told by ARN.
  secret_arns = compact([
    var.db_password_secret_arn,
    var.fineos == null ? "" : var.fineos.client_secret_arn,
  ])
  secretsmanager_arns = [for a in local.secret_arns : a if startswith(a, "arn:${local.partition}:secretsmanager:")]
  ssm_arns            = [for a in local.secret_arns : a if startswith(a, "arn:${local.partition}:ssm:")]

  # The environment of every container; FINEOS's only in the worker's.
  common_environment = [
    { name = "AWS_REGION", value = local.region },
    { name = "DB_HOST", value = var.db_host },
    { name = "DB_PORT", value = tostring(var.db_port) },
    { name = "DB_NAME", value = var.db_name },
    { name = "DB_USER", value = var.db_user },
    { name = "IMPORT_QUEUE_URL", value = local.import_queue_url },
    { name = "IMPORT_DLQ_URL", value = local.dlq_url },
    { name = "COGNITO_USER_POOL_ID", value = var.cognito_user_pool_id },
    { name = "RESULTS_BUCKET", value = local.results_bucket },
    { name = "LOG_FORMAT", value = "json" },
  ]
  # The worker's maintainer publishes an event per job completed or cancelled.
  completion_environment = concat(
    [{ name = "COMPLETION_SNS_TOPIC_ARN", value = local.completion_topic_arn }],
    var.completion_event_bus == "" ? [] : [{ name = "COMPLETION_EVENT_BUS", value = var.completion_event_bus }],
  )
  fineos_environment = var.fineos == null ? [] : [
    { name = "FINEOS_CLIENT_INTEGRATION_SERVICES_API_URL", value = var.fineos.integration_services_api_url },
    { name = "FINEOS_CLIENT_OAUTH2_URL", value = var.fineos.oauth2_url },
    { name = "FINEOS_CLIENT_OAUTH2_CLIENT_ID", value = var.fineos.oauth2_client_id },
    { name = "FINEOS_CLIENT_WSCOMPOSER_USER_ID", value = var.fineos.wscomposer_user_id },
  ]
  common_secrets = [
    { name = "DB_PASSWORD", valueFrom = var.db_password_secret_arn },
  ]
  fineos_secrets = var.fineos == null ? [] : [
    { name = "FINEOS_CLIENT_OAUTH2_CLIENT_SECRET", valueFrom = var.fineos.client_secret_arn },
  ]

  # Fargate's CPU units and the memory (MiB) each allows.
  fargate_memory = {
    "256"   = [512, 1024, 2048]
    "512"   = [for m in range(1024, 4097, 1024) : m]
    "1024"  = [for m in range(2048, 8193, 1024) : m]
    "2048"  = [for m in range(4096, 16385, 1024) : m]
    "4096"  = [for m in range(8192, 30721, 1024) : m]
    "8192"  = [for m in range(16384, 61441, 4096) : m]
    "16384" = [for m in range(32768, 122881, 8192) : m]
  }

  worker_command = concat([
    "--concurrency", tostring(var.worker_concurrency),
    "--db-max-conns", tostring(var.worker_db_max_conns),
    "--visibility-timeout", "${var.visibility_timeout_seconds}s",
    "--shutdown-timeout", "${var.worker_shutdown_timeout_seconds}s",
    "--retention", "${var.row_data_retention_days}d",
    "--summary-interval", "60s",
    "--emf",
    ], flatten([
      # A per-worker rate is passed when set; a budget when above 0.
      for f in [
        { flag = "--cognito-get-rate", value = var.cognito_rates.get, set = var.cognito_rates.get != null },
        { flag = "--cognito-create-rate", value = var.cognito_rates.create, set = var.cognito_rates.create != null },
        { flag = "--cognito-password-rate", value = var.cognito_rates.password, set = var.cognito_rates.password != null },
        { flag = "--fineos-rate", value = var.fineos_rate, set = var.fineos_rate != null },
        { flag = "--cognito-get-budget", value = var.cognito_budgets.get, set = var.cognito_budgets.get > 0 },
        { flag = "--cognito-create-budget", value = var.cognito_budgets.create, set = var.cognito_budgets.create > 0 },
        { flag = "--cognito-password-budget", value = var.cognito_budgets.password, set = var.cognito_budgets.password > 0 },
        { flag = "--fineos-budget", value = var.fineos_budget, set = var.fineos_budget > 0 },
      ] : f.set ? [f.flag, tostring(f.value)] : []
  ]))
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
