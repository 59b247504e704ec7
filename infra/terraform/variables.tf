variable "name" {
  description = "Prefix for every resource of this Blackbox deployment."
  type        = string
  default     = "blackbox"
}

variable "retention_days" {
  description = "Object Lock COMPLIANCE retention of every archive object. Cannot be shortened once written."
  type        = number
  default     = 2555 # seven years

  validation {
    condition     = var.retention_days >= 1
    error_message = "Retention must be at least one day."
  }
}

variable "worker_role_name" {
  description = "Existing IAM role the seal workers run as (EKS service account, ECS task role, EC2 profile)."
  type        = string
}

variable "api_role_name" {
  description = "Existing IAM role the API runs as. It may read the archive, never write it."
  type        = string
}

variable "tags" {
  type    = map(string)
  default = {}
}
