"""The node runtime: calling one node once, the same way on every engine.

- `node_call.py`: `PreparedNode` (a step's node with its cache, in-flight dedup, output
  checks and error policy) and `NodeCall` (one item's call on the local executors).
- `items.py`: the calls of a plan's steps, nested pipelines, item runners, the sequential
  run (`compile_run`, `map_items`).
- `resilience.py`, `limits.py`: retries, timeouts, circuit breakers; concurrency and rate
  limits (`ClusterLimit` across a Ray cluster).
- `grouping.py`: request grouping (`@node(batch_size=N)`); `arrow_calls.py`: Arrow calls
  (`@node(batch=True)`) made for one item.
- `context.py`: what a running node reads (`current_node()`); `events.py`, `dispatch.py`:
  the hooks of one execution, fired to the callbacks; `loop.py`: the background event loop.

It imports neither `engines/` nor `callbacks/` (tests/test_layers.py checks).
"""
