"""What a node's call needs (CPUs, GPUs, memory, custom Ray resources), and where it fits.

    @node(output_name="vector", gpus=1, memory="4GiB")
    def embed(text: str, model: Encoder) -> list[float]: ...

    embed.options.request                        # Resources(gpus=1.0, memory=4294967296)
    str(embed.options.request)                   # 'gpus=1, memory=4GiB'
    Resources(gpus=1).copies_on({"CPU": 8, "GPU": 2})     # 2 calls fit on that machine

Plain data, read by every engine: DaftEngine turns a request into Daft's (and so Ray's)
resource requests and checks, before a job starts, that some node of the cluster can hold
it (`check_fits`); the local engines run at most as many calls of the node at once as this
machine holds (`local_machine`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import PlanningError

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40})


class ResourceError(PlanningError):
    """A node asks for resources that nothing where it would run can give; nothing ran."""


def parse_memory(value: int | float | str, owner: str, what: str = "memory") -> int:
    """Bytes, from a number of bytes or a string such as "4GiB", "512MB" or "1.5 GB".

    >>> parse_memory("4GiB", "node 'embed'")
    4294967296
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{owner}: {what} must be bytes or a string like '4GiB', got {value!r}")
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?|b)?b?\s*", value.lower())
        if match is None:
            raise ValueError(
                f"{owner}: {what} {value!r} is not a size (use bytes, or e.g. '4GiB', '512MB')"
            )
        value = float(match[1]) * _UNITS[match[2] or ""]
    if value <= 0:
        raise ValueError(f"{owner}: {what} must be > 0 bytes, got {value!r}")
    return int(value)


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return f"{int(n)}B"


@dataclass(frozen=True)
class Resources:
    """One call's (or one replica's) request: `cpus`, `gpus`, `memory` in bytes, and custom
    Ray resources (`custom`, as in `@node(resources={"model_host": 1})`)."""

    cpus: float | None = None
    gpus: float | None = None
    memory: int | None = None
    custom: tuple[tuple[str, float], ...] = field(default=())

    @classmethod
    def of(
        cls,
        owner: str,
        cpus: float | None = None,
        gpus: float | None = None,
        memory: int | float | str | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> Resources:
        """The request the keyword arguments of `@node`/`@stateful` describe, checked."""
        for name, amount in (("cpus", cpus), ("gpus", gpus)):
            if amount is not None and (isinstance(amount, bool) or not amount >= 0):
                raise ValueError(f"{owner}: {name} must be a number >= 0, got {amount!r}")
        if gpus is not None and gpus > 1 and not float(gpus).is_integer():
            raise ValueError(f"{owner}: gpus above 1 must be a whole number, got {gpus!r}")
        custom = dict(resources or {})
        for key, amount in custom.items():
            if not isinstance(key, str) or isinstance(amount, bool) or not amount > 0:
                raise ValueError(
                    f"{owner}: resources must map names to amounts > 0, got {key!r}: {amount!r}"
                )
            if key in ("CPU", "GPU", "memory"):
                raise ValueError(f"{owner}: ask for {key} with cpus=/gpus=/memory=, not resources")
        return cls(
            cpus=None if cpus is None else float(cpus),
            gpus=None if gpus is None else float(gpus),
            memory=None if memory is None else parse_memory(memory, owner),
            custom=tuple(sorted((k, float(v)) for k, v in custom.items())),
        )

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.cpus, self.gpus, self.memory)) or bool(self.custom)

    def __str__(self) -> str:
        parts = [f"{k}={_number(v)}" for k, v in (("cpus", self.cpus), ("gpus", self.gpus)) if v]
        if self.memory:
            parts.append(f"memory={format_bytes(self.memory)}")
        parts += [f"{k}={_number(v)}" for k, v in self.custom]
        return ", ".join(parts) or "nothing"

    def merged(self, other: Resources) -> Resources:
        """A request for both: the larger amount of each resource."""
        custom = dict(self.custom)
        for key, amount in other.custom:
            custom[key] = max(amount, custom.get(key, 0.0))
        return Resources(
            cpus=_larger(self.cpus, other.cpus),
            gpus=_larger(self.gpus, other.gpus),
            memory=_larger(self.memory, other.memory),
            custom=tuple(sorted(custom.items())),
        )

    def as_ray(self) -> dict[str, float]:
        """In Ray's names: CPU, GPU, memory (bytes) and the custom ones."""
        wanted = {"CPU": self.cpus, "GPU": self.gpus, "memory": self.memory}
        return {k: float(v) for k, v in wanted.items() if v} | dict(self.custom)

    def copies_on(self, machine: Mapping[str, float]) -> int:
        """How many such requests one machine (Ray's resource names -> amounts) holds at
        once; a request for nothing is not bounded by the machine (a large number)."""
        wanted = self.as_ray()
        if not wanted:
            return 2**31
        return min(int(machine.get(k, 0.0) / v + 1e-9) for k, v in wanted.items())


@dataclass(frozen=True)
class Placement:
    """A function of a job that asks for resources: who (`label`), what each instance
    needs, and how many instances must run at once (`replicas`; 0 when not fixed)."""

    label: str
    request: Resources
    replicas: int = 0


def check_fits(placements: Iterable[Placement], machines: list[dict[str, float]], where: str):
    """Raise one `ResourceError` naming the first placement the machines cannot hold: no
    machine fits one instance, or all of them together fit fewer than its replicas."""
    for placement in placements:
        fitting = [placement.request.copies_on(m) for m in machines]
        asked = str(placement.request)
        if placement.replicas:
            asked = f"{placement.replicas} replica(s) of {asked}"
            enough = sum(fitting) >= placement.replicas
        else:
            enough = max(fitting, default=0) >= 1
        if not enough:
            has = "; ".join(_describe(m) for m in machines) or "no machine"
            who = "nodes" if "+" in placement.label else "node"
            raise ResourceError(
                f"{who} '{placement.label}' asked for {asked}, which {where} cannot hold: "
                f"it has {has}"
            )


def local_machine() -> dict[str, float]:
    """This machine in Ray's resource names: CPUs, visible GPUs and memory."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(visible_gpus()), "memory": memory}


def visible_gpus() -> int:
    """GPUs this process may use: those `CUDA_VISIBLE_DEVICES` lists when it is set (as Ray
    sets it for a task given GPUs), else those `nvidia-smi -L` lists, else none."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return len([d for d in listed.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in found.stdout.splitlines())


def _describe(machine: Mapping[str, Any]) -> str:
    shown = {"CPU": "cpus", "GPU": "gpus"}
    parts = [f"{shown[k]}={_number(machine.get(k, 0))}" for k in ("CPU", "GPU")]
    if "memory" in machine:
        parts.append(f"memory={format_bytes(machine['memory'])}")
    parts += [
        f"{k}={_number(v)}"
        for k, v in sorted(machine.items())
        if k not in ("CPU", "GPU", "memory", "object_store_memory")
        and not k.startswith(("node:", "accelerator_type"))
    ]
    return "{" + ", ".join(parts) + "}"


def _number(value: float) -> str:
    return f"{value:g}"


def _larger(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)
