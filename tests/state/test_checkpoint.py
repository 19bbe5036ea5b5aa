"""CheckpointManager over every backend, with real workflow definitions."""

import pytest

from lion_nb.clock import FakeClock
from lion_nb.errors import (CheckpointCorruptError, CheckpointError, CheckpointKindError,
                            CheckpointNotFoundError, CheckpointVersionError, LionError,
                            SerializationError, StateConfigError, StorageCorruptError)
from lion_nb.model import Edge, Node, WorkflowBuilder, WorkflowDefinition
from lion_nb.state import (CheckpointInfo, CheckpointManager, FileStorage, MemoryStorage,
                           PostgresStorage, SqliteStorage, key_to_filename)


def workflow(name="etl", id=None):
    start, work, end = Node("Start"), Node("Process", handler="work"), Node("End")
    return (WorkflowBuilder(name, id=id).add_nodes(start, work, end)
            .add_edge(Edge(start.id, work.id))
            .add_edge(Edge(work.id, end.id, condition="result.total > 100"))
            .build())


@pytest.fixture(params=["memory", "file", "sqlite", "postgres"])
async def manager(request, tmp_path):
    clock = FakeClock()
    if request.param == "postgres":
        m = CheckpointManager(PostgresStorage(request.getfixturevalue("pg_dsn")), "1.0.0",
                              clock=clock)
    elif request.param == "memory":
        m = CheckpointManager(MemoryStorage(), "1.0.0", clock=clock)
    elif request.param == "file":
        m = CheckpointManager.with_file_storage(tmp_path / "ckpt", "1.0.0", clock=clock)
    else:
        m = CheckpointManager.with_sqlite_storage(tmp_path / "ckpt.db", "1.0.0", clock=clock)
    yield m
    await m.close()


async def test_seed_example_round_trips_a_workflow_definition(tmp_path):
    checkpoint_dir = tmp_path / "checkpoints"
    wf = workflow()
    checkpoint_manager = CheckpointManager.with_file_storage(checkpoint_dir, "1.0.0")
    checkpoint_id = await checkpoint_manager.save_checkpoint(wf)
    loaded = await checkpoint_manager.load_latest_checkpoint(wf.id)
    assert isinstance(loaded, WorkflowDefinition)
    assert loaded.id == wf.id and loaded.name == wf.name
    assert loaded.to_dict() == wf.to_dict()
    assert loaded.fingerprint() == wf.fingerprint()
    assert (await checkpoint_manager.load_checkpoint(checkpoint_id)).to_dict() == wf.to_dict()
    # a new process (a new manager) reads it back without any registration
    again = CheckpointManager.with_file_storage(checkpoint_dir, "1.0.0")
    assert (await again.load_latest_checkpoint(str(wf.id))).to_dict() == wf.to_dict()


async def test_latest_list_and_prune(manager):
    wf = workflow()
    ids = []
    for i in range(5):
        ids.append(await manager.save_checkpoint(workflow(f"v{i}", id=wf.id)))
        await manager.clock.advance(1.5)
    infos = await manager.list_checkpoints(wf.id)
    assert [i.checkpoint_id for i in infos] == ids
    assert [i.seq for i in infos] == [1, 2, 3, 4, 5]
    assert infos[1].created_at - infos[0].created_at == pytest.approx(1.5)
    assert all(isinstance(i, CheckpointInfo) and i.workflow_id == wf.id for i in infos)
    assert (await manager.load_latest_checkpoint(wf.id)).name == "v4"
    assert (await manager.load_checkpoint(ids[1])).name == "v1"
    assert await manager.prune(wf.id, keep=2) == 3
    assert [i.checkpoint_id for i in await manager.list_checkpoints(wf.id)] == ids[3:]
    assert await manager.prune(wf.id, keep=2) == 0
    with pytest.raises(CheckpointNotFoundError):
        await manager.load_checkpoint(ids[0])
    assert (await manager.load_latest_checkpoint(wf.id)).name == "v4"


async def test_a_deleted_newest_checkpoint_is_named_not_replaced_by_the_previous(manager):
    wf = workflow()
    ids = [await manager.save_checkpoint(workflow(f"v{i}", id=wf.id)) for i in range(3)]
    await manager.storage.delete("checkpoints/" + ids[-1])  # behind the manager's back
    with pytest.raises(StorageCorruptError) as err:
        await manager.load_latest_checkpoint(wf.id)
    assert err.value.checkpoint_id == ids[-1] and err.value.workflow_id == wf.id
    assert (await manager.load_checkpoint(ids[1])).name == "v1"  # older ones still load
    again = await manager.save_checkpoint(workflow("v3", id=wf.id))  # numbering goes on
    assert (await manager.list_checkpoints(wf.id))[-1].seq == 4
    assert (await manager.load_latest_checkpoint(wf.id)).name == "v3" and again


async def test_pruning_everything_is_not_damage(manager):
    wf = workflow()
    await manager.save_checkpoint(wf)
    assert await manager.prune(wf.id, keep=0) == 1
    with pytest.raises(CheckpointNotFoundError):
        await manager.load_latest_checkpoint(wf.id)


async def test_workflows_do_not_see_each_others_checkpoints(manager):
    a, b = workflow("a", id="wf-a"), workflow("b", id="wf-a/b")  # one id a prefix of the other
    await manager.save_checkpoint(a)
    await manager.save_checkpoint(b)
    assert len(await manager.list_checkpoints("wf-a")) == 1
    assert (await manager.load_latest_checkpoint("wf-a")).name == "a"
    assert (await manager.load_latest_checkpoint("wf-a/b")).name == "b"


async def test_unknown_workflow_or_checkpoint_is_not_found(manager):
    with pytest.raises(CheckpointNotFoundError, match="wf-none"):
        await manager.load_latest_checkpoint("wf-none")
    with pytest.raises(CheckpointNotFoundError):
        await manager.load_checkpoint("wf-none/0000000001-0-abcd")
    with pytest.raises(KeyError):  # CheckpointNotFoundError is a KeyError
        await manager.load_checkpoint("not an id")


class Stand:
    """A non-model object with the to_dict/from_dict protocol."""

    def __init__(self, id, payload):
        self.id, self.payload = id, payload

    def to_dict(self):
        return {"id": self.id, "payload": self.payload}

    @classmethod
    def from_dict(cls, d):
        return cls(d["id"], d["payload"])


async def test_any_object_with_to_dict_and_from_dict_is_accepted(manager):
    cid = await manager.save_checkpoint(Stand("run-1", [1, 2]))
    got = await manager.load_checkpoint(cid)
    assert isinstance(got, Stand) and got.payload == [1, 2]
    cid = await manager.save_checkpoint({"nodes": {"a": "done"}}, workflow_id="run-2")
    assert await manager.load_latest_checkpoint("run-2") == {"nodes": {"a": "done"}}
    with pytest.raises(TypeError, match="to_dict"):
        await manager.save_checkpoint(object())


async def test_a_kind_unknown_to_a_new_manager_says_to_register_it(tmp_path):
    first = CheckpointManager.with_file_storage(tmp_path, "1.0.0")
    cid = await first.save_checkpoint(Stand("run-1", 1))
    second = CheckpointManager.with_file_storage(tmp_path, "1.0.0")
    with pytest.raises(CheckpointError, match="register_kind"):
        await second.load_checkpoint(cid)
    second.register_kind(f"{Stand.__module__}.{Stand.__qualname__}", Stand)
    assert (await second.load_checkpoint(cid)).payload == 1


async def test_a_newer_major_schema_is_refused_and_older_ones_migrate(tmp_path):
    v2 = CheckpointManager.with_file_storage(tmp_path, "2.1.0")
    cid2 = await v2.save_checkpoint(Stand("run-1", "two"))
    v1 = CheckpointManager.with_file_storage(tmp_path, "1.4.0")
    v1.register_kind(f"{Stand.__module__}.{Stand.__qualname__}", Stand)
    with pytest.raises(CheckpointVersionError) as info:
        await v1.load_checkpoint(cid2)
    assert info.value.version == "2.1.0" and info.value.key == cid2
    cid1 = await v1.save_checkpoint(Stand("run-1", "one"))
    v3 = CheckpointManager.with_file_storage(tmp_path, "3.0.0")
    v3.register_kind(f"{Stand.__module__}.{Stand.__qualname__}", Stand)
    with pytest.raises(CheckpointVersionError, match="no migration from 1 to 2"):
        await v3.load_checkpoint(cid1)
    v3.register_migration(1, lambda d: {**d, "payload": d["payload"] + "+2"})
    v3.register_migration(2, lambda d: {**d, "payload": d["payload"] + "+3"})
    assert (await v3.load_checkpoint(cid1)).payload == "one+2+3"
    assert (await v3.load_checkpoint(cid2)).payload == "two+3"


async def test_a_corrupt_latest_checkpoint_is_reported_and_older_ones_still_load(tmp_path):
    m = CheckpointManager.with_file_storage(tmp_path, "1.0.0")
    wf = workflow()
    old = await m.save_checkpoint(wf)
    new = await m.save_checkpoint(wf)
    path = tmp_path / key_to_filename("checkpoints/" + new)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointCorruptError) as info:
        await m.load_latest_checkpoint(wf.id)
    assert new in info.value.key
    assert [i.checkpoint_id for i in await m.list_checkpoints(wf.id)] == [old, new]
    assert (await m.load_checkpoint(old)).to_dict() == wf.to_dict()


async def test_a_definition_holding_a_callable_is_refused_when_saved(manager):
    a, b = Node("A"), Node("B")
    wf = (WorkflowBuilder("cb").add_nodes(a, b)
          .add_edge(Edge(a.id, b.id, condition=lambda r: True)).build())
    with pytest.raises(SerializationError):
        await manager.save_checkpoint(wf)
    assert await manager.list_checkpoints(wf.id) == []


async def test_on_saved_hook_hears_each_save_and_cannot_break_it(tmp_path):
    seen = []
    m = CheckpointManager(SqliteStorage(tmp_path / "s.db"), "1.0.0", on_saved=seen.append)
    wf = workflow()
    cid = await m.save_checkpoint(wf)
    assert seen == [{"checkpoint_id": cid, "workflow_id": wf.id, "kind": "workflow_definition",
                     "schema_version": "1.0.0", "created_at": seen[0]["created_at"]}]
    m.on_saved = lambda info: 1 / 0
    await m.save_checkpoint(wf)  # logged, not raised: the save is durable already
    assert len(await m.list_checkpoints(wf.id)) == 2
    await m.close()


def test_bad_arguments_are_refused_at_the_call():
    with pytest.raises(StateConfigError, match="schema version") as info:
        CheckpointManager(MemoryStorage(), "one.two")
    assert info.value.field == "schema_version"
    assert isinstance(info.value, (LionError, ValueError))
    with pytest.raises(CheckpointKindError) as kind:
        CheckpointManager(MemoryStorage()).register_kind("x")
    assert isinstance(kind.value, TypeError) and kind.value.kind == "x"


async def test_an_object_without_to_dict_is_a_lion_error():
    with pytest.raises(CheckpointKindError, match="to_dict") as info:
        await CheckpointManager(MemoryStorage()).save_checkpoint(object())
    assert info.value.kind == "object"
    assert isinstance(info.value, LionError)


async def test_prune_rejects_negative_keep():
    with pytest.raises(StateConfigError) as info:
        await CheckpointManager(MemoryStorage()).prune("wf", keep=-1)
    assert info.value.field == "keep"


async def test_checkpoint_files_are_one_record_each(tmp_path):
    m = CheckpointManager(FileStorage(tmp_path), "1.0.0")
    cid = await m.save_checkpoint(workflow(id="wf-x"))
    assert cid.startswith("wf-x/0000000001-")
    assert (tmp_path / key_to_filename("checkpoints/" + cid)).is_file()
