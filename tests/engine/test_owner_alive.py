"""Whose lease may be taken over at once: an owner process that exited, even unreaped."""

import os
import subprocess
import sys
import time

from lion_nb.engine.durable import new_owner_id, owner_is_dead


def owner_of(pid):
    host, ns, _, rand = new_owner_id().split("|")
    return f"{host}|{ns}|{pid}|{rand}"


def test_an_exited_but_unreaped_owner_is_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while not owner_is_dead(owner_of(child.pid)):  # a zombie until we wait() for it
            assert time.monotonic() < deadline, "an exited child still counts as alive"
            time.sleep(0.05)
        os.kill(child.pid, 0)  # still there as a zombie: kill(pid, 0) alone would say alive
    finally:
        child.wait()
    assert owner_is_dead(owner_of(child.pid))


def test_a_running_owner_and_this_process_are_alive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not owner_is_dead(owner_of(child.pid))
        assert not owner_is_dead(owner_of(os.getpid()))
    finally:
        child.kill()
        child.wait()
