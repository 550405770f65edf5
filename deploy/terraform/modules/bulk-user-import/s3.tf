# The source bucket (CSV files to import) and the results bucket
# (SUCCEEDED.csv and FAILED.csv per job): encrypted, private, TLS only.

# With source_bucket_name, no source bucket is created: the existing one is
# its owner's to configure (encryption, policy, lifecycle).
resource "aws_s3_bucket" "source" {
  count  = local.create_source_bucket ? 1 : 0
  bucket = local.source_bucket
  tags   = var.tags
}

# The source bucket was a single resource before source_bucket_name: keep
# it (and its state) rather than destroy and recreate it.
moved {
  from = aws_s3_bucket.source
  to   = aws_s3_bucket.source[0]
}

resource "aws_s3_bucket" "results" {
  bucket = local.results_bucket
  tags   = var.tags
}

locals {
  # The buckets the module creates, and so configures.
  buckets = merge(
    { results = aws_s3_bucket.results },
    local.create_source_bucket ? { source = aws_s3_bucket.source[0] } : {},
  )
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = local.buckets
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.buckets
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"] # a Deny: every action, over plain HTTP
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]
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

resource "aws_s3_bucket_policy" "this" {
  for_each   = local.buckets
  bucket     = each.value.id
  policy     = data.aws_iam_policy_document.tls_only[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "results" {
  bucket = aws_s3_bucket.results.id
  rule {
    id     = "expire-results"
    status = "Enabled"
    filter {}
    expiration {
      days = var.results_retention_days
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "source" {
  # Never on an existing bucket: its files are its owner's.
  count  = local.create_source_bucket && var.source_retention_days > 0 ? 1 : 0
  bucket = aws_s3_bucket.source[0].id
  rule {
    id     = "expire-sources"
    status = "Enabled"
    filter {}
    expiration {
      days = var.source_retention_days
    }
  }
}
