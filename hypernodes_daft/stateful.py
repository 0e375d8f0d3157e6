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
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, TypeVar

T = TypeVar("T", bound=type)

_instances: dict[tuple[type, str], Any] = {}  # this process's objects, by class and cache key
_instances_lock = threading.Lock()


def stateful(cls: T) -> T:
    """Decorate a class whose instances are built lazily, once per process."""
    wrapper = type(
        cls.__name__,
        (_Lazy,),
        {
            "_cls": cls,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "__hypernode_stateful__": True,
        },
    )
    return wrapper  # type: ignore[return-value]


def is_stateful(value: Any) -> bool:
    return bool(getattr(type(value), "__hypernode_stateful__", False))


class _Lazy:
    """The object `@stateful` classes create: arguments now, the instance on first use."""

    _cls: type

    def __init__(self, *args: Any, **kwargs: Any):
        object.__setattr__(self, "_args", args)
        object.__setattr__(self, "_kwargs", kwargs)
        object.__setattr__(self, "_instance", None)
        object.__setattr__(self, "_lock", threading.Lock())

    def _get(self) -> Any:
        instance = self._instance
        if instance is None:
            with self._lock:
                if self._instance is None:
                    object.__setattr__(self, "_instance", self._cls(*self._args, **self._kwargs))
                instance = self._instance
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
        if self._instance is None:
            return f"<{self._cls.__name__} (not initialized)>"
        return repr(self._instance)


def _restore(wrapper: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Unpickling: the process's object for these arguments, created at most once."""
    key = (wrapper, repr((args, sorted(kwargs.items()))))
    with _instances_lock:
        if key not in _instances:
            _instances[key] = wrapper(*args, **kwargs)
        return _instances[key]
