"""``cached_tiered``: memoize an ``async def`` function in a tiered cache (local + Redis)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from .._decorators import ERR_GENERATOR, ERR_KEY
from ._codec import Key, encode_key

if TYPE_CHECKING:
    from ._tiered import TieredCache

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class TieredCached(Protocol[P, R_co]):
    """An ``async def`` function wrapped by :func:`cached_tiered`."""

    tier: TieredCache
    cache_key: Callable[..., Key]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R_co]: ...

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Delete the entry these arguments map to, in both tiers and in every process."""


ERR_NOT_ASYNC = "cached_tiered() decorates async def functions only, got {!r}"


def cached_tiered(
    tier: TieredCache, key: Callable[..., Key] | None = None
) -> Callable[[Callable[P, Awaitable[R]]], TieredCached[P, R]]:
    """Memoize an ``async def`` function in ``tier`` through :meth:`TieredCache.get_or_load`.

    :param key: ``key(*args, **kwargs) -> str | tuple``; default: the function's qualified name,
        the positional arguments, then each keyword as ``"name="`` followed by its value. Every
        part must be a ``str`` or an ``int``; pass ``key=`` for anything else.
    """
    if key is not None and not callable(key):
        raise ValueError(ERR_KEY.format(key))

    def decorator(func: Callable[P, Awaitable[R]]) -> TieredCached[P, R]:
        if inspect.isasyncgenfunction(func):
            raise ValueError(ERR_GENERATOR.format(func))
        if not inspect.iscoroutinefunction(func):
            raise ValueError(ERR_NOT_ASYNC.format(func))
        make_key = key or _default_key(func)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await tier.get_or_load(make_key(*args, **kwargs), lambda: func(*args, **kwargs))

        async def invalidate(*args: Any, **kwargs: Any) -> None:
            await tier.delete(make_key(*args, **kwargs))

        functools.update_wrapper(wrapper, func)
        w: Any = wrapper
        w.tier = tier
        w.cache_key = make_key
        w.invalidate = invalidate
        return w  # type: ignore[no-any-return]

    return decorator


def _default_key(func: Callable[..., Any]) -> Callable[..., Key]:
    # Built as the already-encoded string (the same one the tuple would encode to), so a call
    # does not build a tuple and re-escape the function's name every time.
    name = encode_key((f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', '')}",))

    head = name + ":"

    def key(*args: Any, **kwargs: Any) -> Key:
        if kwargs:
            args = (*args, *[x for k in sorted(kwargs) for x in (f"{k}=", kwargs[k])])
        elif len(args) == 1:  # the common case, spelled out: one str or int argument
            arg = args[0]
            if type(arg) is int:
                return head + str(arg)
            if type(arg) is str and ":" not in arg and "\\" not in arg:
                return head + arg
        if not args:
            return name
        return head + encode_key(args)

    return key
