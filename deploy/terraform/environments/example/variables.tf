variable "environment" {
  description = "test, stage, prod, performance, training, breakfix…: lower-case letters, digits and hyphens, at most 18 (it names the resources: pfml-ENV-bulk-user-import)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,17}$", var.environment))
    error_message = "environment must be 1 to 18 lower-case letters, digits and hyphens, starting with a letter or digit."
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "account_id" {
  description = "The account's id (12 digits): it goes into ARNs and bucket names, and saves a lookup."
  type        = string
}

variable "image" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "security_group_ids" {
  type = list(string)
}

variable "cognito_user_pool_id" {
  type = string
}

variable "db_host" {
  type = string
}

variable "db_name" {
  type = string
}

variable "db_user" {
  type = string
}

variable "db_password_secret_arn" {
  type = string
}

variable "fineos" {
  type = object({
    integration_services_api_url = string
    oauth2_url                   = string
    oauth2_client_id             = string
    wscomposer_user_id           = string
    client_secret_arn            = string
  })
  default = null
}

variable "enable_s3_trigger" {
  type    = bool
  default = false
}

variable "source_bucket_name" {
  description = "An existing bucket to import from instead of creating one (see the module); null: the module creates it."
  type        = string
  default     = null
}

variable "source_prefix" {
  description = "Where in the source bucket uploads start imports (with enable_s3_trigger) and, in an existing bucket, what the splitter may read: \"\" or ending in \"/\"."
  type        = string
  default     = "incoming/"
}

variable "source_bucket_enable_eventbridge" {
  description = "Let the module turn on the existing bucket's EventBridge notifications (it then owns the bucket's whole notification configuration: see the module)."
  type        = bool
  default     = false
}

variable "completion_emails" {
  description = "E-mail addresses subscribed to the completion events (each confirms its subscription)."
  type        = list(string)
  default     = []
}

variable "completion_event_bus" {
  description = "An EventBridge bus (name or ARN) that also receives the completion events; \"\": none."
  type        = string
  default     = ""
}

variable "alarm_topic_arn" {
  type    = string
  default = null
}

variable "worker_cpu" {
  description = "CPU units of a worker task (Fargate: 256, 512, 1024…)."
  type        = number
  default     = 512
}

variable "worker_memory" {
  description = "Memory (MiB) of a worker task; it must be a Fargate size for worker_cpu."
  type        = number
  default     = 1024
}

variable "cpu_architecture" {
  description = "X86_64, or ARM64 with an image built for linux/arm64."
  type        = string
  default     = "X86_64"
}

variable "row_data_retention_days" {
  description = "Days after a job is done before its row data is deleted (0: kept)."
  type        = number
  default     = 30
}

variable "cognito_budgets" {
  description = "Cognito requests per second for all workers together, by operation (see the module)."
  type = object({
    get      = optional(number, 0)
    create   = optional(number, 0)
    password = optional(number, 0)
  })
  default = {
    get      = 80
    create   = 40
    password = 20
  }
}

variable "fineos_budget" {
  description = "FINEOS provisioning calls per second for all workers together."
  type        = number
  default     = 40
}
