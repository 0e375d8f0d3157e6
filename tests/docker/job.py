"""The job tests/docker/test_docker_cluster.py submits with `ray job submit`: a pipeline
over the Parquet dataset in /data/input, on the Ray cluster the job runs in, written to
/data/output with the Ray node that computed each row."""

import time

import ray

from hypernodes_daft import DaftEngine, Pipeline, node, read_parquet


@node(output_name="squared")
def square(x: int) -> int:
    time.sleep(0.05)  # long enough that every node of the cluster gets rows
    return x * x


@node(output_name="ray_node")
def computed_on(squared: int) -> str:
    return ray.get_runtime_context().get_node_id()


pipeline = Pipeline(nodes=[square, computed_on], engine=DaftEngine(runner="ray", partitions=6))
files = pipeline.write_parquet(read_parquet("/data/input"), "/data/output", map_over="x")
print(f"wrote {len(files)} file(s)")
