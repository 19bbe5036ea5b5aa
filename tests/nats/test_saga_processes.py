"""Sagas across processes: services served by ``python -m lion_nb service`` in other processes."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lion_nb.patterns import (
    EventBroker, EventBrokerConfig, NatsEventStore, SagaManager, SagaManagerConfig, SagaStatus,
)

HERE = Path(__file__).parent
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def saga_key(monkeypatch):
    """One saga key for the managers and the service processes (they sign what they send)."""
    monkeypatch.setenv("LION_NB_SAGA_KEY", os.urandom(32).hex())


@pytest.fixture
def order_saga(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    return importlib.import_module("saga_definition").order_saga


@pytest.fixture
def services(nats_url, broker_name, tmp_path):
    """``start(service)`` runs one service process; all are stopped after the test."""
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, SAGA_TEST_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))

    def start(service: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lion_nb", "service", "saga_services:SERVICES",
             "--service", service, "--nats", nats_url, "--name", broker_name,
             "--ack-timeout", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert "serving " + service in line, line + proc.stderr.read().decode()  # type: ignore
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "log"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
async def manager(nats_url, broker_name):
    broker = EventBroker(EventBrokerConfig()).with_event_store(
        NatsEventStore(nats_url, name=broker_name))
    mgr = SagaManager(broker, SagaManagerConfig(name="notebook", step_timeout=30))
    yield mgr
    await mgr.close()
    await broker.close()


def pids(lines: list[str], prefix: str) -> set[str]:
    return {line.rsplit("pid=", 1)[1] for line in lines if line.startswith(prefix)}


async def test_saga_with_three_services_in_three_processes_completes(
        services, manager, order_saga, tmp_path):
    for name in ("order-service", "payment-service", "shipping-service"):
        services(name)
    await manager.register_definition(order_saga())
    inst = await manager.create_instance("order-saga", {"order_id": "o-1", "amount": 40})
    await manager.start_instance(inst.id)
    done = await manager.wait(inst.id, timeout=60)
    assert done.status is SagaStatus.COMPLETED
    lines = log_lines(tmp_path)
    assert len(pids(lines, "order") | pids(lines, "payment") | pids(lines, "shipping")) == 3
    assert str(os.getpid()) not in pids(lines, "")


async def test_failing_payment_compensates_across_processes(services, manager, order_saga,
                                                             tmp_path):
    for name in ("order-service", "payment-service", "shipping-service"):
        services(name)
    await manager.register_definition(order_saga())
    inst = await manager.create_instance("order-saga", {"order_id": "o-2", "amount": 500})
    await manager.start_instance(inst.id)
    done = await manager.wait(inst.id, timeout=60)
    assert done.status is SagaStatus.COMPENSATED
    lines = [line.split(" pid=")[0] for line in log_lines(tmp_path)]
    assert f"order compensate {inst.id}" in lines
    assert not any(line.startswith("shipping") for line in lines)


async def test_service_killed_mid_step_has_the_step_redelivered(services, manager, order_saga,
                                                                tmp_path):
    services("order-service")
    services("shipping-service")
    doomed = services("payment-service")
    await manager.register_definition(order_saga())
    inst = await manager.create_instance("order-saga", {"order_id": "o-3", "amount": 10,
                                                        "slow_once": True})
    await manager.start_instance(inst.id)
    deadline = time.monotonic() + 30
    while not any("payment hanging" in line for line in log_lines(tmp_path)):
        assert time.monotonic() < deadline, log_lines(tmp_path)
        await asyncio.sleep(0.1)
    doomed.send_signal(signal.SIGKILL)
    services("payment-service")               # another instance of the service
    done = await manager.wait(inst.id, timeout=60)
    assert done.status is SagaStatus.COMPLETED
    payments = [line for line in log_lines(tmp_path) if line.startswith("payment step")]
    assert len(pids(payments, "payment")) == 2  # the killed one, then its replacement


def test_manager_killed_mid_saga_recovers_and_gets_its_reply(services, nats_url, broker_name,
                                                             tmp_path):
    for name in ("order-service", "payment-service", "shipping-service"):
        services(name)
    child = str(HERE / "saga_manager_child.py")
    db = str(tmp_path / "saga.db")
    first = subprocess.Popen([sys.executable, child, "start", nats_url, broker_name, db],
                             stdout=subprocess.PIPE)
    assert first.stdout is not None
    instance_id = first.stdout.readline().decode().strip()
    deadline = time.monotonic() + 30
    while not any("payment hanging" in line for line in log_lines(tmp_path)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)       # the payment reply comes while no manager runs
    first.wait()
    first.stdout.close()
    second = subprocess.run([sys.executable, child, "recover", nats_url, broker_name, db],
                            capture_output=True, timeout=120)
    assert second.returncode == 0, second.stderr.decode()
    assert second.stdout.decode().split() == [instance_id, "completed"]
