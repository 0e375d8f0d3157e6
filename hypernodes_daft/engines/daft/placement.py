"""Where a group's Daft function runs: its resource requests in Daft's terms, and the check
that the runner's machines can hold them, made while the frame is built (nothing ran yet).

    Cluster("ray", None).check(group.placement)   # ResourceError naming the node, if not
    udf_options(group, cluster)  # {"gpus": 1.0, "ray_options": {"resources": {"host": 1}}}

On Ray, Daft passes `cpus`/`gpus` and `ray_options` (custom resources) to Ray's scheduler;
a request no node can hold would wait forever, so it is refused up front. On the native
runner the machine is this one: its CPUs, visible GPUs and memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ...resources import Placement, Resources, check_fits, local_machine
from .groups import Group

# On Ray a replica (or a custom-resource function) is an actor: it holds one CPU unless it
# says otherwise, so "replicas=8" on a 2-CPU cluster is refused rather than left waiting
# for CPUs that never come.
REPLICA_CPUS = 1.0


@dataclass
class Cluster:
    """The machines a job runs on, read once, when the first group asks for something."""

    runner: str
    address: str | None = None
    given_partitions: int | None = None  # DaftEngine(partitions=...)
    _machines: list[dict[str, float]] | None = field(default=None, repr=False)

    @property
    def native(self) -> bool:
        return self.runner == "native"

    def check(self, placement: Placement) -> None:
        if self.native:  # custom resources name machines of a Ray cluster; here there is one
            request = replace(placement.request, custom=())
        else:
            request = per_instance(placement.request, placement.replicas)
        where = "this machine" if self.native else "the Ray cluster"
        placement = Placement(placement.label, request, placement.replicas)
        check_fits([placement], self.machines(), where)

    def partitions(self) -> int:
        """Partitions of a frame on Ray: as given, else twice the cluster's CPUs (one
        partition would use one CPU)."""
        cpus = sum(m.get("CPU", 0) for m in self.machines())
        return self.given_partitions or max(1, int(cpus) * 2)

    def stage(self, frame: Any) -> Any:
        """`frame` ending a stage, on Ray: Daft runs a partition's chain of functions as one
        task, placed where its most demanding function can run; splitting the frame anew
        lets the steps before a GPU (or custom-resource) function run anywhere. Daft drops
        an `into_partitions` to the count the frame already has (the steps before were then
        pulled onto the GPU node: seen), and `repartition` would reorder the rows."""
        if self.native:
            return frame
        count = self.partitions()
        return frame.into_partitions(count + 1 if frame.num_partitions() == count else count)

    def holds(self, request: Resources) -> int:
        """How many calls with `request` the machines hold at once, all together."""
        return sum(request.copies_on(m) for m in self.machines())

    def machines(self) -> list[dict[str, float]]:
        if self._machines is None:
            self._machines = [local_machine()] if self.native else _ray_nodes(self.address)
        return self._machines

    def __getstate__(self) -> dict[str, Any]:
        # workers never check: they get who the cluster is, not what it held
        return {k: v for k, v in vars(self).items() if k != "_machines"}


def per_instance(request: Resources, replicas: int) -> Resources:
    """What one instance of a group's function asks of Ray: a replica or a custom-resource
    group is an actor, which holds one CPU unless it says otherwise."""
    if (replicas or request.custom) and request.cpus is None:
        return request.merged(Resources(cpus=REPLICA_CPUS))
    return request


def udf_options(group: Group, cluster: Cluster | None) -> dict[str, Any]:
    """The group's request as keyword arguments of `daft.func.batch` / `daft.cls`; with
    `max_concurrency` when it must run as a class UDF (an actor pool) on Ray.

    Memory is checked (`Cluster.check`) but not reserved: Daft 0.7's functions take no
    memory request (they refuse it in `ray_options`). Daft runs a function with
    `ray_options` as an actor pool of one actor unless told otherwise, so a custom-resource
    group gets as many actors as the cluster holds."""
    native = cluster is None or cluster.native
    request = group.request if native else per_instance(group.request, group.replicas)
    options: dict[str, Any] = {}
    if request.cpus is not None:
        options["cpus"] = request.cpus
    if request.gpus:
        options["gpus"] = request.gpus
    if native:
        return options  # replicas here are ReplicaSlots in this process (udfs.py)
    if request.custom:
        options["ray_options"] = {"resources": dict(request.custom)}
    if group.replicas:
        options["max_concurrency"] = group.replicas
    elif request.custom:
        options["max_concurrency"] = max(1, cluster.holds(request))
    return options


def connect(address: str | None) -> None:
    """Connect to Ray as Daft would (it connects lazily, on the first frame)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True)


def _ray_nodes(address: str | None) -> list[dict[str, float]]:
    import ray

    connect(address)
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
