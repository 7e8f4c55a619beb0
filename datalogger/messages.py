"""Every message that crosses between actors, or into the actor system.

All are small frozen attrs classes with unique names, because Thespian's
``ActorTypeDispatcher`` dispatches on the bare class name. ``Log`` is the one
users send themselves::

    from thespian.actors import ActorSystem
    from datalogger.messages import Log

    ActorSystem().tell(dl.router, Log("green", [{"x": 1}]))
"""

from __future__ import annotations

from typing import Any

import attrs


def _count(value: Any) -> str:
    """Short repr of a rows field: Thespian formats every message it sends for its debug log."""
    return f"<{len(value)} rows>" if isinstance(value, list) else f"<{type(value).__name__}>"

# --------------------------------------------------------------------------- public


@attrs.frozen
class Log:
    """Log ``data`` (a row or a list of rows) to ``topic``."""

    topic: str
    """Where the data goes: a name from ``[A-Za-z0-9_.:-]``, 1 to 255 characters."""
    data: Any = attrs.field(repr=_count)
    """One row (a dict) or a list of rows; any other value, or a list of them, for
    topics whose destinations all take any data."""
    reply: bool = False
    """Answer with :class:`LogAccepted` or :class:`LogRejected` (use with ``ask``)."""
    ref: int = 0
    """Echoed in the answer, so a caller can match answers to requests."""


@attrs.frozen
class LogAccepted:
    """Reply to :class:`Log`: every destination of the topic has the chunk."""

    topic: str
    """The topic logged to."""
    seq: int
    """The chunk's sequence number within its topic."""
    ref: int = 0
    """The ``ref`` of the :class:`Log` answered."""
    route: Any = None
    """The topic's TopicSupervisor: a client may send the topic's next chunks
    there directly (:class:`DirectLog`), saving the hop through the router."""


@attrs.frozen
class LogRejected:
    """Reply to :class:`Log` that was refused; nothing was kept."""

    error: str
    """Name of the datalogger exception class (``InvalidTopic``, ``Backpressure``...)."""
    message: str
    """What was wrong."""
    ref: int = 0
    """The ``ref`` of the :class:`Log` answered."""


# ------------------------------------------------------------------ node control


@attrs.frozen
class ConfigureNode:
    """Sent once to a new RootSupervisor with the validated configuration."""

    config: Any
    """A :class:`datalogger.config.Config`."""
    node: str | None = None
    """``host:port`` of this node's admin; None on ``simpleSystemBase`` (no convention)."""
    leader: str | None = None
    """``host:port`` of the convention leader; None when this node leads."""
    capabilities: tuple[str, ...] = ()
    """Capabilities of this node."""
    owner: tuple[int, float | None] | None = None
    """``(pid, start time)`` of the process that started the node: when it is gone (even
    killed with SIGKILL), the node stops too. None: the node outlives its starter."""


@attrs.frozen
class NodeReady:
    """Reply to :class:`ConfigureNode`: the node works."""

    topics: tuple[str, ...] = ()
    """Topics that had undelivered data on disk and were started at once."""


@attrs.frozen
class NodeStartFailed:
    """Reply to :class:`ConfigureNode`: the node cannot work; the RootSupervisor stays unconfigured."""

    reason: str
    """What failed (the data directory, the process-status adapter...), for the user."""


@attrs.frozen
class FlushRequest:
    """Ask the node to deliver everything accepted so far."""

    timeout: float
    """Seconds to wait before answering with what is still pending."""
    ref: int = 0


@attrs.frozen
class FlushReply:
    """Reply to :class:`FlushRequest`."""

    done: bool
    """True when everything accepted before the request was delivered or dead-lettered."""
    pending: dict[str, int] = attrs.field(factory=dict)
    """Topic -> chunks still pending, when ``done`` is false."""
    ref: int = 0
    broken: dict[str, str] = attrs.field(factory=dict)
    """Topic -> why it cannot be flushed (its write-ahead log cannot be opened)."""


@attrs.frozen
class StatsRequest:
    """Ask the node for its counters."""

    ref: int = 0
    detail: bool | None = None
    """Per-topic counters: True always, False never (summary only), None when the node
    hosts at most :data:`datalogger.core.gather.DETAIL_TOPICS` topics."""


@attrs.frozen
class StatsReply:
    """Reply to :class:`StatsRequest`."""

    stats: dict[str, Any]
    """``{"topics": {topic: {destination: counters}}, "rejected": n, ...}``."""
    ref: int = 0


@attrs.frozen
class ShutdownRequest:
    """Ask the node to flush (within ``timeout``), spill the rest and close destinations."""

    timeout: float
    """Seconds to spend delivering before spilling what is left."""
    ref: int = 0


@attrs.frozen
class ShutdownReady:
    """Reply to :class:`ShutdownRequest`: the actor system may now be shut down."""

    spilled_rows: int = 0
    """Rows that could not be delivered in time and wait on disk for the next start."""
    ref: int = 0


# ------------------------------------------------------------- inside the tree


@attrs.frozen
class StartSupervisor:
    """RootSupervisor -> TopicSupervisor: the configuration; topics follow in chunks or HostTopics."""

    config: Any
    """The node's :class:`datalogger.config.Config`."""
    process_status: Any = None
    """The ProcessStatus actor's address."""
    members: tuple[Any, ...] | None = None
    """Live members (:class:`datalogger.placement.Member`); None on ``simpleSystemBase``."""
    shared: bool = False
    """True for a supervisor of the shared pool (it never exits when idle)."""
    label: str = ""
    """For logs: the dedicated topic, or the pool slot."""


@attrs.frozen
class HostTopics:
    """RootSupervisor -> TopicSupervisor: open these topics now (their logs hold unsettled chunks)."""

    topics: tuple[str, ...]


@attrs.frozen
class SupervisorIdle:
    """TopicSupervisor -> RootSupervisor: a dedicated supervisor released all its topics.

    ``received`` counts the chunks the root forwarded to it: the root lets it exit only when
    it forwarded no more since (otherwise a chunk is on its way and it stays).
    """

    received: int
    released: dict[str, dict[str, Any]] = attrs.field(factory=dict, repr=False)
    """Topic -> the last counters of each destination (kept by the root for ``stats()``)."""


@attrs.frozen
class SupervisorStay:
    """RootSupervisor -> TopicSupervisor: chunks are on their way, do not exit."""


@attrs.frozen
class TopicTimer:
    """A TopicSupervisor's timer for one topic (the payload of its ``wakeupAfter``)."""

    topic: str
    kind: str
    """``linger``, ``wal``, ``wal-open``, ``status``, ``recovery``, ``blocked`` or ``synced``."""
    value: Any = None
    epoch: int = 0
    """The :class:`~datalogger.core.topic_state.TopicState` that set it (a released topic's
    timers do not reach the state that takes the topic back)."""


@attrs.frozen
class SupervisorTimer:
    """A TopicSupervisor's own timer: ``restart`` a worker, ``idle`` sweep, ``handles`` check."""

    kind: str
    value: Any = None


@attrs.frozen
class TopicChunk:
    """RootSupervisor -> TopicSupervisor: a validated chunk for its topic."""

    topic: str
    rows: list[dict[str, Any]] = attrs.field(repr=_count)
    reply_to: Any
    """Address to send :class:`LogAccepted` or :class:`LogRejected` to, or None."""
    ref: int = 0
    """The ``ref`` of the :class:`Log`, echoed in the answer."""


@attrs.frozen
class StartWorker:
    """TopicSupervisor -> DestinationWorker: the destination to serve, for every topic it is sent."""

    spec: Any
    """A :class:`datalogger.config.DestinationSpec`."""
    data_dir: str


@attrs.frozen
class DeliverChunk:
    """TopicSupervisor -> DestinationWorker: send this chunk of ``topic``."""

    topic: str
    seq: int
    rows: list[dict[str, Any]] = attrs.field(repr=_count)


@attrs.frozen
class DeliverChunks:
    """TopicSupervisor -> DestinationWorker: several chunks of ``topic`` that waited, sent as one."""

    topic: str
    chunks: list[tuple[int, list[dict[str, Any]]]] = attrs.field(repr=_count)


@attrs.frozen
class ChunkSettled:
    """DestinationWorker -> TopicSupervisor: a chunk of ``topic`` needs no more work."""

    topic: str
    destination: str
    seqs: tuple[int, ...]
    """The chunks settled (several when a buffer merged them)."""
    delivered_rows: int
    dead_rows: int
    """Rows written to the dead-letter store."""
    attempts: int
    latency: float
    """Seconds from the first attempt to the outcome."""
    error: str | None = None
    """The last error, when some rows were dead-lettered."""


@attrs.frozen
class AttemptFailed:
    """DestinationWorker -> TopicSupervisor: an attempt for ``topic`` failed and will be retried."""

    topic: str
    destination: str
    seqs: tuple[int, ...]
    attempt: int
    error: str
    retry_in: float


@attrs.frozen
class WorkerFlush:
    """TopicSupervisor -> DestinationWorker: send buffered rows now, don't wait for the timer."""


@attrs.frozen
class SendChunk:
    """DestinationWorker -> SendActor: build the destination, send one chunk, report, exit."""

    spec: Any
    topic: str
    token: int
    rows: list[dict[str, Any]] = attrs.field(repr=_count)


@attrs.frozen
class SendOutcome:
    """SendActor -> DestinationWorker: how the send went."""

    token: int
    ok: bool
    result: Any = None
    """``send_data``'s return value (its repr when it cannot be pickled)."""
    error: Any = None
    """The exception (or its description when it cannot be pickled)."""
    error_type: str | None = None
    permanent: bool = False
    bad: tuple[tuple[int, str], ...] | None = None
    """With a permanent error, ``(index, reason)`` of the rows rejected (None: not named)."""
    unsure: tuple[int, ...] = ()
    """With a permanent error, indices of rows to try again in halves."""
    isolate: bool = True
    """False when the error is not about the rows."""


@attrs.frozen
class TopicStatsRequest:
    """RootSupervisor -> TopicSupervisor: report the counters of every topic it hosts."""

    token: int
    detail: bool = True
    """Per-topic counters; False: the supervisor's summary only."""


@attrs.frozen
class TopicStatsReply:
    """TopicSupervisor -> RootSupervisor: one reply for all its topics."""

    token: int
    topics: dict[str, dict[str, Any]] = attrs.field(repr=False)
    """Topic -> destination -> counters (empty without ``detail``)."""
    summary: dict[str, Any] = attrs.field(factory=dict)
    """Counters summed over its topics (see :func:`datalogger.core.gather.summarize`)."""
    pid: int = 0
    """The TopicSupervisor's process id."""


@attrs.frozen
class TopicFlushRequest:
    """RootSupervisor -> TopicSupervisor: answer when all chunks up to now are settled."""

    token: int
    urgent: bool = False
    """Ask workers to flush buffers at once."""


@attrs.frozen
class TopicFlushed:
    """TopicSupervisor -> RootSupervisor: reply to :class:`TopicFlushRequest`, for all its topics."""

    token: int
    errors: dict[str, str] = attrs.field(factory=dict)
    """Topic -> why it cannot be flushed (its write-ahead log cannot be opened)."""


@attrs.frozen
class TopicSpillRequest:
    """RootSupervisor -> TopicSupervisor: persist everything unsettled for the next start."""

    token: int


@attrs.frozen
class TopicSpilled:
    """TopicSupervisor -> RootSupervisor: reply to :class:`TopicSpillRequest`, for all its topics."""

    token: int
    rows: int
    """Rows not yet delivered: they stay in the write-ahead log for the next start."""
    items: tuple[tuple[str, int], ...] = ()
    """The final process-status items of its topics."""


@attrs.frozen
class ProcessStatusStart:
    """RootSupervisor -> ProcessStatus: open the storage adapter and load the cache."""

    adapter: str
    """Short adapter name or ``package.module:Class``."""
    options: dict[str, Any]
    """The adapter's options."""


@attrs.frozen
class ProcessStatusStarted:
    """ProcessStatus -> RootSupervisor: the answer to :class:`ProcessStatusStart`."""

    error: str | None = None
    """Why the adapter did not open or load (passwords masked); None: ready."""


@attrs.frozen
class ItemsProcessed:
    """TopicSupervisor -> ProcessStatus: entities whose last delivered chunk moved on."""

    items: tuple[tuple[str, int], ...]
    """``(entity, timestamp)`` pairs: ``("<topic>/<destination>", sequence number)``."""


@attrs.frozen
class WatermarksRequest:
    """Ask ProcessStatus for the timestamps of some entities (all when ``entities`` is None)."""

    token: int
    entities: tuple[str, ...] | None = None


@attrs.frozen
class WatermarksReply:
    """Reply to :class:`WatermarksRequest`."""

    token: int
    items: dict[str, int]
    """Entity -> timestamp, for the entities that have one."""


@attrs.frozen
class LastProcessedRequest:
    """Ask ProcessStatus for the timestamp of ``entity``."""

    entity: str
    ref: int = 0
    reply_to: Any = None
    """Where to answer, when forwarded by the RootSupervisor."""


@attrs.frozen
class LastProcessedReply:
    """Reply to :class:`LastProcessedRequest`."""

    entity: str
    timestamp: int | None
    """None when the entity is unknown."""
    ref: int = 0


@attrs.frozen
class ProcessStatusReset:
    """Ask ProcessStatus to forget every entity (for tests)."""

    ref: int = 0
    reply_to: Any = None


@attrs.frozen
class ProcessStatusResetDone:
    """Reply to :class:`ProcessStatusReset`."""

    ref: int = 0


@attrs.frozen
class ProcessStatusSync:
    """Record these items now and answer: used at shutdown."""

    items: tuple[tuple[str, int], ...]
    token: int = 0


@attrs.frozen
class ProcessStatusSynced:
    """Reply to :class:`ProcessStatusSync`."""

    token: int = 0


@attrs.frozen
class ProcessStatusMoved:
    """RootSupervisor -> TopicSupervisor: the ProcessStatus actor was restarted here."""

    address: Any


@attrs.frozen
class ProcessStatusInfoRequest:
    """Ask ProcessStatus about itself."""

    ref: int = 0
    reply_to: Any = None


@attrs.frozen
class ProcessStatusInfo:
    """Reply to :class:`ProcessStatusInfoRequest`."""

    pid: int
    """The actor's process id."""
    adapter: str
    """The storage adapter in use."""
    entities: int
    """Entities in the cache."""
    ref: int = 0


@attrs.frozen
class RegistryStart:
    """RootSupervisor (leader) -> ClusterRegistry: start keeping the membership."""

    heartbeat_timeout: float
    """Seconds without a heartbeat after which a member counts as gone."""
    node: str | None = None
    """``host:port`` of the leader itself: always a member, whatever the allow list says."""
    allowed: tuple[str, ...] | None = None
    """The allow list (``host``, ``host:port``, networks); None: everyone."""


@attrs.frozen
class LocateRegistry:
    """RootSupervisor (member) -> RegistryLocator on the leader: find the ClusterRegistry."""


@attrs.frozen
class RegistryLocated:
    """RegistryLocator -> RootSupervisor: the leader's ClusterRegistry."""

    address: Any


@attrs.frozen
class NodeHeartbeat:
    """RootSupervisor -> ClusterRegistry, every ``heartbeat_interval`` seconds."""

    node: str
    """``host:port`` of the node's admin."""
    root: Any
    """The node's RootSupervisor."""
    capabilities: tuple[str, ...]
    placements: dict[str, str | None]
    """``"<topic>/<destination>"`` -> the node delivering it, for the topics this node routes."""
    pubsub: Any = None
    """The node's PubSub actor, for ``scope="cluster"`` broadcasts."""


@attrs.frozen
class MembershipRefused:
    """ClusterRegistry -> RootSupervisor of a node that may not join, after each of its heartbeats."""

    node: str
    """``host:port`` of the refused node, as it introduced itself."""
    reason: str
    """Why, for the refused node's log, ``datalogger nodes`` and ``datalogger health``."""


@attrs.frozen
class Membership:
    """ClusterRegistry -> RootSupervisor -> TopicSupervisor: the live members."""

    members: tuple[Any, ...]
    """:class:`datalogger.placement.Member` values, sorted by node."""
    version: int = 0


@attrs.frozen
class PlacementReport:
    """TopicSupervisor -> RootSupervisor: where the topic's destinations are delivered from."""

    topic: str
    owners: dict[str, str | None]
    """Destination -> node (None: no member has the capabilities it requires)."""


@attrs.frozen
class NodesRequest:
    """Ask for the convention's members, their capabilities and what they hold."""

    ref: int = 0
    reply_to: Any = None


@attrs.frozen
class NodesReply:
    """Reply to :class:`NodesRequest`."""

    nodes: list[dict[str, Any]]
    """``{"node", "capabilities", "last_seen", "holds": ["<topic>/<destination>", ...]}``."""
    ref: int = 0


@attrs.frozen
class PubSubPeers:
    """RootSupervisor -> PubSub: the PubSub actors of the other live members."""

    peers: tuple[Any, ...]


@attrs.frozen
class DirectLog:
    """Client -> TopicSupervisor: a checked chunk for its topic, answered like :class:`Log`."""

    topic: str
    rows: list[dict[str, Any]] = attrs.field(repr=_count)
    ref: int = 0


@attrs.frozen
class RouteCheck:
    """Client -> RootSupervisor: is ``address`` still the TopicSupervisor of ``topic``?"""

    topic: str
    address: Any
    ref: int = 0


@attrs.frozen
class RouteStatus:
    """Reply to :class:`RouteCheck`."""

    topic: str
    current: bool
    ref: int = 0


@attrs.frozen
class WalSync:
    """TopicSupervisor -> itself: fsync the write-ahead log, then answer the callers waiting.

    Sent after an append under ``fsync = "always"``; chunks that arrived
    before it is handled share its fsync (group commit).
    """

    topic: str = ""


@attrs.frozen
class WorkerTick:
    """DestinationWorker -> itself: send the next queued chunk.

    Sending one chunk per message lets new messages in between chunks.
    """


# ---- PubSub
# Live fan-out of events (request analytics) to subscribers; see datalogger.pubsub.


@attrs.frozen
class PubSubSubscribe:
    """Subscriber -> PubSub: send me every event broadcast on ``topic``.

    Answered with :class:`PubSubSubscribed`. Subscribing again with the same
    address and topic only updates ``max_pending`` (and the window and batch).
    """

    topic: str
    """The pubsub topic (``"requests"`` for request analytics)."""
    subscriber: Any = None
    """The address events go to (an actor's ``self.myAddress``); None: the sender."""
    max_pending: int = 1000
    """The bound of this subscriber's queue in the PubSub actor: events not yet
    acknowledged with :class:`PubSubAck` (sent, or waiting to be sent) beyond which
    further events are dropped (and counted) for this subscriber only."""
    window: int | None = None
    """Most events sent and not yet acknowledged; None (and at most): ``max_pending``.
    One message is on its way at a time whatever the window (see :class:`PubSubEvents`)."""
    batch: int = 1
    """Most events in one message. 1: one :class:`RequestSent` per event (each
    acknowledged before the next is sent); more: :class:`PubSubEvents` of up to
    ``batch`` events (capped at 1,000), which is how a subscriber keeps up with
    thousands of events a second."""


@attrs.frozen
class PubSubSubscribed:
    """PubSub -> subscriber: reply to :class:`PubSubSubscribe`."""

    topic: str
    """The topic subscribed to."""
    subscribers: int
    """Subscribers of ``topic`` now, this one included."""
    window: int = 1
    """Events the PubSub actor lets this subscriber hold unacknowledged; the rest wait
    in its queue."""
    batch: int = 1
    """Most events in one message (1: :class:`RequestSent`; more: :class:`PubSubEvents`)."""


@attrs.frozen
class PubSubUnsubscribe:
    """Subscriber -> PubSub: stop sending me events of ``topic``. No reply."""

    topic: str
    """The topic to leave."""
    subscriber: Any = None
    """The address given to :class:`PubSubSubscribe`; None: the sender."""


@attrs.frozen
class PubSubBroadcast:
    """Publisher -> PubSub: fan ``event`` out to the subscribers of ``topic``. No reply."""

    topic: str
    """The pubsub topic."""
    event: Any
    """Any picklable object; a :class:`~datalogger.analytics.RequestLog` for ``"requests"``."""
    scope: str = "local"
    """``"local"``: subscribers of this node; ``"cluster"``: also the PubSub actors of
    the other convention members, which deliver it to theirs."""
    ack: bool = False
    """Set by a PubSub forwarding a cluster broadcast to a peer: the peer answers
    with a :class:`PubSubAck`, so the forwarding side never waits on a slow peer."""


@attrs.frozen
class PubSubBroadcasts:
    """Publisher -> PubSub: several events of one topic in one message, fanned out in order.

    For a publisher that queues events and sends them in batches (one message
    instead of one per event), as a :class:`~datalogger.DataLogger` handle's
    ``broadcast()`` does. No reply (but see ``ack``).
    """

    topic: str
    """The pubsub topic."""
    events: tuple[Any, ...] = attrs.field(repr=_count)
    """The events, oldest first (shown as a count: Thespian formats every message it sends)."""
    scope: str = "local"
    """As :attr:`PubSubBroadcast.scope`."""
    ack: bool = False
    """As :attr:`PubSubBroadcast.ack` (the peer acknowledges ``len(events)``)."""


@attrs.frozen
class RequestSent:
    """PubSub -> subscriber: one broadcast event (phoenix_analytics' ``{:request_sent, event}``)."""

    event: Any
    """The event as broadcast."""
    topic: str = "requests"
    """The topic it was broadcast on (acknowledge with this topic)."""


@attrs.frozen
class PubSubEvents:
    """PubSub -> subscriber that asked for batches: several events of ``topic``, oldest first.

    Acknowledge them with ``PubSubAck(len(events), topic)`` once handled (or
    in parts). The next message is sent once part of this one is acknowledged
    (or its ``seq`` is, see :attr:`PubSubAck.received`): one message is on its
    way to a subscriber at a time, which keeps them in order (Thespian may
    reorder several transmits in progress to one address) and holds no
    transmit of the PubSub actor behind a busy subscriber.
    """

    events: tuple[Any, ...]
    """The events as broadcast, oldest first."""
    topic: str = "requests"
    """The topic they were broadcast on (acknowledge with this topic)."""
    seq: int = 0
    """This subscriber's message number (1, 2, ...)."""


@attrs.frozen
class PubSubAck:
    """Subscriber -> PubSub: ``count`` more events of ``topic`` were consumed (opens its window)."""

    count: int
    """Events consumed since the previous acknowledgement (0: none, see ``received``)."""
    topic: str = "requests"
    """The topic the events came from."""
    subscriber: Any = None
    """The subscribed address; None: the sender."""
    received: int = 0
    """The ``seq`` of the latest :class:`PubSubEvents` received (0: not said). A subscriber
    that queues events before consuming them says so at once, and gets the next message
    without waiting for the first event to be consumed."""


@attrs.frozen
class PubSubStats:
    """Ask the PubSub actor for its counters; answered with :class:`PubSubStatsReply`."""


@attrs.frozen
class PubSubStatsReply:
    """Reply to :class:`PubSubStats`."""

    stats: dict[str, Any]
    """``{"topics": {topic: {"broadcast": n, "subscribers": n}}, "subscribers": [{"topic",
    "address", "max_pending", "window", "batch", "in_flight", "queued", "pending",
    "delivered", "dropped"}], "peers": [...], "removed": n}``."""


# ---- DataBuffer
# DataBuffer (datalogger/buffer.py) <-> BufferActor (datalogger/actors/buffer_actor.py).
# A ``key`` of None in a request means "every key of the partition".


@attrs.frozen
class BufferStart:
    """DataBuffer -> BufferActor: become one partition; answered with :class:`BufferStarted`."""

    buffer_class: str
    """The user's DataBuffer subclass as ``module:qualname``, imported by the actor."""
    state: dict[str, Any]
    """The buffer object's attributes (settings and the user's own), given to the actor's copy."""
    partition: int
    """This actor's partition index, ``0 <= partition < partitions``."""
    partitions: int
    """How many partitions the buffer has."""
    token: int = 0
    """Echoed in the answer."""


@attrs.frozen
class BufferStarted:
    """BufferActor -> DataBuffer: reply to :class:`BufferStart`."""

    partition: int
    """The partition that answers."""
    error: str | None = None
    """Why the actor could not take the buffer up (the class did not import...); None: ready."""
    token: int = 0
    """The ``token`` of the :class:`BufferStart` answered."""


@attrs.frozen
class BufferInsert:
    """DataBuffer -> BufferActor: append values to a key's buffer."""

    key: Any
    """The key (any hashable, picklable value but None)."""
    values: list[Any]
    """The values, in insert order."""


@attrs.frozen
class BufferFlush:
    """DataBuffer -> BufferActor: flush now, answer nothing."""

    key: Any = None
    """The key to flush; None: every key."""


@attrs.frozen
class BufferSyncFlush:
    """DataBuffer -> BufferActor: flush now; answer with :class:`BufferSyncFlushed` once settled."""

    token: int
    """Echoed in the answer."""
    key: Any = None
    """The key to flush; None: every key."""


@attrs.frozen
class BufferSyncFlushed:
    """BufferActor -> DataBuffer: the data flushed for a :class:`BufferSyncFlush` is settled."""

    token: int
    """The ``token`` of the request answered."""
    partition: int
    """The partition that answers."""
    results: list[Any]
    """What the successful ``handle_flush`` calls returned, in the order they returned."""
    failed: int = 0
    """Flushes that ended in ``handle_error`` (they have no result)."""


@attrs.frozen
class BufferDumpRequest:
    """DataBuffer -> BufferActor: report the values held; answered with :class:`BufferDumpReply`."""

    token: int
    """Echoed in the answer."""
    key: Any = None
    """The key to report; None: every key."""


@attrs.frozen
class BufferDumpReply:
    """BufferActor -> DataBuffer: reply to :class:`BufferDumpRequest`."""

    token: int
    """The ``token`` of the request answered."""
    partition: int
    """The partition that answers."""
    data: dict[Any, list[Any]]
    """Key -> values held (waiting for a retry first, then buffered), in insert order."""


@attrs.frozen
class BufferSizeRequest:
    """DataBuffer -> BufferActor: count the values held; answered with :class:`BufferSizeReply`."""

    token: int
    """Echoed in the answer."""
    key: Any = None
    """The key to count; None: every key."""


@attrs.frozen
class BufferSizeReply:
    """BufferActor -> DataBuffer: reply to :class:`BufferSizeRequest`."""

    token: int
    """The ``token`` of the request answered."""
    partition: int
    """The partition that answers."""
    size: int
    """Values held (buffered or waiting for a retry)."""


@attrs.frozen
class BufferInfoRequest:
    """DataBuffer -> BufferActor: report keys, sizes, settings, counters."""

    token: int
    """Echoed in the answer."""


@attrs.frozen
class BufferInfoReply:
    """BufferActor -> DataBuffer: reply to :class:`BufferInfoRequest`."""

    token: int
    """The ``token`` of the request answered."""
    partition: int
    """The partition that answers."""
    info: dict[str, Any]
    """``{"partition", "keys", "size", "buffered", "retrying", "settings", counters...}``."""
