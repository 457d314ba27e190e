"""What the cluster tells a client about its jobs: task placements and worker samples.

Both come as dask events (``log_event`` on the scheduler or a worker, forwarded to the
clients subscribed to the topic) and are routed here, on the client's event loop, to
the jobs listening (by the job tag of each task key, :func:`.monitor.job_tag`):

* a placement (a task went to ``processing`` on a worker) is reported by
  :class:`PlacementReporter`, a scheduler plugin registered once per client when a
  job first has ``on_schedule`` hooks: the scheduler's own decision, not a guess;
* a worker sample comes from the worker's :class:`.monitor.WorkerSampler`.

Handlers run on the client's event loop: they only hand the event to the job (a queue
put or an append under a small lock), never run user code there.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Optional

from distributed.diagnostics.plugin import SchedulerPlugin

from .monitor import SAMPLES_TOPIC, job_tag

logger = logging.getLogger(__name__)

#: The topic of task placements.
PLACEMENTS_TOPIC = "stem-explorer-placements"


class PlacementReporter(SchedulerPlugin):
    """A scheduler plugin: logs an event when a task of this package is placed on a
    worker (``key``, ``worker`` address, ``clients``: the ids of the clients wanting
    it). Costs one string test per transition of other tasks."""

    idempotent = True
    name = "stem-explorer-placements"

    def __init__(self):
        self.scheduler = None

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish != "processing" or self.scheduler is None or job_tag(key) is None:
            return
        task = self.scheduler.tasks.get(key)
        worker = getattr(task, "processing_on", None)
        if worker is None:
            return
        clients = [client.client_key for client in task.who_wants or ()]
        self.scheduler.log_event(PLACEMENTS_TOPIC, {"key": key, "worker": worker.address, "clients": clients})


class ClusterEvents:
    """The jobs of one client listening to the cluster's events (see the module notes).

    Use :func:`for_client`; a job calls :meth:`listen` before it submits and
    :meth:`forget` when it ends.
    """

    def __init__(self, client):
        self._client = weakref.ref(client)
        self._client_id = client.id
        self._lock = threading.Lock()
        self._jobs: "weakref.WeakValueDictionary[str, object]" = weakref.WeakValueDictionary()
        self._placements = False
        client.subscribe_topic(SAMPLES_TOPIC, self._on_sample)

    def listen(self, tag: str, job) -> None:
        """Route the events of tasks tagged ``tag`` to ``job`` (its ``_on_placement(key,
        worker)`` and ``_on_sample(sample)``)."""
        self._jobs[tag] = job

    def forget(self, tag: str) -> None:
        """Route nothing more to the job of ``tag``."""
        self._jobs.pop(tag, None)

    def watch_placements(self) -> bool:
        """Have the scheduler report placements (a round trip, once per client); False
        when it refuses the plugin (logged: such jobs get no ``on_schedule``)."""
        with self._lock:
            if not self._placements:
                client = self._client()
                try:
                    client.subscribe_topic(PLACEMENTS_TOPIC, self._on_placement)
                    client.register_plugin(PlacementReporter())
                except Exception as exc:  # e.g. a scheduler that may not unpickle plugins
                    logger.warning("the scheduler did not take the placement reporter (%r): "
                                   "jobs report no on_schedule events", exc)
                    return False
                self._placements = True
            return True

    def _on_placement(self, event) -> None:
        _time, msg = event
        if self._client_id not in msg.get("clients", ()):
            return  # another client's task of the same name
        job = self._jobs.get(job_tag(msg.get("key")))
        if job is not None:
            job._on_placement(msg["key"], msg["worker"])

    def _on_sample(self, event) -> None:
        _time, sample = event
        for tag in sample.get("jobs", ()):
            job = self._jobs.get(tag)
            if job is not None:
                job._on_sample(sample)


_by_client: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_by_client_lock = threading.Lock()


def for_client(client) -> Optional[ClusterEvents]:
    """The :class:`ClusterEvents` of ``client`` (created and subscribed on first use);
    None for a client that cannot subscribe (closed)."""
    with _by_client_lock:
        events = _by_client.get(client)
        if events is None:
            try:
                events = _by_client[client] = ClusterEvents(client)
            except Exception as exc:  # a closed client: its job fails on its own terms
                logger.debug("no cluster events for %r: %r", client, exc)
                return None
        return events
