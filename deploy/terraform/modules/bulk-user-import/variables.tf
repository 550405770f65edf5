variable "name" {
  description = "Prefix of every resource name, e.g. pfml-test-bulk-user-import: lower-case letters, digits and hyphens, 3 to 40 characters (the longest name derived from it, the results bucket's, must fit S3's 63)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 40 lower-case letters, digits and hyphens, starting and ending with a letter or digit (it names buckets, queues, roles and rules)."
  }
}

variable "account_id" {
  description = "The AWS account's id; null: looked up with the provider's credentials (sts:GetCallerIdentity)."
  type        = string
  default     = null
  validation {
    condition     = var.account_id == null || can(regex("^[0-9]{12}$", var.account_id))
    error_message = "account_id must be 12 digits."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "image" {
  description = "The container image holding both binaries (deploy/Dockerfile), e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/bulk-user-import:1.0.0."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the tasks; they must reach the PFML database, SQS, S3, Cognito and FINEOS."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the tasks."
  type        = list(string)
}

variable "assign_public_ip" {
  description = "Give tasks a public IP (only for subnets without a NAT gateway)."
  type        = bool
  default     = false
}

# --- The queue. The worker reads maxReceiveCount from the queue; the
# defaults below are those the worker and the bootstrap assume.

variable "max_receive_count" {
  description = "Attempts per row before SQS moves its message to the DLQ (the worker fails the row on the last one itself)."
  type        = number
  default     = 5
  validation {
    condition     = var.max_receive_count >= 2
    error_message = "max_receive_count must be 2 or more: the worker needs a last attempt to fail a row on."
  }
}

variable "visibility_timeout_seconds" {
  description = "The import queue's visibility timeout; the worker's --visibility-timeout (it extends it while it works)."
  type        = number
  default     = 60
}

variable "queue_retention_seconds" {
  description = "How long an unprocessed message stays in the import queue."
  type        = number
  default     = 345600
}

# --- Buckets.

variable "results_retention_days" {
  description = "Result files (SUCCEEDED.csv, FAILED.csv) are deleted after this many days."
  type        = number
  default     = 90
}

variable "row_data_retention_days" {
  description = "The workers' maintainer deletes the per-row data (fields, emails, FEINs) the tool keeps in the PFML database for jobs finished longer ago than this many days, keeping each job's counts (worker --retention; 0: kept for ever)."
  type        = number
  default     = 30
  validation {
    condition     = var.row_data_retention_days >= 0 && floor(var.row_data_retention_days) == var.row_data_retention_days
    error_message = "row_data_retention_days must be a whole number of days, 0 or more."
  }
}

variable "source_retention_days" {
  description = "Source CSV files in the module's own source bucket are deleted after this many days (0: kept); never applied to an existing source_bucket_name."
  type        = number
  default     = 30
}

variable "source_bucket_name" {
  description = "An existing bucket to import from (e.g. the one the PFML team already uploads to) instead of the module's own: the module then creates no source bucket, leaves the bucket's settings (encryption, policy, lifecycle) to its owner, and grants the splitter only source_prefix of it. null or \"\": the module creates <name>-source-<hash>."
  type        = string
  default     = null
  validation {
    condition     = var.source_bucket_name == null || var.source_bucket_name == "" || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.source_bucket_name))
    error_message = "source_bucket_name must be an S3 bucket name: 3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit."
  }
}

variable "source_prefix" {
  description = "Key prefix under which an uploaded CSV starts an import (with enable_s3_trigger). With source_bucket_name it also bounds what the splitter may read and list in that (shared) bucket; \"\": the whole bucket. Empty, or ending in \"/\" without a leading \"/\", e.g. incoming/ or bulk-user-import/incoming/."
  type        = string
  default     = "incoming/"
  nullable    = false
  validation {
    condition     = var.source_prefix == "" || (endswith(var.source_prefix, "/") && !startswith(var.source_prefix, "/") && !strcontains(var.source_prefix, "*") && !strcontains(var.source_prefix, "?"))
    error_message = "source_prefix must be empty or a key prefix ending in \"/\", without a leading \"/\" and without * or ?, e.g. \"incoming/\"."
  }
}

variable "source_bucket_enable_eventbridge" {
  description = "With source_bucket_name and enable_s3_trigger: turn on the bucket's S3 -> EventBridge notifications (an aws_s3_bucket_notification with eventbridge = true). Off by default because aws_s3_bucket_notification is exclusive per bucket: it owns the bucket's whole notification configuration, so applying it replaces any SNS, SQS or Lambda notifications the bucket's owner configured, and destroying it removes them all. Leave it false and have the bucket's owner enable \"Send notifications to Amazon EventBridge\" on the bucket (aws s3api put-bucket-notification-configuration ... EventBridgeConfiguration={}, keeping its other notifications); without that, uploads start nothing. Ignored for the module's own bucket, whose notification the module always manages with enable_s3_trigger."
  type        = bool
  default     = false
  nullable    = false
}

variable "enable_s3_trigger" {
  description = "Start the splitter when a CSV lands under source_prefix in the source bucket."
  type        = bool
  default     = false
}

variable "trigger_splitter_args" {
  description = "Extra splitter flags for imports started by the S3 trigger, e.g. [\"--force-registration\", \"--max-failure-ratio\", \"0.2\"]."
  type        = list(string)
  default     = []
}

# --- What the workers talk to.

variable "cognito_user_pool_id" {
  description = "The PFML user pool's id (COGNITO_USER_POOL_ID)."
  type        = string
}

variable "cognito_user_pool_arn" {
  description = "The PFML user pool's ARN, for the worker's permissions."
  type        = string
}

variable "db_host" {
  type = string
}

variable "db_port" {
  type    = number
  default = 5432
}

variable "db_name" {
  type = string
}

variable "db_user" {
  type = string
}

variable "db_password_secret_arn" {
  description = "ARN of the Secrets Manager secret or SSM SecureString parameter holding the database password."
  type        = string
  validation {
    condition     = can(regex("^arn:[^:]+:(secretsmanager|ssm):", var.db_password_secret_arn))
    error_message = "db_password_secret_arn must be the ARN of a Secrets Manager secret or an SSM parameter."
  }
}

variable "fineos" {
  description = "FINEOS client settings (the FINEOS_CLIENT_* variables); null when force registration is not used."
  type = object({
    integration_services_api_url = string
    oauth2_url                   = string
    oauth2_client_id             = string
    wscomposer_user_id           = string
    client_secret_arn            = string # Secrets Manager secret or SSM SecureString parameter
  })
  default = null
  validation {
    condition     = var.fineos == null || can(regex("^arn:[^:]+:(secretsmanager|ssm):", var.fineos.client_secret_arn))
    error_message = "fineos.client_secret_arn must be the ARN of a Secrets Manager secret or an SSM parameter."
  }
}

variable "secrets_kms_key_arns" {
  description = "KMS keys that encrypt the two secrets, when they are not AWS-managed keys: the execution role gets kms:Decrypt on them."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for k in var.secrets_kms_key_arns : can(regex("^arn:[^:]+:kms:", k))])
    error_message = "secrets_kms_key_arns must hold KMS key ARNs."
  }
}

# --- The tasks.

variable "cpu_architecture" {
  description = "The tasks' CPU architecture: X86_64 or ARM64 (Graviton; build the image for linux/arm64, see the README)."
  type        = string
  default     = "X86_64"
  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

# --- The workers.

variable "worker_cpu" {
  type    = number
  default = 512
}

variable "worker_memory" {
  type    = number
  default = 1024
}

variable "worker_concurrency" {
  description = "Messages one worker handles at once."
  type        = number
  default     = 16
}

variable "worker_db_max_conns" {
  description = "Every database connection one worker opens, whatever worker_concurrency (--db-max-conns): 3 for the maintainer and the fleet's bookkeeping, 1 listening for budget changes, the rest for the rows. Keep worker_max_count * this within the connections the PFML database has free; a row holds one only for two short transactions."
  type        = number
  default     = 8
  validation {
    condition     = var.worker_db_max_conns >= 6
    error_message = "worker_db_max_conns must be at least 6 (2 for the rows, 3 for the maintainer and the fleet's bookkeeping, 1 listening for budget changes)."
  }
}

variable "worker_shutdown_timeout_seconds" {
  description = "The worker's --shutdown-timeout: time in-flight messages get on SIGTERM."
  type        = number
  default     = 20
}

variable "worker_stop_timeout_seconds" {
  description = "ECS stop timeout: SIGKILL comes this long after SIGTERM. Must exceed the shutdown timeout by the time to release messages (5 s or more); at most 120."
  type        = number
  default     = 30
}

variable "cognito_budgets" {
  description = "Requests per second to each Cognito operation for all workers together (the account's quota for its category, less PFML's headroom). The live workers share each budget through the database, whatever their number, and lower their rate when Cognito throttles. Unset: no budget (cognito_rates alone)."
  type = object({
    get      = optional(number, 0)
    create   = optional(number, 0)
    password = optional(number, 0)
  })
  default = {}
  validation {
    condition     = alltrue([for v in [var.cognito_budgets.get, var.cognito_budgets.create, var.cognito_budgets.password] : v >= 0])
    error_message = "cognito_budgets: requests per second, 0 (none) or more."
  }
}

variable "fineos_budget" {
  description = "FINEOS provisioning calls per second for all workers together; 0: none (fineos_rate alone)."
  type        = number
  default     = 0
  validation {
    condition     = var.fineos_budget >= 0
    error_message = "fineos_budget: calls per second, 0 (none) or more."
  }
}

variable "cognito_rates" {
  description = "Requests per second one worker sends to each Cognito operation at most. Without a budget these are the only limit (the fleet's total is then N times each); with a budget, a cap per worker, usually left unset (null)."
  type = object({
    get      = optional(number)
    create   = optional(number)
    password = optional(number)
  })
  default = {
    get      = 20
    create   = 10
    password = 10
  }
}

variable "fineos_rate" {
  description = "FINEOS provisioning calls per second, per worker at most; null with fineos_budget set: no cap."
  type        = number
  default     = 10
  nullable    = true
}

variable "worker_min_count" {
  description = "Fewest workers; 0 lets the service scale to zero when the queue is empty."
  type        = number
  default     = 0
}

variable "worker_max_count" {
  description = "Most workers. With cognito_budgets the fleet stays within the budgets whatever this is; without, worker_max_count * cognito_rates.create must stay under the account's AdminCreateUser quota, minus headroom for PFML."
  type        = number
  default     = 4
}

variable "backlog_per_worker" {
  description = "Target messages waiting per worker: the service scales so that visible messages / running workers stays near it."
  type        = number
  default     = 500
}

# --- The splitter.

variable "splitter_cpu" {
  type    = number
  default = 512
}

variable "splitter_memory" {
  type    = number
  default = 1024
}

# --- Logs and alarms.

variable "log_retention_days" {
  type    = number
  default = 30
}

variable "alarm_topic_arn" {
  description = "SNS topic for the alarms (null: alarms without actions)."
  type        = string
  default     = null
}

variable "oldest_message_alarm_seconds" {
  description = "Alarm when the oldest message of the import queue has waited this long."
  type        = number
  default     = 3600
}

# --- Completion events (completions.tf).

variable "completion_emails" {
  description = "Addresses subscribed by e-mail to the completion topic (<name>-completions): each receives one message per job completed or cancelled, once it has confirmed the subscription AWS mails it."
  type        = list(string)
  default     = []
  nullable    = false
  validation {
    condition     = alltrue([for e in var.completion_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "completion_emails must hold e-mail addresses."
  }
}

variable "completion_event_bus" {
  description = "An EventBridge event bus (its name, or its ARN for another account's bus) the workers also send each completion event to (COMPLETION_EVENT_BUS; they get events:PutEvents on it). \"\": none."
  type        = string
  default     = ""
  nullable    = false
  validation {
    condition     = var.completion_event_bus == "" || can(regex("^[A-Za-z0-9._/-]{1,256}$", var.completion_event_bus)) || can(regex("^arn:[^:]+:events:[^:]+:[0-9]{12}:event-bus/[A-Za-z0-9._/-]{1,256}$", var.completion_event_bus))
    error_message = "completion_event_bus must be an event bus's name or ARN, or \"\"."
  }
}
