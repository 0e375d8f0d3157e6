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

# On Ray a replica is an actor: it holds one CPU unless it says otherwise, so "replicas=8"
# on a 2-CPU cluster is refused rather than left waiting for CPUs that never come.
REPLICA_CPUS = 1.0


@dataclass
class Cluster:
    """The machines a job runs on, read once, when the first group asks for something."""

    runner: str
    address: str | None = None
    _machines: list[dict[str, float]] | None = field(default=None, repr=False)

    def check(self, placement: Placement) -> None:
        native = self.runner == "native"
        request = placement.request
        if native:  # custom resources name machines of a Ray cluster; here there is one
            request = replace(request, custom=())
        elif placement.replicas and request.cpus is None:  # here replicas are threads
            request = request.merged(Resources(cpus=REPLICA_CPUS))
        where = "this machine" if native else "the Ray cluster"
        placement = Placement(placement.label, request, placement.replicas)
        check_fits([placement], self.machines(), where)

    def stage(self, frame: Any) -> Any:
        """`frame` ending a stage, on Ray: Daft runs a partition's chain of functions as one
        task, placed where its most demanding function can run; a new stage lets the steps
        before a GPU (or custom-resource) function run anywhere."""
        if self.runner == "native":
            return frame
        cpus = sum(m.get("CPU", 0) for m in self.machines())
        return frame.into_partitions(max(1, int(cpus) * 2))

    def holds(self, request: Resources) -> int:
        """How many calls with `request` the machines hold at once, all together."""
        return sum(request.copies_on(m) for m in self.machines())

    def machines(self) -> list[dict[str, float]]:
        if self._machines is None:
            native = self.runner == "native"
            self._machines = [local_machine()] if native else _ray_nodes(self.address)
        return self._machines

    def __getstate__(self) -> dict[str, Any]:
        return {"runner": self.runner, "address": self.address}  # workers never check


def udf_options(group: Group, cluster: Cluster | None) -> dict[str, Any]:
    """The group's request as keyword arguments of `daft.func.batch` / `daft.cls`; with
    `max_concurrency` when it must run as a class UDF (an actor pool) on Ray.

    Memory is checked (`Cluster.check`) but not reserved: Daft 0.7's functions take no
    memory request (they refuse it in `ray_options`). Daft runs a function with
    `ray_options` as an actor pool of one actor unless told otherwise, so a custom-resource
    group gets as many actors as the cluster holds."""
    request = group.request
    native = cluster is None or cluster.runner == "native"
    options: dict[str, Any] = {}
    if request.cpus is not None or (group.replicas and not native):
        options["cpus"] = request.cpus if request.cpus is not None else REPLICA_CPUS
    if request.gpus:
        options["gpus"] = request.gpus
    if native:
        return options  # replicas here are ReplicaSlots in this process (udfs.py)
    if request.custom:
        options["ray_options"] = {"resources": dict(request.custom)}
    if group.replicas:
        options["max_concurrency"] = group.replicas
    elif request.custom:
        actor = Resources(cpus=options.get("cpus", REPLICA_CPUS), gpus=request.gpus)
        options["max_concurrency"] = max(1, cluster.holds(actor.merged(request)))
    return options


def _ray_nodes(address: str | None) -> list[dict[str, float]]:
    import ray

    if not ray.is_initialized():  # Daft connects lazily; connect as it would
        ray.init(address=address, ignore_reinit_error=True)
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
