# Optional: a CSV landing under source_prefix in the source bucket starts
# the splitter on it (EventBridge -> ECS RunTask).

resource "aws_s3_bucket_notification" "source" {
  count       = var.enable_s3_trigger ? 1 : 0
  bucket      = aws_s3_bucket.source.id
  eventbridge = true
}

resource "aws_cloudwatch_event_rule" "csv_uploaded" {
  count       = var.enable_s3_trigger ? 1 : 0
  name        = "${var.name}-csv-uploaded"
  description = "A CSV landed under ${var.source_prefix} in the source bucket: import it."
  event_pattern = jsonencode({
    source      = ["aws.s3"]
    detail-type = ["Object Created"]
    detail = {
      bucket = { name = [aws_s3_bucket.source.bucket] }
      object = { key = [{ prefix = var.source_prefix }] }
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
    sid       = "RunSplitter"
    actions   = ["ecs:RunTask"]
    resources = [aws_ecs_task_definition.splitter.arn_without_revision]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }
  statement {
    sid       = "PassTaskRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.splitter.arn, aws_iam_role.execution.arn]
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
