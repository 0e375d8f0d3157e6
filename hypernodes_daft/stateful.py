"""`@stateful`: an expensive resource (a model, a client pool) built once per process.

@stateful
class Model:
    def __init__(self, path: str):
        self.weights = load(path)          # runs on first use, not here
    def predict(self, text: str) -> float: ...

@node(output_name="score")
def score(text: str, model: Model) -> float:
    return model.predict(text)

pipeline.bind(model=Model("weights.bin")).map(inputs={"text": texts}, map_over="text")

As in HyperNodes 0.4, `Model(...)` only stores its arguments; the first public attribute
access or call builds the instance. Pickling keeps the class and the arguments, and
unpickling returns the one object of this process for them: a process pool, a Daft worker
or a Ray worker builds the resource once, however many tasks or partitions it runs.

A model that needs a GPU, or a fixed number of copies, says so (resources.py):

@stateful(gpus=1, replicas=2)      # exactly two instances, each holding a GPU
class Encoder: ...

DaftEngine then runs the nodes that use it as a Daft class UDF with two instances (Ray
actors on a cluster), and every row's call goes to one of them; `ReplicaSlots` gives
each concurrent batch its own instance in a process.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from .resources import Resources

T = TypeVar("T", bound=type)

_instances: dict[tuple[type, str], Any] = {}  # this process's objects, by class and cache key
_instances_lock = threading.Lock()
_replica: ContextVar[int | None] = ContextVar("hypernodes_replica", default=None)


def stateful(
    cls: T | None = None,
    *,
    cpus: float | None = None,
    gpus: float | None = None,
    memory: int | str | None = None,
    resources: dict[str, float] | None = None,
    replicas: int | None = None,
) -> Any:
    """Decorate a class whose instances are built lazily, once per process (`@stateful`),
    or once per replica, with what each instance needs (`@stateful(gpus=1, replicas=2)`)."""
    if cls is None:
        return lambda c: stateful(
            c, cpus=cpus, gpus=gpus, memory=memory, resources=resources, replicas=replicas
        )
    owner = f"@stateful class '{cls.__name__}'"
    if replicas is not None and (
        isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1
    ):
        raise ValueError(f"{owner}: replicas must be a positive int or None, got {replicas!r}")
    wrapper = type(
        cls.__name__,
        (_Lazy,),
        {
            "_cls": cls,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "__hypernode_stateful__": True,
            "__hypernode_request__": Resources.of(owner, cpus, gpus, memory, resources),
            "__hypernode_replicas__": replicas or 0,
        },
    )
    return wrapper


def is_stateful(value: Any) -> bool:
    return bool(getattr(type(value), "__hypernode_stateful__", False))


def request_of(value: Any) -> tuple[Resources, int]:
    """What an instance of a `@stateful` class needs, and how many replicas it wants (0:
    one per process); nothing for any other value."""
    if not is_stateful(value):
        return Resources(), 0
    return type(value).__hypernode_request__, type(value).__hypernode_replicas__


class ReplicaSlots:
    """At most `n` batches at once in this process, each with its own instance of every
    `@stateful(replicas=...)` object it touches (slot i: instance i, built on first use).

        slots = ReplicaSlots(2)
        with slots.held():          # blocks while both slots are busy
            model.predict(...)      # the slot's own instance
    """

    def __init__(self, n: int):
        self.n = n
        self._free: queue.SimpleQueue[int] | None = None
        self._lock = threading.Lock()

    def _queue(self) -> queue.SimpleQueue[int]:
        with self._lock:
            if self._free is None:
                self._free = queue.SimpleQueue()
                for slot in range(self.n):
                    self._free.put(slot)
            return self._free

    @contextmanager
    def held(self) -> Iterator[int]:
        with self._using(self._queue().get()) as slot:
            yield slot

    @asynccontextmanager
    async def aheld(self) -> AsyncIterator[int]:
        free = self._queue()
        with self._using(await asyncio.to_thread(free.get)) as slot:  # the loop never blocks
            yield slot

    @contextmanager
    def _using(self, slot: int) -> Iterator[int]:
        token = _replica.set(slot)
        try:
            yield slot
        finally:
            _replica.reset(token)
            self._queue().put(slot)

    def __getstate__(self) -> dict[str, Any]:
        return {"n": self.n}  # a process's slots are its own

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["n"])  # type: ignore[misc]


class _Lazy:
    """The object `@stateful` classes create: arguments now, the instance on first use."""

    _cls: type

    def __init__(self, *args: Any, **kwargs: Any):
        object.__setattr__(self, "_args", args)
        object.__setattr__(self, "_kwargs", kwargs)
        object.__setattr__(self, "_made", {})  # None: the process's instance; i: replica i
        object.__setattr__(self, "_lock", threading.Lock())

    def _get(self) -> Any:
        slot = _replica.get() if type(self).__hypernode_replicas__ else None
        instance = self._made.get(slot)
        if instance is None:
            with self._lock:
                if slot not in self._made:
                    self._made[slot] = self._cls(*self._args, **self._kwargs)
                instance = self._made[slot]
        return instance

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._get(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        instance = self._get()
        if not callable(instance):
            raise TypeError(f"{self._cls.__name__} instances are not callable")
        return instance(*args, **kwargs)

    def __cache_key__(self) -> str:
        if hasattr(self._cls, "__cache_key__"):
            return str(self._get().__cache_key__())
        text = f"{self._cls.__name__}:{self._args}:{sorted(self._kwargs.items())}"
        return hashlib.sha256(text.encode()).hexdigest()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self._args, self._kwargs))

    def __repr__(self) -> str:
        if None not in self._made:
            return f"<{self._cls.__name__} (not initialized)>"
        return repr(self._made[None])


def _restore(wrapper: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Unpickling: the process's object for these arguments, created at most once."""
    key = (wrapper, repr((args, sorted(kwargs.items()))))
    with _instances_lock:
        if key not in _instances:
            _instances[key] = wrapper(*args, **kwargs)
        return _instances[key]
