# Tested (make test: validate and an offline plan) with Terraform 1.11.4 and
# the AWS provider 5.100.0.
terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
}
