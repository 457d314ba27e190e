"""Event hooks: user code told when work is submitted, placed, merged and finished.

The same six events come from :class:`~stem_explorer.engine.Job` (``Session.run``) and
from batches over many inputs:

========================  ===================================================
``on_submit``             a job's tasks were handed to the scheduler
``on_schedule``           a task was placed on a worker
``on_partition``          a partition's partial result was merged
``on_result``             an input (a batch row, or a job's data set) is done
``on_error``              a job or an input failed
``on_complete``           a job or a whole batch is over
========================  ===================================================

A hook is either a callable registered for one event (``hooks.add("on_result", fn)``),
a callable given alone (it receives every event), or a plugin object with any of the
methods named like the events; plugins are also found through the entry-point group
``stem_explorer.hooks`` (each entry point names a class or factory called without
arguments), and a plugin's entry-point name stands for it (``hooks=["jsonl-log"]``).
``as_hooks(..., installed=True)`` adds every installed plugin except this package's
own (:mod:`stem_explorer.hook_plugins`), which write files and so run only when
named. Every hook receives one :class:`HookEvent`. A hook that raises is logged and kept in :attr:`Hooks.errors`; it
never stops the job or the batch.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable, Optional

from ..errors import OptionError

logger = logging.getLogger(__name__)

#: The events, in the order a job emits them.
EVENTS = ("on_submit", "on_schedule", "on_partition", "on_result", "on_error", "on_complete")

#: The entry-point group of hook plugins.
ENTRY_POINT_GROUP = "stem_explorer.hooks"

#: At most this many hook exceptions are kept (each is also logged).
MAX_HOOK_ERRORS = 100


@dataclass
class HookEvent:
    """What a hook receives.

    Attributes
    ----------
    name : str
        One of :data:`EVENTS`.
    time : float
        ``time.time()`` when the event was emitted.
    job_id : int or None
        The job the event belongs to (None for batch-level events).
    input : str or None
        The input (path or description) the event belongs to, when known.
    data : dict
        Event-specific payload, e.g. ``partition``, ``worker``, ``results``,
        ``stats``, ``error``, ``output``.
    """

    name: str
    time: float
    job_id: Optional[int] = None
    input: Optional[str] = None
    data: dict = field(default_factory=dict)


class Hooks:
    """A set of hooks, called in the order they were added.

    Parameters
    ----------
    hooks : iterable, optional
        Plugin objects (methods named like :data:`EVENTS`), callables (called for
        every event), entry-point names of installed plugins, ``(event, callable)``
        pairs, or a mapping of event name to callable or list of callables; or one
        plugin, callable or name alone.
    """

    def __init__(self, hooks: Any = None):
        self._hooks: list[tuple[str, Callable[[HookEvent], Any]]] = []
        self._lock = threading.Lock()
        #: exceptions raised by hooks (the first :data:`MAX_HOOK_ERRORS`)
        self.errors: list[Exception] = []
        if hooks is None:
            return
        if isinstance(hooks, Hooks):
            self._hooks = list(hooks._hooks)
            return
        if isinstance(hooks, str) or callable(hooks) or not isinstance(hooks, Iterable) or _has_event_methods(hooks):
            hooks = [hooks]  # one plugin, callable or name
        items = hooks.items() if isinstance(hooks, dict) else hooks
        for item in items:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                event, fns = item
                for fn in fns if isinstance(fns, (list, tuple)) else [fns]:
                    self.add(event, fn)
            else:
                self.add_plugin(item)

    def add(self, event: str, fn: Callable[[HookEvent], Any]) -> None:
        """Call ``fn(event)`` on each ``event`` (one of :data:`EVENTS`)."""
        if event not in EVENTS:
            raise OptionError(f"unknown hook event {event!r}: use one of {', '.join(EVENTS)}")
        if not callable(fn):
            raise OptionError(f"the hook for {event} is not callable: {fn!r}")
        with self._lock:
            self._hooks.append((event, fn))

    def add_plugin(self, plugin: Any) -> None:
        """Register each of ``plugin``'s methods named like an event; a callable without
        such methods for every event; a string: the installed plugin of that name."""
        if isinstance(plugin, str):
            plugin = plugin_by_name(plugin)
        methods = [(event, getattr(plugin, event)) for event in EVENTS if callable(getattr(plugin, event, None))]
        if not methods and callable(plugin):
            methods = [(event, plugin) for event in EVENTS]
        if not methods:
            raise OptionError(
                f"hook plugin {plugin!r} has none of the methods {', '.join(EVENTS)}: "
                "give it at least one, or register a callable with Hooks.add(event, fn)"
            )
        for event, fn in methods:
            self.add(event, fn)

    def wants(self, event: str) -> bool:
        """Whether any hook listens to ``event`` (so emitters can skip building payloads)."""
        return any(name == event for name, _fn in self._hooks)

    def emit(self, event: str, *, job_id: Optional[int] = None, input: Optional[str] = None, **data) -> None:
        """Call the hooks of ``event``; a hook's exception is logged and kept."""
        fns = [fn for name, fn in self._hooks if name == event]
        if not fns:
            return
        hook_event = HookEvent(event, time.time(), job_id, input, data)
        for fn in fns:
            try:
                fn(hook_event)
            except Exception as exc:  # the user's code: report it, keep the work going
                with self._lock:
                    if len(self.errors) < MAX_HOOK_ERRORS:
                        self.errors.append(exc)
                name = getattr(fn, "__qualname__", repr(fn))
                logger.error("hook %s for %s raised; the work goes on", name, event, exc_info=exc)

    def __len__(self) -> int:
        return len(self._hooks)

    def __repr__(self) -> str:
        return f"<Hooks {len(self._hooks)} registered>"


#: The distribution whose own plugins load only by name.
OWN_DISTRIBUTION = "stem_explorer"


def _has_event_methods(obj) -> bool:
    return any(callable(getattr(obj, event, None)) for event in EVENTS)


def plugins_from_entry_points() -> list:
    """Instances of the hook plugins installed under :data:`ENTRY_POINT_GROUP`, except
    this package's own (they load by name: :func:`plugin_by_name`); one that fails to
    load is logged and left out."""
    plugins = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.dist is not None and ep.dist.name.replace("-", "_") == OWN_DISTRIBUTION:
            continue
        try:
            plugins.append(ep.load()())
        except Exception as exc:
            logger.error("hook plugin %s could not be loaded; left out", ep.name, exc_info=exc)
    return plugins


def plugin_by_name(name: str):
    """An instance of the installed hook plugin ``name`` (an entry point of
    :data:`ENTRY_POINT_GROUP`).

    Raises
    ------
    OptionError
        No plugin of that name is installed, or it fails to load (the message says why).
    """
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in found:
        raise OptionError(
            f"no hook plugin named {name!r} is installed; installed: {', '.join(sorted(found)) or 'none'} "
            f"(plugins register under the entry-point group {ENTRY_POINT_GROUP!r})"
        )
    try:
        return found[name].load()()
    except Exception as exc:
        raise OptionError(f"hook plugin {name!r} could not be loaded ({type(exc).__name__}: {exc}); "
                          "reinstall the package that provides it") from exc


def as_hooks(hooks: Any = None, *, installed: bool = False) -> Hooks:
    """``hooks`` as a :class:`Hooks` (None: empty), plus the installed plugins when
    ``installed``."""
    result = Hooks(hooks)
    if installed:
        for plugin in plugins_from_entry_points():
            result.add_plugin(plugin)
    return result


def merge(*groups: Optional[Iterable]) -> Hooks:
    """One :class:`Hooks` calling every group's hooks in order."""
    result = Hooks()
    for group in groups:
        if group is not None:
            result._hooks.extend(as_hooks(group)._hooks)
    return result
