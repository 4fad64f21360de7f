"""One task's shared-memory slots, as the parent maps them, for unit tests of their readers and writers."""

from __future__ import annotations

from supervisor.frames import TaskKey
from supervisor.shm import SharedMemory, TaskSlots

TASK = TaskKey("web", "task-1")


def task_slots() -> TaskSlots:
    return SharedMemory(roles=["container"], tasks=[TASK]).tasks[TASK]
