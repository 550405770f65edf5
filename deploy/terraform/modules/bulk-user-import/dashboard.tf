# One CloudWatch dashboard: the queue, the workers, the rows and their
# errors, and the circuit breakers.

locals {
  metrics_namespace = "BulkUserImport" # the workers' EMF metrics
  dashboard_widgets = [
    {
      type = "metric", x = 0, y = 0, width = 12, height = 6
      properties = {
        title  = "Import queue: backlog"
        region = local.region
        stat   = "Maximum"
        period = 60
        metrics = [
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", local.import_queue_name, { label = "waiting" }],
          ["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", local.import_queue_name, { label = "in flight" }],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 0, width = 12, height = 6
      properties = {
        title   = "Import queue: age of the oldest message (s)"
        region  = local.region
        stat    = "Maximum"
        period  = 60
        metrics = [["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", local.import_queue_name]]
      }
    },
    {
      type = "metric", x = 0, y = 6, width = 12, height = 6
      properties = {
        title   = "Dead-letter queue: failed rows waiting"
        region  = local.region
        stat    = "Maximum"
        period  = 60
        metrics = [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", local.dlq_name]]
      }
    },
    {
      type = "metric", x = 12, y = 6, width = 12, height = 6
      properties = {
        title   = "Running workers"
        region  = local.region
        stat    = "Maximum"
        period  = 60
        metrics = [["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", var.name, "ServiceName", "worker"]]
      }
    },
    {
      type = "metric", x = 0, y = 12, width = 12, height = 6
      properties = {
        title  = "Rows per minute"
        region = local.region
        stat   = "Sum"
        period = 60
        metrics = [
          [local.metrics_namespace, "RowsSucceeded", "Service", "worker", { label = "succeeded" }],
          [local.metrics_namespace, "RowsFailed", "Service", "worker", { label = "failed" }],
          [local.metrics_namespace, "RowsRetried", "Service", "worker", { label = "retried" }],
          [local.metrics_namespace, "RowsPaused", "Service", "worker", { label = "paused" }],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 12, width = 12, height = 6
      properties = {
        title   = "Errors by code, per minute"
        region  = local.region
        stat    = "Sum"
        period  = 60
        metrics = [[{ expression = "SEARCH('{${local.metrics_namespace},Service,ErrorCode} MetricName=\"Errors\"', 'Sum', 60)", id = "errors", label = "" }]]
      }
    },
    {
      type = "metric", x = 0, y = 18, width = 24, height = 6
      properties = {
        title  = "Circuit breakers open (paused dependencies), and messages re-sent by the maintainer"
        region = local.region
        stat   = "Maximum"
        period = 60
        metrics = [
          [local.metrics_namespace, "BreakersOpen", "Service", "worker", { label = "breakers open (most on one worker)" }],
          [local.metrics_namespace, "RowsResent", "Service", "worker", { label = "rows re-sent", stat = "Sum" }],
        ]
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}
