"""A map stage's units on a pool of Ray actors: the stage's setup (a model loaded, a GPU
context made) once per actor, every actor's next unit queued behind its current one so that it
never waits between units (while as many units wait as there are actors: the last few go each to
the next actor free, so that none runs two in a row while another idles), and results handed
back as units finish.

Why not Ray Data's actor pool (measured against it on the same 100,000 units, with two nodes
killed, by tests/benchmarks/bench_pool.py; docs/scale.md): Ray Data costs the driver less per
unit (0.23 ms against 0.93 ms), which is nothing beside units of seconds to minutes, but after a
node is lost it redoes the whole blocks that node held (2,000 units against 7), does not ask
for the lost nodes again, holds its actors after the stage, and takes seconds to start (a
stage of 3,000 units drained 3.4x later). Here, when an actor's process dies only its units go
to the other actors and a new actor takes its place (a unit's output is only trusted once its
marker is written, so a unit run twice writes the same part); on a cluster, while units wait
and every actor is busy, more actors are asked for (up to `most`): actors that cannot be
placed yet are the autoscaler's cue to add nodes, and get no units until they start; and every
actor is released when the stage ends. A stage is a few kilobytes, passed inline (Ray Data
passes actors their arguments through the object store, which Ray's core warns may fail a
restart: ray-project/ray#53727).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from ..errors import WorkerLostError
from .base import MapWork, UnitStats, WorkUnit

QUEUED_PER_ACTOR = 2  # the unit it runs and the next one
MAX_UNIT_ATTEMPTS = 4  # a unit whose worker dies this often stops the stage (not a loop)


class UnitActor:
    """One actor of the pool (process title `ray::UnitActor`; running a unit: `.submit`)."""

    def __init__(self, stage: MapWork):
        self.stage = stage
        stage.setup()

    def ready(self) -> bool:
        return True

    def submit(self, unit: WorkUnit) -> UnitStats:
        return self.stage.run_unit(unit)


def run_on_actor_pool(stage: MapWork, units: list[WorkUnit], on_result: Callable[[UnitStats], None],
                      options: dict, least: int, most: int, grow: bool) -> None:
    """Every unit on `least` actors (with `options`: num_cpus, num_gpus, memory), growing
    towards `most` while units wait when `grow` (an autoscaling cluster); `on_result` as units
    finish. An error a unit raises stops the stage; so does a setup that fails, or a unit whose
    worker dies MAX_UNIT_ATTEMPTS times."""
    import ray

    actor_class = ray.remote(UnitActor).options(**options, max_restarts=0)
    queue = deque(units)
    attempts = {u.index: 0 for u in units}
    starting: dict = {}   # ready() reference -> actor still starting (or waiting for a node)
    load: dict = {}       # started actor -> units given to it and not yet back
    running: dict = {}    # submit() reference -> (actor, unit)

    def start(n: int) -> None:
        for _ in range(n):
            actor = actor_class.remote(stage)
            starting[actor.ready.remote()] = actor

    def lose(actor) -> None:
        """A dead actor's units back to the front of the queue; a new actor in its place."""
        load.pop(actor, None)
        for ref, (owner, unit) in list(running.items()):
            if owner is actor:
                del running[ref]
                attempts[unit.index] += 1
                if attempts[unit.index] >= MAX_UNIT_ATTEMPTS:
                    raise WorkerLostError(
                        f"{stage.name}: unit {unit.index}: its worker died {MAX_UNIT_ATTEMPTS} "
                        "times while running it (killed for memory? a crash in a decoder?); "
                        "the other units are kept, a rerun resumes")
                queue.appendleft(unit)
        if len(load) + len(starting) < max(1, least):
            start(1)

    start(max(1, least))
    try:
        while queue or running:
            for actor in load:
                while queue and load[actor] < QUEUED_PER_ACTOR:
                    if load[actor] and len(queue) < len(load) + len(starting):
                        # too few units left to queue one behind a running one: each goes
                        # to the next actor free (or started), not behind a busy one while
                        # another idles (the last units of a stage, or its first ones while
                        # actors still start)
                        break
                    unit = queue.popleft()
                    running[actor.submit.remote(unit)] = (actor, unit)
                    load[actor] += 1
            if grow and queue and not starting and len(load) < most:
                # units wait and every actor is busy: ask for as many more as they would keep
                # busy, at most doubling the pool at a time
                wanted = math.ceil(len(queue) / QUEUED_PER_ACTOR)
                start(min(wanted, max(1, len(load)), most - len(load)))
            [done], _ = ray.wait([*running, *starting], num_returns=1)
            if done in starting:
                actor = starting.pop(done)
                try:
                    ray.get(done)
                except ray.exceptions.RayActorError as exc:
                    if exc.actor_init_failed:
                        raise  # its setup failed (no model...): every actor's would
                    start(1)  # its node went away before it started
                    continue
                load[actor] = 0
                continue
            actor, _ = running[done]
            try:
                stats = ray.get(done)
            except ray.exceptions.RayActorError:
                # its process died (killed, out of memory, its node lost): Ray does not restart
                # it (a restarted actor would wait for a CPU the pool's new actors may hold)
                lose(actor)
                continue
            del running[done]
            load[actor] -= 1
            on_result(stats)
    finally:
        # the next stage gets these CPUs and GPUs now, not when Ray collects the handles
        for actor in [*load, *starting.values()]:
            ray.kill(actor)
