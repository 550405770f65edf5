variable "environment" {
  description = "test, stage, prod…"
  type        = string
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "account_id" {
  type = string
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

variable "alarm_topic_arn" {
  type    = string
  default = null
}
