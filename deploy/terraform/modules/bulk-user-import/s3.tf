# The source bucket (CSV files to import) and the results bucket
# (SUCCEEDED.csv and FAILED.csv per job): encrypted, private, TLS only.

resource "aws_s3_bucket" "source" {
  bucket = local.source_bucket
  tags   = var.tags
}

resource "aws_s3_bucket" "results" {
  bucket = local.results_bucket
  tags   = var.tags
}

locals {
  buckets = {
    source  = aws_s3_bucket.source
    results = aws_s3_bucket.results
  }
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
  count  = var.source_retention_days > 0 ? 1 : 0
  bucket = aws_s3_bucket.source.id
  rule {
    id     = "expire-sources"
    status = "Enabled"
    filter {}
    expiration {
      days = var.source_retention_days
    }
  }
}
