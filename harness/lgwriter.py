# Writes genuine LangGraph conversations into Redis with the REAL savers of
# langgraph-checkpoint-redis (RedisSaver, AsyncRedisSaver, ShallowRedisSaver,
# AsyncShallowRedisSaver) and returns what LangGraph itself says the conversation holds.
# Deterministic fake nodes (no LLM, no network); nothing runs at import time.
#
# Graph (one invoke per user turn; the user text goes in as a HumanMessage):
#   START -> agent [-> tools -> agent] [-> review (compiled subgraph, ns "review:<task id>")]
#   START -> flaky   (only in the extra pending=True turn: it raises once `agent` has
#                     returned, so agent's message stays only in checkpoint_write:* docs)
#
# RediSearch only indexes DB 0: the savers' setup() fails on any other DB number
# ("Cannot create index on db != 0"), so redis_url must point at DB 0.
#
# Expected messages come from LangGraph itself. get_state({"thread_id"}) is "live" in
# langgraph 1.x: it applies the finished tasks' pending writes to the values with the
# channel reducers (add_messages). get_state pinned to that checkpoint_id gives the stored
# checkpoint alone, and its tasks report `result` (the writes saved as pending writes) or
# `error`. write_conversation returns the live view and checks it equals
# add_messages(stored messages, finished task results); resuming the run with
# invoke(None) yields the same messages.
import asyncio
import json
import threading
import uuid
from typing import Any

SAVERS = ("redis", "async", "shallow", "async_shallow")

_TOOL_NAME = "lookup_order"

# Deterministic answers; several carry accents, emoji, CJK, quotes, backslashes and newlines.
_ANSWERS = (
    "¡Claro! Tu pedido está \"en camino\" 🚚\nLlegará mañana a Málaga.",
    "注文は発送済みです ✅ — l'envío sale hoy; ¿algo más? 😊",
    "Entendido: «cambio de dirección» registrado.\n\tRef: ñandú\\42 “ok”",
    "Gracias por esperar 🙏 Çava, ça marche — 谢谢！",
)

# The `flaky` node raises a plain RuntimeError with this text (a builtin class, so the
# `__error__` pending write that LangGraph stores does not name a test module).
_FAILURE = "lgwriter: simulated failure of a parallel node"


def _msg_to_dict(m: Any) -> dict:
    """A langchain message as the plain dict the archive is expected to hold."""
    tool_calls = getattr(m, "tool_calls", None) or []
    return {
        "type": m.type,
        "content": json.loads(json.dumps(m.content)),  # deep copy, str or list of blocks
        "id": m.id,
        "name": getattr(m, "name", None),
        "tool_calls": [json.loads(json.dumps(dict(tc))) for tc in tool_calls],
        "tool_call_id": getattr(m, "tool_call_id", None),
    }


def _state_dict(values: dict) -> dict:
    return {
        "messages": [_msg_to_dict(m) for m in values.get("messages", [])],
        "conversation_id": values.get("conversation_id"),
        "customer_id": values.get("customer_id"),
        "conversation_summary": values.get("conversation_summary"),
    }


def _build_graph(*, tools: bool, blocks: bool, subgraph: bool, agent_done: threading.Event):
    """The uncompiled StateGraph. `agent_done` lets `flaky` fail only after `agent` returned."""
    import time
    from typing import Annotated, Optional

    from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages
    from typing_extensions import TypedDict

    class State(TypedDict, total=False):
        messages: Annotated[list[AnyMessage], add_messages]
        conversation_id: Optional[str]
        customer_id: Optional[str]
        conversation_summary: Optional[str]

    def _content(text: str, extra: str) -> Any:
        if blocks:
            return [{"type": "text", "text": text}, {"type": "text", "text": extra}]
        return f"{text}\n{extra}"

    def agent(state: State) -> dict:
        msgs = state["messages"]
        n = sum(1 for m in msgs if isinstance(m, HumanMessage))  # turn number, 1-based
        last = msgs[-1]
        if tools and isinstance(last, HumanMessage):
            out = AIMessage(
                content=(
                    _content(f"Consultando el pedido ORD-{n}…", "un momento ⏳") if blocks else ""
                ),
                id=f"run-{uuid.uuid4()}",
                tool_calls=[
                    {
                        "name": _TOOL_NAME,
                        "args": {"order_id": f"ORD-{n}", "nota": "envío «urgente»"},
                        "id": f"call_{n}_{uuid.uuid4().hex[:8]}",
                        "type": "tool_call",
                    }
                ],
                response_metadata={"finish_reason": "tool_calls"},
            )
        else:
            user = next(m for m in reversed(msgs) if isinstance(m, HumanMessage))
            user_text = user.content if isinstance(user.content, str) else str(user.content)
            out = AIMessage(
                content=_content(
                    f"Respuesta {n}: {_ANSWERS[(n - 1) % len(_ANSWERS)]}", f"(dijiste: {user_text})"
                ),
                id=f"run-{uuid.uuid4()}",
                response_metadata={"finish_reason": "stop"},
            )
        agent_done.set()
        return {"messages": [out]}

    def tool_node(state: State) -> dict:
        last = state["messages"][-1]
        return {
            "messages": [
                ToolMessage(
                    content=json.dumps(
                        {
                            "order_id": tc["args"]["order_id"],
                            "estado": "enviado",
                            "ciudad": "A Coruña",
                            "nota": "配送中",
                        },
                        ensure_ascii=False,
                    ),
                    tool_call_id=tc["id"],
                    name=tc["name"],
                )
                for tc in last.tool_calls
            ]
        }

    def flaky(state: State, config: RunnableConfig) -> dict:
        if config["configurable"].get("lgwriter_fail"):
            agent_done.wait(5)
            time.sleep(0.05)  # let agent's task commit its writes before this one fails
            raise RuntimeError(_FAILURE)
        return {}

    def route_start(state: State, config: RunnableConfig) -> list[str]:
        return ["agent", "flaky"] if config["configurable"].get("lgwriter_fail") else ["agent"]

    def route_agent(state: State) -> str:
        last = state["messages"][-1]
        if getattr(last, "tool_calls", None):
            return "tools"
        return "review" if subgraph else END

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_node("tools", tool_node)
    builder.add_node("flaky", flaky)
    if subgraph:
        def inspect(state: State) -> dict:
            # sees the whole conversation (its checkpoints hold a copy of the messages)
            assert state["messages"], "subgraph got no messages"
            return {}

        sub = StateGraph(State)
        sub.add_node("inspect", inspect)
        sub.add_edge(START, "inspect")
        sub.add_edge("inspect", END)
        builder.add_node("review", sub.compile())  # inherits the parent's checkpointer
        builder.add_edge("review", END)
    builder.add_conditional_edges(START, route_start, ["agent", "flaky"])
    targets = ["tools", "review", END] if subgraph else ["tools", END]
    builder.add_conditional_edges("agent", route_agent, targets)
    builder.add_edge("tools", "agent")
    builder.add_edge("flaky", END)
    return builder


def _pinned(snapshot: Any) -> dict:
    """Config that names the snapshot's checkpoint_id: get_state() on it is not "live"."""
    return {"configurable": dict(snapshot.config["configurable"])}


def _expected(live: Any, pinned: Any, *, pending: bool) -> list[dict]:
    """Expected archive from LangGraph's two views of the latest root checkpoint.

    `live` = get_state({"thread_id"}): LangGraph (>= 1.x, `live=True` when no checkpoint_id is
    given) applies the pending writes of the finished tasks to the values with the channel
    reducers (add_messages). `pinned` = get_state with that checkpoint_id: the stored
    checkpoint alone. Cross-checked here: live == add_messages(pinned, finished task results),
    and with pending=True the pending messages must be absent from the stored checkpoint.
    """
    from langgraph.graph.message import add_messages

    live_msgs = list(live.values.get("messages", []))
    stored = list(pinned.values.get("messages", []))
    merged = stored
    results = [t.result for t in pinned.tasks if t.error is None and isinstance(t.result, dict)]
    for res in results:
        if res.get("messages"):
            merged = add_messages(merged, res["messages"])
    out = [_msg_to_dict(m) for m in live_msgs]
    if [_msg_to_dict(m) for m in merged] != out:
        raise AssertionError("get_state live view != checkpoint + add_messages(task results)")
    if pending:
        stored_ids = {m.id for m in stored}
        if not any(t.error is not None for t in pinned.tasks):
            raise AssertionError(f"pending turn left no failed task: {pinned.tasks!r}")
        if not out or out[-1]["id"] in stored_ids or not any(r.get("messages") for r in results):
            raise AssertionError("pending turn's messages are not only in pending writes")
    elif len(stored) != len(live_msgs):
        raise AssertionError("unexpected pending message writes on the latest checkpoint")
    return out


def _inputs(
    text: str, conversation_id: str | None, customer_id: str | None, summary: str | None
) -> dict:
    from langchain_core.messages import HumanMessage

    state: dict[str, Any] = {"messages": [HumanMessage(content=text)]}
    if conversation_id is not None:
        state["conversation_id"] = conversation_id
    if customer_id is not None:
        state["customer_id"] = customer_id
    if summary is not None:
        state["conversation_summary"] = summary
    return state


def _saver_class(saver: str):
    if saver == "redis":
        from langgraph.checkpoint.redis import RedisSaver as cls
    elif saver == "async":
        from langgraph.checkpoint.redis.aio import AsyncRedisSaver as cls
    elif saver == "shallow":
        from langgraph.checkpoint.redis.shallow import ShallowRedisSaver as cls
    elif saver == "async_shallow":
        from langgraph.checkpoint.redis.ashallow import AsyncShallowRedisSaver as cls
    else:
        raise ValueError(f"saver must be one of {SAVERS}, not {saver!r}")
    return cls


def write_conversation(
    redis_url: str,
    thread_id: str,
    turns: list[str],
    *,
    saver: str = "redis",
    conversation_id: str | None = None,
    customer_id: str | None = None,
    summary: str | None = None,
    tools: bool = False,
    blocks: bool = False,
    subgraph: bool = False,
    pending: bool = False,
    ttl_minutes: float | None = None,
) -> list[dict]:
    """Run one graph invoke per user text in `turns` on `thread_id` with the chosen real saver.

    pending=True adds one more turn ("¿Me confirmas el envío? 📦") in which `agent` succeeds
    and the parallel `flaky` node raises, so that turn's AI message(s) exist only as pending
    writes of the latest checkpoint. Returns the expected archived messages, in order, as dicts
    (type, content, id, name, tool_calls, tool_call_id), taken from LangGraph's get_state
    (with the pending task results merged by add_messages when pending=True).
    """
    cls = _saver_class(saver)
    ttl = {"default_ttl": ttl_minutes} if ttl_minutes is not None else None
    agent_done = threading.Event()
    builder = _build_graph(tools=tools, blocks=blocks, subgraph=subgraph, agent_done=agent_done)
    config = {"configurable": {"thread_id": thread_id}}
    fail_config = {"configurable": {"thread_id": thread_id, "lgwriter_fail": True}}
    pending_text = "¿Me confirmas el envío? 📦"

    def ins(text: str) -> dict:
        return _inputs(text, conversation_id, customer_id, summary)

    if saver in ("redis", "shallow"):
        with cls.from_conn_string(redis_url, ttl=ttl) as cp:
            cp.setup()
            graph = builder.compile(checkpointer=cp)
            for text in turns:
                graph.invoke(ins(text), config)
            if pending:
                agent_done.clear()
                try:
                    graph.invoke(ins(pending_text), fail_config)
                except RuntimeError as exc:
                    if str(exc) != _FAILURE:
                        raise
                else:
                    raise AssertionError("pending turn did not fail")
            live = graph.get_state(config)
            return _expected(live, graph.get_state(_pinned(live)), pending=pending)

    async def run() -> list[dict]:
        async with cls.from_conn_string(redis_url, ttl=ttl) as cp:  # __aenter__ runs asetup()
            graph = builder.compile(checkpointer=cp)
            for text in turns:
                await graph.ainvoke(ins(text), config)
            if pending:
                agent_done.clear()
                try:
                    await graph.ainvoke(ins(pending_text), fail_config)
                except RuntimeError as exc:
                    if str(exc) != _FAILURE:
                        raise
                else:
                    raise AssertionError("pending turn did not fail")
            live = await graph.aget_state(config)
            return _expected(live, await graph.aget_state(_pinned(live)), pending=pending)

    return asyncio.run(run())


def conversation_state(
    redis_url: str, thread_id: str, *, saver: str = "redis", include_pending: bool = True
) -> dict:
    """LangGraph's own view of a thread: get_state().values as plain dicts:
    {"messages": [dicts as in write_conversation], "conversation_id", "customer_id",
    "conversation_summary"} (None when absent; messages [] for an unknown thread).

    include_pending=True is plain get_state({"thread_id": ...}), which in langgraph 1.x is
    "live": finished tasks' pending writes are already applied (so after pending=True it
    equals write_conversation's return value). include_pending=False pins the latest
    checkpoint_id: the stored checkpoint's values alone, without the pending writes.
    """
    cls = _saver_class(saver)
    builder = _build_graph(tools=True, blocks=False, subgraph=True, agent_done=threading.Event())
    config = {"configurable": {"thread_id": thread_id}}
    if saver in ("redis", "shallow"):
        with cls.from_conn_string(redis_url) as cp:
            cp.setup()
            graph = builder.compile(checkpointer=cp)
            snapshot = graph.get_state(config)
            if not include_pending and snapshot.config:
                snapshot = graph.get_state(_pinned(snapshot))
            return _state_dict(snapshot.values)

    async def run() -> dict:
        async with cls.from_conn_string(redis_url) as cp:
            graph = builder.compile(checkpointer=cp)
            snapshot = await graph.aget_state(config)
            if not include_pending and snapshot.config:
                snapshot = await graph.aget_state(_pinned(snapshot))
            return _state_dict(snapshot.values)

    return asyncio.run(run())
