# The worker service and the one-off task definitions (splitter, DLQ tools).

locals {
  # The result files are staged in TMPDIR=/scratch: a writable volume under
  # a read-only root filesystem, owned by the image's non-root user (the
  # Dockerfile declares it).
  tmp_volume = "scratch"
  container_defaults = {
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    mountPoints            = [{ sourceVolume = local.tmp_volume, containerPath = "/scratch", readOnly = false }]
    environment            = local.common_environment
    secrets                = local.common_secrets
  }
  runtime_platform = {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }
}

resource "aws_ecs_task_definition" "worker" {
  family                   = "${var.name}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.worker_cpu
  memory                   = var.worker_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.worker.arn
  volume {
    name = local.tmp_volume
  }
  runtime_platform {
    operating_system_family = local.runtime_platform.operating_system_family
    cpu_architecture        = local.runtime_platform.cpu_architecture
  }
  container_definitions = jsonencode([merge(local.container_defaults, {
    name        = "worker"
    entryPoint  = ["/usr/local/bin/worker"]
    command     = local.worker_command
    environment = concat(local.common_environment, local.completion_environment, local.fineos_environment)
    secrets     = concat(local.common_secrets, local.fineos_secrets)
    # SIGTERM, then SIGKILL after this: the worker's shutdown deadline plus
    # the time to release unfinished messages and flush its deletes.
    stopTimeout = var.worker_stop_timeout_seconds
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "worker"
      }
    }
  })])
  tags = var.tags

  lifecycle {
    precondition {
      condition     = contains(lookup(local.fargate_memory, tostring(var.worker_cpu), []), var.worker_memory)
      error_message = "worker_cpu ${var.worker_cpu} with worker_memory ${var.worker_memory} is not a Fargate size: see the CPU and memory pairs in the ECS documentation (e.g. 512 with 1024 to 4096 in steps of 1024)."
    }
    precondition {
      condition     = var.worker_stop_timeout_seconds >= var.worker_shutdown_timeout_seconds + 5 && var.worker_stop_timeout_seconds <= 120
      error_message = "worker_stop_timeout_seconds must exceed worker_shutdown_timeout_seconds by 5 s or more, and be at most 120 (Fargate)."
    }
    precondition {
      condition     = var.worker_shutdown_timeout_seconds < 30
      error_message = "worker_shutdown_timeout_seconds must stay below 30 s, ECS's default stop timeout, so that scale-in never kills a worker mid-message."
    }
  }
}

resource "aws_ecs_service" "worker" {
  name                              = "worker"
  cluster                           = aws_ecs_cluster.this.id
  task_definition                   = aws_ecs_task_definition.worker.arn
  launch_type                       = "FARGATE"
  desired_count                     = var.worker_min_count
  enable_execute_command            = false
  health_check_grace_period_seconds = 0
  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = var.assign_public_ip
  }
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  tags = var.tags

  lifecycle {
    # Autoscaling owns the number of workers.
    ignore_changes = [desired_count]
  }
}

# The splitter, run on demand (deploy/run-import.sh, or the S3 trigger).
resource "aws_ecs_task_definition" "splitter" {
  family                   = local.splitter_family
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.splitter_cpu
  memory                   = var.splitter_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.splitter.arn
  volume {
    name = local.tmp_volume
  }
  runtime_platform {
    operating_system_family = local.runtime_platform.operating_system_family
    cpu_architecture        = local.runtime_platform.cpu_architecture
  }
  container_definitions = jsonencode([merge(local.container_defaults, {
    name       = "splitter"
    entryPoint = ["/usr/local/bin/splitter"]
    command    = ["--help"]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.tasks.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "splitter"
      }
    }
  })])
  tags = var.tags

  lifecycle {
    precondition {
      condition     = contains(lookup(local.fargate_memory, tostring(var.splitter_cpu), []), var.splitter_memory)
      error_message = "splitter_cpu ${var.splitter_cpu} with splitter_memory ${var.splitter_memory} is not a Fargate size: see the CPU and memory pairs in the ECS documentation (e.g. 512 with 1024 to 4096 in steps of 1024)."
    }
  }
}

# The DLQ tools (worker dlq list|replay|purge), run on demand.
resource "aws_ecs_task_definition" "dlq_tools" {
  family                   = local.dlq_tools_family
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.dlq_tools.arn
  volume {
    name = local.tmp_volume
  }
  runtime_platform {
    operating_system_family = local.runtime_platform.operating_system_family
    cpu_architecture        = local.runtime_platform.cpu_architecture
  }
  container_definitions = jsonencode([merge(local.container_defaults, {
    name       = "dlq-tools"
    entryPoint = ["/usr/local/bin/worker", "dlq"]
    command    = ["list"]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.tasks.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "dlq-tools"
      }
    }
  })])
  tags = var.tags
}
