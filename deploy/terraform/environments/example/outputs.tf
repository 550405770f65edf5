# deploy/run-task.sh reads these.

output "cluster_name" {
  value = module.bulk_user_import.cluster_name
}

output "splitter_task_definition" {
  value = module.bulk_user_import.splitter_task_definition
}

output "dlq_tools_task_definition" {
  value = module.bulk_user_import.dlq_tools_task_definition
}

output "subnet_ids" {
  value = module.bulk_user_import.subnet_ids
}

output "security_group_ids" {
  value = module.bulk_user_import.security_group_ids
}

output "assign_public_ip" {
  value = module.bulk_user_import.assign_public_ip
}

output "source_bucket" {
  value = module.bulk_user_import.source_bucket
}

output "results_bucket" {
  value = module.bulk_user_import.results_bucket
}

output "worker_log_group" {
  value = module.bulk_user_import.worker_log_group
}

output "tasks_log_group" {
  value = module.bulk_user_import.tasks_log_group
}

output "import_queue_url" {
  value = module.bulk_user_import.import_queue_url
}

output "dlq_url" {
  value = module.bulk_user_import.dlq_url
}

output "source_bucket_arn" {
  value = module.bulk_user_import.source_bucket_arn
}

output "source_prefix" {
  value = module.bulk_user_import.source_prefix
}

output "completion_topic_arn" {
  value = module.bulk_user_import.completion_topic_arn
}
