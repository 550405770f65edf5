# Completion events: the workers' maintainer publishes one event per job
# completed or cancelled (no personal data) to this topic, and to
# completion_event_bus when given. Operators subscribe by e-mail
# (completion_emails; each address confirms its subscription) or add their
# own subscriptions.

resource "aws_sns_topic" "completions" {
  name              = "${var.name}-completions"
  kms_master_key_id = "alias/aws/sns"
  tags              = var.tags
}

data "aws_iam_policy_document" "completions_tls_only" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sns:Publish"]
    resources = [local.completion_topic_arn]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# Replaces the topic's default policy: the account's principals publish
# with their IAM permissions (the worker's role), over TLS only.
resource "aws_sns_topic_policy" "completions" {
  arn    = aws_sns_topic.completions.arn
  policy = data.aws_iam_policy_document.completions_tls_only.json
}

resource "aws_sns_topic_subscription" "completion_emails" {
  for_each  = toset(var.completion_emails)
  topic_arn = aws_sns_topic.completions.arn
  protocol  = "email"
  endpoint  = each.value
}
