# The evidence store: an S3 bucket with Object Lock in COMPLIANCE mode, encrypted with a
# customer-managed KMS key. Nobody, root account included, can delete or overwrite an archive
# object before its retention ends; Blackbox refuses to start against a bucket without Object
# Lock (BLACKBOX_REQUIRE_WORM). Kafka, the workers and ClickHouse are deployed by the platform
# that hosts them; this module only grants the workers and the API what they need here.

resource "aws_kms_key" "archive" {
  description             = "${var.name} archive encryption"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  tags                    = var.tags
}

resource "aws_kms_alias" "archive" {
  name          = "alias/${var.name}-archive"
  target_key_id = aws_kms_key.archive.key_id
}

resource "aws_s3_bucket" "archive" {
  bucket_prefix       = "${var.name}-archive-"
  object_lock_enabled = true
  tags                = var.tags
}

resource "aws_s3_bucket_versioning" "archive" {
  bucket = aws_s3_bucket.archive.id
  versioning_configuration {
    status = "Enabled" # required by Object Lock
  }
}

resource "aws_s3_bucket_object_lock_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.retention_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.archive]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.archive.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "archive" {
  bucket                  = aws_s3_bucket.archive.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

data "aws_iam_policy_document" "archive_bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.archive.arn,
      "${aws_s3_bucket.archive.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "archive" {
  bucket = aws_s3_bucket.archive.id
  policy = data.aws_iam_policy_document.archive_bucket.json
}

# The worker writes new objects (conditional puts with retention) and reads them back for
# recovery. It cannot delete, shorten retention or bypass governance.
data "aws_iam_policy_document" "worker" {
  statement {
    actions   = ["s3:PutObject", "s3:PutObjectRetention", "s3:GetObject", "s3:GetObjectRetention"]
    resources = ["${aws_s3_bucket.archive.arn}/*"]
  }
  statement {
    actions   = ["s3:ListBucket", "s3:GetBucketObjectLockConfiguration"]
    resources = [aws_s3_bucket.archive.arn]
  }
  statement {
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.archive.arn]
  }
}

# The API only reads.
data "aws_iam_policy_document" "api" {
  statement {
    actions   = ["s3:GetObject", "s3:GetObjectRetention"]
    resources = ["${aws_s3_bucket.archive.arn}/*"]
  }
  statement {
    actions   = ["s3:ListBucket", "s3:GetBucketObjectLockConfiguration"]
    resources = [aws_s3_bucket.archive.arn]
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.archive.arn]
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "${var.name}-archive-writer"
  role   = var.worker_role_name
  policy = data.aws_iam_policy_document.worker.json
}

resource "aws_iam_role_policy" "api" {
  name   = "${var.name}-archive-reader"
  role   = var.api_role_name
  policy = data.aws_iam_policy_document.api.json
}
