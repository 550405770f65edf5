# Least privilege: each task role has exactly the actions its binary calls,
# on those resources only. deploy/deploy_test.go checks these statements
# against the SDK calls in the code.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# --- Execution role: pull the image, write logs, read the two secrets.

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  dynamic "statement" {
    for_each = length(var.secrets_kms_key_arns) > 0 ? [1] : []
    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = var.secrets_kms_key_arns
    }
  }
  dynamic "statement" {
    for_each = length(local.secretsmanager_arns) > 0 ? [1] : []
    content {
      sid       = "ReadSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = local.secretsmanager_arns
    }
  }
  dynamic "statement" {
    for_each = length(local.ssm_arns) > 0 ? [1] : []
    content {
      sid       = "ReadParameters"
      actions   = ["ssm:GetParameters"]
      resources = local.ssm_arns
    }
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}

# --- Worker: consume the import queue, dead-letter failures, manage
# Cognito users of the pool, write result files, publish completion events
# (its maintainer), protect its task.

data "aws_iam_policy_document" "worker" {
  statement {
    sid = "ConsumeImportQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:SendMessage",
    ]
    resources = [local.import_queue_arn]
  }
  statement {
    sid = "DeadLetter"
    # GetQueueAttributes: the DLQ's retention, after which the maintainer
    # re-sends rows whose message SQS moved there.
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes"]
    resources = [local.dlq_arn]
  }
  statement {
    sid = "CognitoUsers"
    actions = [
      "cognito-idp:AdminGetUser",
      "cognito-idp:AdminCreateUser",
      "cognito-idp:AdminSetUserPassword",
      "cognito-idp:DescribeUserPool", # the start-up check
    ]
    resources = [var.cognito_user_pool_arn]
  }
  statement {
    sid       = "WriteResults"
    actions   = ["s3:PutObject"]
    resources = ["${local.results_bucket_arn}/*"]
  }
  statement {
    sid       = "PublishCompletions"
    actions   = ["sns:Publish"]
    resources = [local.completion_topic_arn]
  }
  dynamic "statement" {
    for_each = var.completion_event_bus == "" ? [] : [1]
    content {
      sid       = "PutCompletionEvents"
      actions   = ["events:PutEvents"]
      resources = [local.completion_event_bus_arn]
    }
  }
  statement {
    sid       = "ScaleInProtection"
    actions   = ["ecs:UpdateTaskProtection"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${var.name}/*"]
  }
}

resource "aws_iam_role" "worker" {
  name               = "${var.name}-worker"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "worker" {
  name   = "worker"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

# --- Splitter: read sources, enqueue rows, write result files (when a job
# is complete once recorded, and on cancel).

data "aws_iam_policy_document" "splitter" {
  statement {
    sid       = "ReadSources"
    actions   = ["s3:GetObject"]
    resources = ["${local.source_bucket_arn}/${local.source_read_prefix}*"]
  }
  # Not called by the code: with it, a GetObject of a missing key reads 404
  # (the key does not exist) instead of 403 (access denied). On a shared
  # bucket it is bounded to the prefix; IfExists, because the check S3 makes
  # for a GetObject carries no s3:prefix.
  statement {
    sid       = "MissingKeysReadNotFound"
    actions   = ["s3:ListBucket"]
    resources = [local.source_bucket_arn]
    dynamic "condition" {
      for_each = local.source_read_prefix == "" ? [] : [1]
      content {
        test     = "StringLikeIfExists"
        variable = "s3:prefix"
        values   = ["${local.source_read_prefix}*"]
      }
    }
  }
  statement {
    sid       = "EnqueueRows"
    actions   = ["sqs:SendMessage"]
    resources = [local.import_queue_arn]
  }
  statement {
    sid       = "WriteResults"
    actions   = ["s3:PutObject"]
    resources = ["${local.results_bucket_arn}/*"]
  }
}

resource "aws_iam_role" "splitter" {
  name               = "${var.name}-splitter"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "splitter" {
  name   = "splitter"
  role   = aws_iam_role.splitter.id
  policy = data.aws_iam_policy_document.splitter.json
}

# --- DLQ tools (worker dlq list|replay|purge): read and delete dead
# letters, send replays to the import queue, write result files.

data "aws_iam_policy_document" "dlq_tools" {
  statement {
    sid = "WorkTheDLQ"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
    ]
    resources = [local.dlq_arn]
  }
  statement {
    sid       = "Replay"
    actions   = ["sqs:SendMessage"]
    resources = [local.import_queue_arn]
  }
  statement {
    sid       = "WriteResults"
    actions   = ["s3:PutObject"]
    resources = ["${local.results_bucket_arn}/*"]
  }
}

resource "aws_iam_role" "dlq_tools" {
  name               = "${var.name}-dlq-tools"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "dlq_tools" {
  name   = "dlq-tools"
  role   = aws_iam_role.dlq_tools.id
  policy = data.aws_iam_policy_document.dlq_tools.json
}
