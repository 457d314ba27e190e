"""The hook registry's contract: order, plugins, errors kept, unknown events refused."""

import logging

import pytest

from stem_explorer.engine.hooks import EVENTS, HookEvent, Hooks, merge
from stem_explorer.errors import OptionError


def test_hooks_are_called_in_order_with_one_event():
    seen = []
    hooks = Hooks()
    hooks.add("on_result", lambda e: seen.append(("a", e.name, e.input, e.data["n"])))
    hooks.add("on_result", lambda e: seen.append(("b", e.name, e.input, e.data["n"])))
    hooks.emit("on_result", input="x.h5", n=3)
    hooks.emit("on_error", input="x.h5", n=4)  # nobody listens
    assert seen == [("a", "on_result", "x.h5", 3), ("b", "on_result", "x.h5", 3)]


def test_a_plugin_registers_its_event_methods():
    class Plugin:
        def __init__(self):
            self.events = []

        def on_submit(self, event: HookEvent):
            self.events.append(event.name)

        def on_complete(self, event: HookEvent):
            self.events.append(event.name)

    plugin = Plugin()
    hooks = merge([plugin], {"on_submit": [lambda e: plugin.events.append("fn")]})
    for name in EVENTS:
        hooks.emit(name, job_id=1)
    assert plugin.events == ["on_submit", "fn", "on_complete"]
    assert hooks.wants("on_submit") and not hooks.wants("on_partition")


def test_a_raising_hook_is_logged_and_kept(caplog):
    after = []
    hooks = Hooks([("on_partition", lambda e: 1 / 0), ("on_partition", lambda e: after.append(e.job_id))])
    with caplog.at_level(logging.ERROR):
        hooks.emit("on_partition", job_id=7)
    assert after == [7]
    assert isinstance(hooks.errors[0], ZeroDivisionError)
    assert "on_partition" in caplog.text


def test_bad_hooks_are_refused_with_the_fix():
    with pytest.raises(OptionError, match="on_finish.*on_submit"):
        Hooks().add("on_finish", print)
    with pytest.raises(OptionError, match="not callable"):
        Hooks().add("on_result", 3)
    with pytest.raises(OptionError, match="none of the methods"):
        Hooks([object()])
