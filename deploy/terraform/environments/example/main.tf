# An example environment: fill in terraform.tfvars (see
# terraform.tfvars.example), then terraform init && terraform apply.
# Keep the state in your usual backend, for instance:
#
# terraform {
#   backend "s3" {
#     bucket = "massgov-pfml-terraform-state"
#     key    = "bulk-user-import/test.tfstate"
#     region = "us-east-1"
#   }
# }

provider "aws" {
  region = var.region
}

module "bulk_user_import" {
  source = "../../modules/bulk-user-import"

  name       = "pfml-${var.environment}-bulk-user-import"
  account_id = var.account_id
  image      = var.image
  tags = {
    environment = var.environment
    service     = "bulk-user-import"
  }

  subnet_ids         = var.subnet_ids
  security_group_ids = var.security_group_ids

  cognito_user_pool_id   = var.cognito_user_pool_id
  cognito_user_pool_arn  = "arn:aws:cognito-idp:${var.region}:${var.account_id}:userpool/${var.cognito_user_pool_id}"
  db_host                = var.db_host
  db_name                = var.db_name
  db_user                = var.db_user
  db_password_secret_arn = var.db_password_secret_arn
  fineos                 = var.fineos

  # Budgets for the whole fleet, whatever the number of workers: 40
  # AdminCreateUser calls a second, under the default quota of 50 (its
  # UserCreation category), leaving PFML its share; the workers lower
  # their rate if Cognito throttles anyway. Check the quotas of the
  # account's categories in Service Quotas before raising them.
  worker_max_count = 8
  cognito_budgets  = var.cognito_budgets
  fineos_budget    = var.fineos_budget
  # No per-worker caps: the budgets govern.
  cognito_rates = {}
  fineos_rate   = null

  worker_cpu              = var.worker_cpu
  worker_memory           = var.worker_memory
  cpu_architecture        = var.cpu_architecture
  row_data_retention_days = var.row_data_retention_days

  # An existing source bucket (e.g. PFML's upload bucket) instead of the
  # module's own, and the prefix of it the tool may read.
  source_bucket_name               = var.source_bucket_name
  source_prefix                    = var.source_prefix
  source_bucket_enable_eventbridge = var.source_bucket_enable_eventbridge

  enable_s3_trigger = var.enable_s3_trigger
  alarm_topic_arn   = var.alarm_topic_arn

  completion_emails    = var.completion_emails
  completion_event_bus = var.completion_event_bus
}
