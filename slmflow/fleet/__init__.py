"""The fleet: Celery workers on Redis that run jobs submitted through the SDK.

Its modules form a line, each importing only those above it: `keys` and `lua` (the Redis key
schema and the atomic scripts), `records`, `store` and `calls` (jobs and tool calls in Redis),
`queues` (names, shared Celery configuration, publishing: all the SDK needs), `executor` and
`tools_worker` (both sides of a tool call), `fencing` (checkpoints fenced by the lease),
`reconciler`, `runtime` (a jobs worker process), `process` (per-process state), `tasks`, `app`.
"""

__all__: list[str] = []
