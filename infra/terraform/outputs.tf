output "archive_url" {
  description = "Value for BLACKBOX_ARCHIVE_URL."
  value       = "s3://${aws_s3_bucket.archive.bucket}/archive"
}

output "kms_key_arn" {
  value = aws_kms_key.archive.arn
}
