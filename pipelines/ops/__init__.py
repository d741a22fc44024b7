"""Operating jobs: runs under locks with manifests and logs, job sets, schedules, status."""
