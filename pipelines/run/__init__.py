"""One run of one job: the runner, its rate limiter, result cache, plan and report."""
