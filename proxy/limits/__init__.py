"""Limits, budgets and provider capacity: check-and-reserve before the call, settle after it.

- `model`: the facts they work with (counters, demands, decisions, reservations);
- `binding`: which counters bind a (route, provider, model), worked out once per snapshot;
- `estimate`: what a request reserves before the call (tokens, micro-USD);
- `algorithm`: the counting rules (token buckets, leases, budget windows), pure;
- `memory`: those rules in the process (`modelway dev`, a lone sidecar without Redis);
- `redis_store`: the same rules as one atomic Lua script per check (`redis_script`), shared by every sidecar
  (imported only when a Redis URL and limits are configured: the sidecar's memory matters);
- `resp`: the lean pipelined Redis client it speaks through (redis-py, built by `shared.redis_client`,
  only for Sentinel and Cluster);
- `headers`: the 429 and the rate-limit headers the OpenAI and Anthropic SDKs understand;
- `settings`: where the counters live, and `build_limiter`;
- `slot`: which limiter the sidecar counts with across snapshots (built when first needed);
- `gate`: the admit stage's decisions, pure (go, skip, reroute, refuse; what a request is charged);
- `status`: what the admin port's /limits shows.

The admit stage (`proxy.request.admit`) calls these before each backend's first call, and the
account stage settles; with no limits in the snapshot the binding table is empty and a request
pays one attribute read.
"""
