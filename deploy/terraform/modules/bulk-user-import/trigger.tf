# Optional: a CSV landing under source_prefix in the source bucket starts
# the splitter on it (EventBridge -> ECS RunTask). A start that fails is
# retried, then kept in a dead-letter queue; both raise an alarm. The rule
# matches the bucket by name: the module's own or an existing one alike.

# S3 -> EventBridge notifications. aws_s3_bucket_notification owns a
# bucket's whole notification configuration, so on an existing (shared)
# bucket it is only managed when asked (source_bucket_enable_eventbridge);
# otherwise the bucket's owner turns EventBridge notifications on.
resource "aws_s3_bucket_notification" "source" {
  count       = var.enable_s3_trigger && (local.create_source_bucket || var.source_bucket_enable_eventbridge) ? 1 : 0
  bucket      = local.create_source_bucket ? aws_s3_bucket.source[0].id : local.source_bucket
  eventbridge = true
}

resource "aws_cloudwatch_event_rule" "csv_uploaded" {
  count       = var.enable_s3_trigger ? 1 : 0
  name        = "${var.name}-csv-uploaded"
  description = "A .csv file landed under ${var.source_prefix} in the source bucket: import it."
  event_pattern = jsonencode({
    source      = ["aws.s3"]
    detail-type = ["Object Created"]
    detail = {
      bucket = { name = [local.source_bucket] }
      object = { key = [{ wildcard = "${var.source_prefix}*.csv" }] }
    }
  })
  tags = var.tags
}

data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "events_run_splitter" {
  statement {
    sid = "RunSplitter"
    # RunTask is authorised on a task definition's revisions: family:*.
    actions   = ["ecs:RunTask"]
    resources = ["${local.task_definition}/${local.splitter_family}:*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [local.cluster_arn]
    }
  }
  statement {
    sid       = "PassTaskRoles"
    actions   = ["iam:PassRole"]
    resources = ["${local.role_arn}/${var.name}-splitter", "${local.role_arn}/${var.name}-execution"]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "events" {
  count              = var.enable_s3_trigger ? 1 : 0
  name               = "${var.name}-events"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "events" {
  count  = var.enable_s3_trigger ? 1 : 0
  name   = "run-splitter"
  role   = aws_iam_role.events[0].id
  policy = data.aws_iam_policy_document.events_run_splitter.json
}

# Starts that still fail after the retries land here, with the event.
resource "aws_sqs_queue" "trigger_dlq" {
  count                     = var.enable_s3_trigger ? 1 : 0
  name                      = "${var.name}-trigger-dlq"
  message_retention_seconds = 1209600 # 14 days
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

data "aws_iam_policy_document" "trigger_dlq" {
  count = var.enable_s3_trigger ? 1 : 0
  statement {
    sid       = "EventBridgeDeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.trigger_dlq[0].arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.csv_uploaded[0].arn]
    }
  }
}

resource "aws_sqs_queue_policy" "trigger_dlq" {
  count     = var.enable_s3_trigger ? 1 : 0
  queue_url = aws_sqs_queue.trigger_dlq[0].id
  policy    = data.aws_iam_policy_document.trigger_dlq[0].json
}

resource "aws_cloudwatch_event_target" "splitter" {
  count    = var.enable_s3_trigger ? 1 : 0
  rule     = aws_cloudwatch_event_rule.csv_uploaded[0].name
  arn      = aws_ecs_cluster.this.arn
  role_arn = aws_iam_role.events[0].arn
  ecs_target {
    task_definition_arn = aws_ecs_task_definition.splitter.arn_without_revision
    launch_type         = "FARGATE"
    task_count          = 1
    network_configuration {
      subnets          = var.subnet_ids
      security_groups  = var.security_group_ids
      assign_public_ip = var.assign_public_ip
    }
  }
  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 10
  }
  dead_letter_config {
    arn = aws_sqs_queue.trigger_dlq[0].arn
  }
  # The container's command: the extra flags, then the object that landed.
  # (S3 event keys are URL-encoded: keep object names plain.) jsonencode
  # escapes < and >, which EventBridge placeholders need as they are.
  input_transformer {
    input_paths = {
      bucket = "$.detail.bucket.name"
      key    = "$.detail.object.key"
    }
    input_template = replace(replace(jsonencode({
      containerOverrides = [{
        name    = "splitter"
        command = concat(var.trigger_splitter_args, ["s3://<bucket>/<key>"])
      }]
    }), "\\u003c", "<"), "\\u003e", ">")
  }
}

resource "aws_cloudwatch_metric_alarm" "trigger_failed" {
  count               = var.enable_s3_trigger ? 1 : 0
  alarm_name          = "${var.name}-trigger-failed"
  alarm_description   = "An uploaded CSV did not start the splitter (EventBridge could not run the task): see the dead-letter queue ${var.name}-trigger-dlq for the events, then start the imports with deploy/run-import.sh."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  metric_query {
    id          = "failed"
    expression  = "FILL(invocations_failed, 0) + FILL(dead_letters, 0)"
    return_data = true
  }
  metric_query {
    id = "invocations_failed"
    metric {
      namespace   = "AWS/Events"
      metric_name = "FailedInvocations"
      period      = 300
      stat        = "Sum"
      dimensions  = { RuleName = aws_cloudwatch_event_rule.csv_uploaded[0].name }
    }
  }
  metric_query {
    id = "dead_letters"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      period      = 300
      stat        = "Maximum"
      dimensions  = { QueueName = aws_sqs_queue.trigger_dlq[0].name }
    }
  }
  tags = var.tags
}
