"""The NATS JetStream event store: the broker's events and deliveries on a message server.

This store *owns delivery* (see :class:`~lion_nb.patterns.EventStore`): the
server keeps the log, routes by subject, times out unacked deliveries and
redelivers, so any number of processes on any machines share one broker.

The mapping (one row per broker notion):

=========================  ====================================================
broker                     JetStream
=========================  ====================================================
broker name ``name``       stream ``LION_<NAME>``, subjects ``lion.<name>.>``
topic / pattern            subject ``lion.<name>.u.<topic>`` (``x`` for ``$``)
event offset               stream sequence
event id / idempotency     ``Nats-Msg-Id`` (the key when given, else the id);
key, ``dedup_window``      the stream's duplicate window
subscriber or group        durable pull consumer (explicit acks); every member
                           in every process pulls from it, so each event goes
                           to one member
``ack_timeout``            ``ack_wait``; with a non-zero backoff, the
                           ``BackOff`` list ``ack_timeout + delay(n)``
``max_deliveries``         ``max_deliver`` = max_deliveries + 1: the extra
                           delivery is never handed out; it tells this store
                           that the last attempt timed out, and it dead-letters
``max_pending``            ``max_ack_pending``: delivery pauses, publishing not
failure ack with delay     ``nak`` with that delay
dead letter                ``term`` (after the broker published ``$dlq.<topic>``)
exactly-once effects       a KV bucket ``LION_<NAME>_STATE``: one key per
                           consumer holding its state and the offsets whose
                           effect committed, updated by compare-and-set
=========================  ====================================================

Exactly-once scope: an effect and its marker commit together to the KV
bucket on the same server (one compare-and-set), so a redelivered event's
effect is never applied twice, whichever process gets it. Effects on your
own database are not covered: commit those with your own marker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Sequence

from ...errors import (
    BrokerClosedError, BrokerConnectionError, ConfigError, EventCorruptError, StreamClashError,
)
from ..events import (
    ACKED, DEAD, PENDING, ConsumerRecord, ConsumerSink, Event, EventStore, StoreSnapshot,
    apply_effects,
)
from ._connect import connect_jetstream
from ._wire import Wire

__all__ = ["NatsEventStore"]

_log = logging.getLogger("lion_nb.nats")
_MARK = "lion_nb"            # stream / consumer metadata key saying "made by lion_nb"
_PRUNE_AT = 512              # prune committed-effect markers past this many


class _Pump:
    """One attached consumer: a task pulling its messages into the broker's sink."""

    __slots__ = ("consumer", "durable", "record", "sink", "task", "held", "free", "wake",
                 "stopping")

    def __init__(self, consumer: str, durable: str, record: ConsumerRecord,
                 sink: ConsumerSink, window: int) -> None:
        self.consumer = consumer
        self.durable = durable
        self.record = record
        self.sink = sink
        self.task: asyncio.Task[None] | None = None
        self.held: dict[str, Any] = {}          # event id -> the message handed to the broker
        self.free = window                      # how many more messages it may hold
        self.wake = asyncio.Event()             # set when `free` goes up from 0
        self.stopping = False                   # detach() asked the pull loop to end

    def release(self) -> None:
        """One held message is settled (or replaced): room for one more."""
        self.free += 1
        if self.free == 1:
            self.wake.set()


class NatsEventStore(EventStore):
    """Events and deliveries on a NATS JetStream server (see the module docstring).

    ``url`` is the server; ``name`` the broker name (its stream); brokers in
    several processes given the same URL and name share everything.
    ``storage`` is ``"file"`` (survives a server restart) or ``"memory"``.
    ``dedup_window`` is the stream's Msg-Id window (seconds). Needs
    ``pip install 'lion_nb[nats]'``.
    """

    durable = True
    immediate = False
    owns_delivery = True

    def __init__(self, url: str = "nats://127.0.0.1:4222", *, name: str = "lion",
                 storage: str = "file", dedup_window: float = 120.0,
                 connect_timeout: float = 2.0, publish_timeout: float = 30.0,
                 fetch_batch: int = 128) -> None:
        if storage not in ("file", "memory"):
            raise ConfigError(f"storage must be 'file' or 'memory', got {storage!r}",
                              field="storage")
        self.url = url
        self.wire = Wire(name)
        self.storage = storage
        self.dedup_window = dedup_window
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.fetch_batch = fetch_batch
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._open_lock: asyncio.Lock | None = None
        self._closed = False
        self._records: dict[str, ConsumerRecord] = {}
        self._pumps: dict[str, _Pump] = {}

    # -- connection and stream ------------------------------------------------------------

    async def _ready(self) -> Any:
        """The JetStream context, connecting and creating the stream on first use."""
        if self._js is not None:
            return self._js
        if self._closed:
            raise BrokerClosedError(f"NATS event store {self.url} is closed")
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._js is None:
                nc = await connect_jetstream(self.url, timeout=self.connect_timeout)
                try:
                    js = nc.jetstream(timeout=max(5.0, self.connect_timeout))
                    await self._ensure_stream(js)
                except BaseException:
                    await nc.close()
                    raise
                self._nc, self._js = nc, js
        return self._js

    async def _ensure_stream(self, js: Any) -> None:
        from nats.js.api import DiscardPolicy, StorageType, StreamConfig
        from nats.js.errors import BadRequestError, NotFoundError
        wire = self.wire
        try:
            info = await js.stream_info(wire.stream)
        except NotFoundError:
            info = None
        if info is not None:
            meta = info.config.metadata or {}
            if meta.get(_MARK) != "events" or info.config.subjects != [wire.all_subjects]:
                raise StreamClashError(
                    f"JetStream stream {wire.stream!r} exists but is not lion_nb's event stream "
                    f"for broker {wire.name!r} (subjects {info.config.subjects}); pick another "
                    "name= or delete that stream", stream=wire.stream)
            return
        config = StreamConfig(
            name=wire.stream, subjects=[wire.all_subjects], duplicate_window=self.dedup_window,
            storage=StorageType.FILE if self.storage == "file" else StorageType.MEMORY,
            discard=DiscardPolicy.OLD, metadata={_MARK: "events", "broker": wire.name},
            description=f"lion_nb events of broker {wire.name!r}")
        try:
            await js.add_stream(config)
        except BadRequestError as exc:
            # 10065: subjects overlap with another stream; 10058: name taken meanwhile
            raise StreamClashError(
                f"cannot create JetStream stream {wire.stream!r} for {wire.all_subjects!r}: "
                f"{exc.description} (err {exc.err_code})", stream=wire.stream) from None

    async def _state_kv(self) -> Any:
        if self._kv is None:
            js = await self._ready()
            from nats.js.api import KeyValueConfig, StorageType
            self._kv = await js.create_key_value(KeyValueConfig(
                bucket=self.wire.kv_bucket, history=1,
                storage=StorageType.FILE if self.storage == "file" else StorageType.MEMORY))
        return self._kv

    # -- EventStore: the log ---------------------------------------------------------------

    def write(self, appends: Sequence[tuple[Event, Sequence[str]]] = (),
              updates: Sequence[Any] = (),
              effects: Sequence[tuple[str, int | None, Any]] = (),
              ) -> "asyncio.Future[tuple[list[int | None], list[bool]]]":
        """Publish appends (``None`` offset for a duplicate Msg-Id); commit effects by CAS.

        Returns a future at once: the work is queued in call order, as the
        store contract asks, and the broker may attach callbacks to it.
        """
        wire = self.wire
        # Encoded here, at the call: a non-JSON payload is refused before anything is queued.
        bodies = [(wire.subject(e.topic), wire.encode(e), e.idempotency_key or e.id)
                  for e, _ in appends]
        return asyncio.ensure_future(self._write(bodies, effects))

    async def _write(self, bodies: list[tuple[str, bytes, str]],
                     effects: Sequence[tuple[str, int | None, Any]],
                     ) -> tuple[list[int | None], list[bool]]:
        js = self._js if self._js is not None else await self._ready()
        applied = [await self._apply_effect(c, o, fx) for c, o, fx in effects]
        offsets: list[int | None] = []
        for subject, body, msg_id in bodies:
            offsets.append(await self._publish(js, subject, body, msg_id))
        return offsets, applied

    async def _publish(self, js: Any, subject: str, body: bytes, msg_id: str) -> int | None:
        """Publish with retries while the server is away; the Msg-Id makes retrying safe."""
        try:
            ack = await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})
            return None if ack.duplicate else int(ack.seq)
        except Exception:  # the slow path below retries and tells closed from away
            pass
        from nats.errors import ConnectionClosedError
        deadline = time.monotonic() + self.publish_timeout
        delay = 0.05
        while True:
            try:
                ack = await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})
                return None if ack.duplicate else int(ack.seq)
            except ConnectionClosedError:
                raise BrokerClosedError(f"NATS event store {self.url} is closed") from None
            except Exception as exc:  # no responders / timeout while the server restarts
                if time.monotonic() + delay > deadline:
                    raise BrokerConnectionError(
                        f"NATS server at {self.url} did not take an event on {subject!r} "
                        f"within {self.publish_timeout:g}s ({type(exc).__name__}: {exc})",
                        url=self.url) from None
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    async def read(self, from_offset: int | None = None, since: float | None = None,
                   limit: int | None = None) -> list[Event]:
        """Logged events in offset order, through a throwaway ordered consumer."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        js = await self._ready()
        info = await js.stream_info(self.wire.stream)
        last = info.state.last_seq
        if last == 0 or (from_offset is not None and from_offset > last):
            return []
        start = max(from_offset or 1, info.state.first_seq)
        cfg = ConsumerConfig(ack_policy=AckPolicy.NONE,
                             deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                             opt_start_seq=start, inactive_threshold=30.0, mem_storage=True)
        psub = await js.pull_subscribe(self.wire.all_subjects, durable=None,
                                       stream=self.wire.stream, config=cfg)
        out: list[Event] = []
        try:
            seq = start - 1
            while seq < last and (limit is None or len(out) < limit):
                try:
                    msgs = await psub.fetch(256, timeout=2.0)
                except TimeoutError:
                    break
                for msg in msgs:
                    seq = msg.metadata.sequence.stream
                    if seq > last:
                        break
                    event = self._decode_or_none(msg)
                    if event is None or (since is not None and (event.timestamp or 0) < since):
                        continue
                    out.append(event)
        finally:
            await psub.unsubscribe()
        return out if limit is None else out[:limit]

    def _decode_or_none(self, msg: Any) -> Event | None:
        try:
            return self.wire.decode(msg.subject, msg.data, msg.metadata.sequence.stream)
        except EventCorruptError as exc:
            _log.error("skipping a message that is not a lion_nb event: %s", exc)
            return None

    # -- EventStore: consumers ---------------------------------------------------------------

    async def load(self, keys_since: float) -> StoreSnapshot:
        """The durable consumers this broker name has; deliveries come through attach()."""
        js = await self._ready()
        records = []
        for info in await js.consumers_info(self.wire.stream):
            meta = info.config.metadata or {}
            raw = meta.get(_MARK)
            if raw is None:
                continue  # an ephemeral reader or somebody else's consumer
            try:
                data = json.loads(raw)
                record = ConsumerRecord(data["name"], data["pattern"], data.get("filter"),
                                        data.get("options") or {})
            except (ValueError, KeyError, TypeError):
                _log.error("consumer %r has unreadable lion_nb metadata; ignored", info.name)
                continue
            records.append(record)
            self._records[record.name] = record
        return StoreSnapshot(records, {}, [])

    async def register_consumer(self, record: ConsumerRecord) -> None:
        """Create or update the durable pull consumer for a subscription."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        js = await self._ready()
        opts = record.options
        ack_wait = float(opts.get("ack_timeout") or 30.0)
        max_deliveries = int(opts.get("max_deliveries") or 5)
        delays = [float(d) for d in (opts.get("backoff") or ())]
        backoff = None
        if any(d > 0 for d in delays):
            # JetStream's BackOff replaces ack_wait per delivery: the nth ack wait is the
            # timeout plus the nth backoff delay, as the in-process broker waits after a timeout.
            backoff = [ack_wait + d for d in delays[:max_deliveries - 1]]
            backoff += [ack_wait] * (max_deliveries + 1 - len(backoff))
        durable = self.wire.durable(record.name)
        meta = json.dumps({"name": record.name, "pattern": record.pattern,
                           "filter": record.filter, "options": dict(opts)})
        config = ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
            filter_subject=self.wire.filter_subject(record.pattern),
            ack_wait=ack_wait, max_deliver=max_deliveries + 1, backoff=backoff,
            max_ack_pending=int(opts.get("max_ack_pending") or opts.get("max_pending") or 1000),
            max_waiting=512,
            metadata={_MARK: meta}, description=f"lion_nb subscription {record.name!r}")
        existing = await self._consumer_info(js, durable)
        if existing is not None:
            # Keep where it is in the stream; only the limits may change.
            config.deliver_policy = existing.config.deliver_policy
            if existing.config.filter_subject != config.filter_subject:
                await js.delete_consumer(self.wire.stream, durable)
        await js.add_consumer(self.wire.stream, config)
        self._records[record.name] = record

    async def _consumer_info(self, js: Any, durable: str) -> Any:
        from nats.js.errors import NotFoundError
        try:
            return await js.consumer_info(self.wire.stream, durable)
        except NotFoundError:
            return None

    async def drop_consumer(self, name: str) -> None:
        """Delete the durable consumer and its exactly-once state."""
        from nats.js.errors import NotFoundError
        await self.detach(name)
        js = await self._ready()
        durable = self.wire.durable(name)
        try:
            await js.delete_consumer(self.wire.stream, durable)
        except NotFoundError:
            pass
        self._records.pop(name, None)
        kv = await self._state_kv()
        try:
            await kv.purge(durable)
        except NotFoundError:
            pass

    # -- EventStore: delivery ------------------------------------------------------------------

    async def attach(self, consumer: str, sink: ConsumerSink) -> None:
        """Start pulling ``consumer``'s messages into ``sink`` (unfinished ones come first)."""
        js = await self._ready()
        if consumer in self._pumps:
            return
        record = self._records.get(consumer)
        if record is None:
            raise BrokerClosedError(f"consumer {consumer!r} is not registered")
        durable = self.wire.durable(consumer)
        window = max(1, min(int(record.options.get("max_pending") or 1000), self.fetch_batch))
        pump = _Pump(consumer, durable, record, sink, window)
        psub = await js.pull_subscribe_bind(durable, self.wire.stream)
        pump.task = asyncio.get_running_loop().create_task(
            self._pull(pump, psub), name=f"lion-nats-pull:{consumer}")
        self._pumps[consumer] = pump

    async def _pull(self, pump: _Pump, psub: Any) -> None:
        """Fetch while the broker has room; hand each message to the sink."""
        from nats.errors import ConnectionClosedError
        max_deliveries = int(pump.record.options.get("max_deliveries") or 5)
        ack_wait = float(pump.record.options.get("ack_timeout") or 30.0)
        try:
            # Not `while True`: a cancel that lands as fetch's own timeout fires is
            # reported by nats-py as TimeoutError (asyncio.wait_for in 3.11 can lose
            # it), so the loop also ends on the flag detach() sets before cancelling.
            while not pump.stopping:
                while pump.free <= 0:
                    pump.wake.clear()
                    await pump.wake.wait()
                want = min(pump.free, self.fetch_batch)
                pump.free -= want
                try:
                    msgs = await psub.fetch(want, timeout=1.0)
                except TimeoutError:
                    msgs = []
                except ConnectionClosedError:
                    return
                except Exception as exc:  # the server is away: nats-py reconnects meanwhile
                    _log.debug("fetch for %r failed: %s", pump.consumer, exc)
                    msgs = []
                    await asyncio.sleep(0.2)
                pump.free += want - len(msgs)
                for msg in msgs:
                    try:
                        self._hand(pump, msg, max_deliveries, ack_wait)
                    except Exception:  # the pump must outlive one bad hand-over
                        _log.exception("handing a message to %r failed", pump.consumer)
        except asyncio.CancelledError:
            pass
        finally:
            try:
                await psub.unsubscribe()
            except Exception:  # the connection may be gone already
                pass

    def _hand(self, pump: _Pump, msg: Any, max_deliveries: int, ack_wait: float) -> None:
        meta = msg.metadata
        attempt = meta.num_delivered
        try:
            event = self.wire.decode(msg.subject, msg.data, meta.sequence.stream)
        except EventCorruptError as exc:
            # Input from another process that fails its checks is dead-lettered, not parsed.
            stub = Event(self.wire.topic_of(msg.subject) or "unknown",
                         None, id=getattr(exc, "event_id", None) or f"seq-{meta.sequence.stream}",
                         offset=meta.sequence.stream)
            pump.release()
            asyncio.ensure_future(self._settle_msg(msg, DEAD))
            pump.sink.dead_lettered(pump.consumer, stub, attempt, str(exc))
            return
        if attempt > max_deliveries:
            # The extra delivery: the last real attempt went unacked for ack_wait.
            pump.release()
            asyncio.ensure_future(self._settle_msg(msg, DEAD))
            pump.sink.dead_lettered(pump.consumer, event, max_deliveries,
                                    f"no ack within {ack_wait:g}s (attempt {max_deliveries})")
            return
        old = pump.held.pop(event.id, None)
        if old is not None:
            pump.release()  # a redelivery replaces the attempt the broker still held
        pump.held[event.id] = msg
        pump.sink.deliver(pump.consumer, event, attempt)

    async def settle(self, consumer: str, event: Event, outcome: int, attempts: int,
                     delay: float | None = None, error: str | None = None) -> None:
        """Ack, nak (after ``delay``) or term the message the broker had for ``event``."""
        pump = self._pumps.get(consumer)
        msg = pump.held.pop(event.id, None) if pump is not None else None
        if msg is None:
            return  # already superseded by a redelivery, or detached: the server redelivers
        pump.release()  # type: ignore[union-attr]
        if outcome == ACKED:  # the common case, one call deep
            try:
                await msg.ack()
            except Exception as exc:  # lost with the connection: the server redelivers
                _log.debug("ack failed: %s", exc)
            return
        await self._settle_msg(msg, outcome, delay)

    async def progress(self, consumer: str, event: Event) -> None:
        """In progress: the server restarts the message's ack wait (``+WPI``)."""
        pump = self._pumps.get(consumer)
        msg = pump.held.get(event.id) if pump is not None else None
        if msg is not None:
            try:
                await msg.in_progress()
            except Exception as exc:  # lost with the connection: the ack wait runs out
                _log.debug("in-progress for %s failed: %s", event.id, exc)

    async def _settle_msg(self, msg: Any, outcome: int, delay: float | None = None) -> None:
        try:
            if outcome == ACKED:
                await msg.ack()
            elif outcome == PENDING:
                # A plain nak would wait out the consumer's BackOff entry; 1 ms means "now".
                await msg.nak(delay=delay if delay else 0.001)
            elif outcome == DEAD:
                await msg.term()
        except Exception as exc:  # lost with the connection: the server redelivers
            _log.debug("settling a message failed: %s", exc)

    async def detach(self, consumer: str) -> None:
        """Stop pulling; give back what the broker held so other members get it at once."""
        pump = self._pumps.pop(consumer, None)
        if pump is None:
            return
        pump.stopping = True
        if pump.task is not None:
            pump.task.cancel()
            await asyncio.gather(pump.task, return_exceptions=True)
        held, pump.held = list(pump.held.values()), {}
        for msg in held:
            await self._settle_msg(msg, PENDING)

    # -- exactly-once state --------------------------------------------------------------------

    async def _apply_effect(self, consumer: str, offset: int | None, effects: Any) -> bool:
        """Commit ``effects`` and the marker for ``offset`` in one compare-and-set."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
        kv = await self._state_kv()
        key = self.wire.durable(consumer)
        while True:
            try:
                entry = await kv.get(key)
                doc, revision = json.loads(entry.value), entry.revision
            except KeyNotFoundError:
                doc, revision = {"state": {}, "done": []}, 0
            done = set(doc["done"])
            if offset in done:
                return False
            new_state = apply_effects(doc["state"], effects)  # may raise: nothing written
            done.add(offset)
            if len(done) > _PRUNE_AT:
                done = await self._prune(consumer, done)
            body = json.dumps({"state": new_state, "done": sorted(done)},
                              allow_nan=False).encode()
            try:
                if revision:
                    await kv.update(key, body, last=revision)
                else:
                    await kv.create(key, body)
                return True
            except (KeyWrongLastSequenceError, Exception) as exc:
                if not _is_cas_conflict(exc):
                    raise
                # another process committed meanwhile: read again and decide again

    async def _prune(self, consumer: str, done: set[Any]) -> set[Any]:
        """Markers below the consumer's ack floor can go: those events never come back."""
        js = await self._ready()
        info = await self._consumer_info(js, self.wire.durable(consumer))
        floor = info.ack_floor.stream_seq if info is not None else 0
        return {o for o in done if o is None or o > floor}

    async def state(self, consumer: str) -> dict[str, Any]:
        """A copy of an exactly-once consumer's committed state."""
        from nats.js.errors import KeyNotFoundError
        kv = await self._state_kv()
        try:
            entry = await kv.get(self.wire.durable(consumer))
        except KeyNotFoundError:
            return {}
        if entry.value is None:
            return {}
        state: dict[str, Any] = json.loads(entry.value)["state"]
        return state

    # -- closing and looking -----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop pulling, give held messages back, flush acks and close the connection."""
        if self._closed:
            return
        self._closed = True
        for consumer in list(self._pumps):
            await self.detach(consumer)
        nc, self._nc, self._js, self._kv = self._nc, None, None, None
        if nc is not None:
            try:
                await nc.flush(timeout=2)
            except Exception:  # the server may be gone; nothing left to flush to
                pass
            await nc.close()

    async def figures(self) -> dict[str, Any]:
        """The stream's and each consumer's figures, as the server reports them."""
        js = await self._ready()
        info = await js.stream_info(self.wire.stream)
        consumers = []
        for c in await js.consumers_info(self.wire.stream):
            meta = c.config.metadata or {}
            try:
                name = json.loads(meta[_MARK])["name"]
            except (KeyError, ValueError, TypeError):
                continue
            consumers.append({"name": name, "durable": c.name,
                              "pending": c.num_pending, "ack_pending": c.num_ack_pending,
                              "redelivered": c.num_redelivered, "waiting": c.num_waiting,
                              "acked_to": c.ack_floor.stream_seq if c.ack_floor else 0})
        return {"stream": self.wire.stream, "messages": info.state.messages,
                "bytes": info.state.bytes, "first_seq": info.state.first_seq,
                "last_seq": info.state.last_seq, "consumers": consumers}

    def __repr__(self) -> str:
        return f"NatsEventStore({self.url!r}, name={self.wire.name!r})"


def _is_cas_conflict(exc: BaseException) -> bool:
    from nats.js.errors import APIError, KeyWrongLastSequenceError
    if isinstance(exc, KeyWrongLastSequenceError):
        return True
    # create() on a key another process created first: "wrong last sequence" (10071)
    return isinstance(exc, APIError) and getattr(exc, "err_code", None) == 10071
