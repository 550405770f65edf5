output "cluster_name" {
  value = aws_ecs_cluster.this.name
}

output "import_queue_url" {
  value = aws_sqs_queue.import.url
}

output "dlq_url" {
  value = aws_sqs_queue.dlq.url
}

# The module's own source bucket, or the existing source_bucket_name.
output "source_bucket" {
  value = local.create_source_bucket ? aws_s3_bucket.source[0].bucket : local.source_bucket
}

output "results_bucket" {
  value = aws_s3_bucket.results.bucket
}

output "splitter_task_definition" {
  value = aws_ecs_task_definition.splitter.arn_without_revision
}

output "dlq_tools_task_definition" {
  value = aws_ecs_task_definition.dlq_tools.arn_without_revision
}

output "dashboard_name" {
  value = aws_cloudwatch_dashboard.this.dashboard_name
}

output "worker_service" {
  value = aws_ecs_service.worker.name
}

output "worker_log_group" {
  value = aws_cloudwatch_log_group.worker.name
}

output "tasks_log_group" {
  value = aws_cloudwatch_log_group.tasks.name
}

output "subnet_ids" {
  value = var.subnet_ids
}

output "security_group_ids" {
  value = var.security_group_ids
}

output "assign_public_ip" {
  value = var.assign_public_ip
}

output "source_bucket_arn" {
  value = local.source_bucket_arn
}

output "source_prefix" {
  value = var.source_prefix
}

output "completion_topic_arn" {
  value = aws_sns_topic.completions.arn
}
