output "cluster_name" {
  value = aws_ecs_cluster.this.name
}

output "import_queue_url" {
  value = aws_sqs_queue.import.url
}

output "dlq_url" {
  value = aws_sqs_queue.dlq.url
}

output "source_bucket" {
  value = aws_s3_bucket.source.bucket
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
