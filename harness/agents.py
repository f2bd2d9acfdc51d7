#!/usr/bin/env python
"""Write real LangGraph conversations through a real langgraph-checkpoint-redis saver and
record what LangGraph itself says the archive must contain.

Standalone on purpose: only the standard library, langgraph, langchain_core,
langgraph-checkpoint-redis and redis; no Django and no project code. It runs unchanged with
langgraph-checkpoint-redis 0.1.3, 0.2.1 and 0.5.2 (tests/savers/requirements-*.txt,
scripts/saver-venv.sh), on Python 3.11 and 3.12.

    python harness/agents.py --redis-url redis://127.0.0.1:PORT/0 \
        --saver {redis,async,shallow,async_shallow} --prefix PREFIX \
        [--scenarios a,b,...] [--turns N] [--durability sync|async] [--step] --out FILE.json

The Redis needs RedisJSON and RediSearch, DB 0 (scripts/start-redis-stack.sh). The thread
of scenario S is "wa:ñ:PREFIX:S" ("colon" adds more ':' and unicode): use a new prefix per
run, or flush the Redis. Sync savers get setup(); async ones are entered with `async with`
(which runs asetup()).

The chat model is scripted: a BaseChatModel whose answers and tool calls depend only on the
messages it is given (no network). Message, tool-call and checkpoint ids and timestamps
change from run to run; everything else is the same on every run, version and Python.

--step: after every user turn, print "STEP " and the JSON list of the messages LangGraph
shows of the thread at that moment, then wait for a line on stdin (tests/test_mirror.py runs
the archiver between two turns of the bot).

--durability (passed to invoke) defaults to "sync". With LangGraph's own default, "async",
a checkpoint's put() can run after the put_writes() of the step it starts: the full savers
then reset has_writes and hide the step's pending writes from get_state, and the shallow
savers before 0.3.6 delete them. Interrupted threads then differ from run to run; the
program reports it in "notes" and still writes what LangGraph shows.

Scenarios (one thread each; every one runs with all four saver classes):
  react              prebuilt ReAct agent (create_react_agent, state_schema with customer_id
                     and conversation_summary), 2 tools, one turn with two parallel tool
                     calls, one multimodal human message (text + image_url data block).
  summarize          StateGraph chatbot whose `summarize` node, above 6 messages, writes
                     conversation_summary and removes all messages but the last 2
                     (--turns turns of 2 messages: 14 messages by default).
  trim               ReAct agent with a pre_model_hook returning
                     [RemoveMessage(REMOVE_ALL_MESSAGES), *last 4 messages].
  remove             chatbot whose `forget` node removes one earlier message by id.
  edit               chatbot whose `correct` node rewrites an earlier AI message in place.
  interrupt_pending  ReAct agent; the model calls two tools at once, one finishes and one
                     calls interrupt(): left pending, so the finished tool's message is only
                     a pending write (stored without id).
  interrupt_resumed  the same, resumed with Command(resume=...), then one more turn.
  subgraph_interrupt parent StateGraph whose `support` node is a compiled ReAct agent: turn 1
                     completes, turn 2 interrupts as above inside the subgraph and is left
                     pending (its AI and tool messages exist only in the subgraph's
                     checkpoint_ns).
  configurable       customer id only in config["configurable"] (customer_id, user_id), never
                     in the state; the thread's Redis keys are then searched for both values.
  configurable_meta  the same through a subclass of the saver whose put()/aput() first does
                     metadata = get_checkpoint_metadata(config, metadata), as LangGraph's
                     memory, sqlite and postgres savers do.
  colon              two-turn chat on a thread id with several ':' and unicode.
--turns N (default 7) is the number of user turns of react, summarize and trim (at least 4
each); the other scenarios have fixed scripts. All scenarios but the configurable ones put
customer_id ("cust-NNNN") and conversation_id ("conv-PREFIX-SCENARIO") in the state.

Output (--out), JSON:
  {"threads": {thread_id: {
       "scenario", "saver" (class name), "customer_id", "conversation_id", "summary",
       "messages": [{"id", "type", "content" (str or list of blocks), "name",
                     "tool_calls" ([{name, args, id, type}]), "tool_call_id",
                     "first_ts", "checkpoint_ns", "in_state", "stable_id"}, ...],
       "next", "interrupts" (values), "namespaces" ({ns: {found_by, checkpoints,
       live_messages, next, interrupts}}), "metadata_customer_id", "metadata_user_id",
       ["resume"], ["config_in_redis": {keys, customer_id: [where], user_id: [where]}]}},
   "versions": {package: version}, "notes": [...], "problems": [...], "run": {...}}

`messages` is the ordered union of every message LangGraph shows for the thread, computed
only from LangGraph's public API on the same saver:
  1. Snapshots: the root history (get_state_history) and every subgraph namespace's history
     (get_state_history with that checkpoint_ns). Namespaces come from: the checkpoint_ns of
     the entries the root history returns (the Redis savers list every namespace when the ns
     is ""), the subgraph task configs in each root snapshot's `tasks`, and the task states
     of get_state(config, subgraphs=True); a namespace with no checkpoint and no state is
     dropped. Where get_state_history fails (0.2.1 full savers, on any thread with tool
     calls) the namespace's checkpoints are read by following parent_config with get_state;
     history entries without created_at (AsyncShallowRedisSaver) are re-read with get_state.
  2. Sorted by (created_at, checkpoint_id). For each namespace a pseudo-snapshot, its live
     state (get_state, which applies finished tasks' pending writes; for a pending subgraph
     the task state of get_state(subgraphs=True)), goes right after that namespace's newest
     snapshot and carries its time.
  3. Walk in that order: a message id not seen before is appended; its fields are those of the
     last snapshot holding the id (an in-place edit shows its newest content). first_ts is the
     created_at of the first snapshot holding it; checkpoint_ns is "" when it ever appears in
     the root namespace, else the namespace where it first appeared; in_state says whether
     the live state of that namespace (the root for root messages) holds it.
  4. stable_id is false for a message whose id is stored nowhere (a pending write without
     id: get_state makes up a new uuid each call; found by calling it twice). Its "id" is
     written as null: the archive can only hold it without id.
Messages of the sync RedisSaver's history (raw `lc` dicts) and message objects are read
alike. customer_id / conversation_id / summary (conversation_summary) come from the root
live state (null when absent). Each thread is checked against LangGraph's views and the
scenario's design; a failed check goes to "problems" and the exit status is 1 (the file is
still written).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import logging
import re
import sys
import time
import uuid
import warnings
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Optional

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from typing_extensions import TypedDict

with warnings.catch_warnings():  # deprecation notices of langgraph 1.x (create_react_agent)
    warnings.simplefilter("ignore")
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import REMOVE_ALL_MESSAGES, add_messages
    from langgraph.types import Command, interrupt

    try:
        from langgraph.checkpoint.base import get_checkpoint_metadata
    except ImportError:  # not in this langgraph-checkpoint: configurable_meta reports it
        get_checkpoint_metadata = None
    try:
        from langgraph.prebuilt import create_react_agent
        from langgraph.prebuilt.chat_agent_executor import AgentState
    except ImportError as exc:  # every supported langgraph (1.1, 1.2) still ships it
        raise SystemExit(f"langgraph.prebuilt.create_react_agent is missing: {exc}")


class _Findings(logging.Filter):
    """What LangGraph reports while reading the history, counted for the notes (and hidden):
    - "Ignoring invalid packet type <class 'dict'> in pending sends": the sync RedisSaver's
      list() returns pending Send packets as raw dicts, so those snapshots lack the Send tasks
      (create_react_agent's tool calls);
    - "Ignoring unknown node name tools in pending sends": the root history also lists the
      subgraph's checkpoints, which the root graph reads with its own nodes.
    Also (not log records) history entries without created_at and history failures."""

    raw_dict = 0
    unknown_node = 0
    no_created_at = 0
    history_failed: dict = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "invalid packet type" in text:
            _Findings.raw_dict += 1
            return False
        if "unknown node name" in text:
            _Findings.unknown_node += 1
            return False
        return True


SAVERS = ("redis", "async", "shallow", "async_shallow")
SCENARIOS = (
    "react",
    "summarize",
    "trim",
    "remove",
    "edit",
    "interrupt_pending",
    "interrupt_resumed",
    "subgraph_interrupt",
    "configurable",
    "configurable_meta",
    "colon",
)
PACKAGES = (
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-redis",
    "langgraph-prebuilt",
    "langchain-core",
    "redis",
    "redisvl",
)
ROOT_NS = ("", "__empty__")  # the sync shallow saver reports the root ns as "__empty__"

# --------------------------------------------------------------------------- the model

_ANSWERS = (
    "¡Claro! Tu pedido está \"en camino\" 🚚\nLlegará mañana a Málaga.",
    "注文は発送済みです ✅ — l'envío sale hoy; ¿algo más? 😊",
    "Entendido: «cambio de dirección» registrado.\n\tRef: ñandú\\42 “ok”",
    "Gracias por esperar 🙏 Ça va, ça marche — 谢谢！",
    "Lo apunto 📝: 'sin prisa', como pediste.",
)
_CITIES = ("A Coruña", "Sevilla", "Málaga", "東京")


def _text(content: Any) -> str:
    """The text of a message content: a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
    return " ".join(parts)


def _tool_calls_for(text: str) -> list[dict]:
    low = text.lower()
    orders = re.findall(r"ORD-\d+", text)
    calls: list[dict] = []
    if "reembolso" in low and orders:
        args = {"order_id": orders[0], "reason": text[:60]}
        calls.append({"name": "request_refund", "args": args})
    elif "pedido" in low and orders:
        calls.extend({"name": "lookup_order", "args": {"order_id": o}} for o in orders)
    if "horario" in low:
        city = next((c for c in _CITIES if c in text), "Madrid")
        calls.append({"name": "store_hours", "args": {"city": city}})
    for call in calls:
        call["id"] = f"call_{uuid.uuid4().hex[:12]}"
        call["type"] = "tool_call"
    return calls


def scripted_reply(messages: list[BaseMessage], use_tools: bool) -> AIMessage:
    """The deterministic answer to a conversation (ids aside)."""
    system = [m for m in messages if isinstance(m, SystemMessage)]
    convo = [m for m in messages if not isinstance(m, SystemMessage)]
    last = convo[-1] if convo else None
    n = sum(1 for m in convo if isinstance(m, HumanMessage))
    usage_in = sum(len(_text(m.content)) for m in messages)
    if isinstance(last, ToolMessage):
        results = []
        for m in reversed(convo):
            if not isinstance(m, ToolMessage):
                break
            results.append(m)
        lines = [f"• {m.name}: {_text(m.content)}" for m in reversed(results)]
        content: Any = "Esto es lo que encontré 🔎:\n" + "\n".join(lines) + "\n¿Algo más?"
        calls: list[dict] = []
    else:
        said = _text(last.content) if last is not None else ""
        calls = _tool_calls_for(said) if use_tools and isinstance(last, HumanMessage) else []
        if calls:
            content = "Consulto dos cosas a la vez ⏳" if len(calls) > 1 else ""
        elif last is not None and not isinstance(last.content, str):
            content = [
                {"type": "text", "text": "Veo tu foto 🖼️: el paquete llegó dañado."},
                {"type": "text", "text": "Abro una incidencia «prioritaria» — 优先处理。"},
            ]
        else:
            answer = _ANSWERS[(n - 1) % len(_ANSWERS)]
            content = f"Respuesta {n}: {answer}\n(dijiste: «{said[:40]}»)"
            if system:
                content += "\n[con el resumen previo]"
    usage_out = len(_text(content))
    return AIMessage(
        content=content,
        tool_calls=calls,
        response_metadata={
            "finish_reason": "tool_calls" if calls else "stop",
            "model_name": "scripted-1",
        },
        usage_metadata={
            "input_tokens": usage_in,
            "output_tokens": usage_out,
            "total_tokens": usage_in + usage_out,
        },
    )


class ScriptedChatModel(BaseChatModel):
    """A chat model that answers from a script: no network, same messages → same answer."""

    use_tools: bool = True

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> "ScriptedChatModel":
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        message = scripted_reply(messages, self.use_tools)
        return ChatResult(generations=[ChatGeneration(message=message)])


# --------------------------------------------------------------------------- tools


@tool
def lookup_order(order_id: str) -> str:
    """Estado de un pedido por su número (ORD-…)."""
    return json.dumps(
        {"order_id": order_id, "estado": "enviado 🚚", "ciudad": "A Coruña", "nota": "配送中"},
        ensure_ascii=False,
    )


@tool
def store_hours(city: str) -> str:
    """Horario de la tienda de una ciudad."""
    return f"Tienda de {city}: lunes a sábado 9:00–21:00 🕘 (festivos «cerrado»)"


@tool
def request_refund(order_id: str, reason: str) -> str:
    """Reembolso de un pedido; necesita la aprobación de una persona (interrupt)."""
    answer = interrupt({"pregunta": f"¿Apruebo el reembolso de {order_id}? 💶", "motivo": reason})
    return f"Reembolso de {order_id}: {answer}"


# --------------------------------------------------------------------------- graphs


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    customer_id: Optional[str]
    conversation_id: Optional[str]
    conversation_summary: Optional[str]


with warnings.catch_warnings():
    warnings.simplefilter("ignore")

    class BotState(AgentState, total=False):
        customer_id: Optional[str]
        conversation_id: Optional[str]
        conversation_summary: Optional[str]


def _react(model: BaseChatModel, tools: list, checkpointer: Any = None, **kwargs: Any):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_react_agent(
            model,
            tools,
            state_schema=BotState,
            prompt="Eres el asistente de atención al cliente. Responde en español.",
            checkpointer=checkpointer,
            **kwargs,
        )


def _chat_node(model: BaseChatModel):
    def chatbot(state: ChatState, config: RunnableConfig) -> dict:
        prompt: list[BaseMessage] = []
        if state.get("conversation_summary"):
            prompt.append(SystemMessage(f"Resumen previo: {state['conversation_summary']}"))
        if config.get("configurable", {}).get("customer_id"):
            # read the customer from the config, as bots do, without echoing it
            prompt.append(SystemMessage("Cliente identificado; trato de usted."))
        return {"messages": [model.invoke(prompt + list(state["messages"]))]}

    return chatbot


def build_chat(cp: Any):
    model = ScriptedChatModel(use_tools=False)
    g = StateGraph(ChatState)
    g.add_node("chatbot", _chat_node(model))
    g.add_edge(START, "chatbot")
    g.add_edge("chatbot", END)
    return g.compile(checkpointer=cp)


def build_summarize(cp: Any):
    model = ScriptedChatModel(use_tools=False)

    def should_summarize(state: ChatState) -> str:
        return "summarize" if len(state["messages"]) > 6 else END

    def summarize(state: ChatState) -> dict:
        msgs = state["messages"]
        old = state.get("conversation_summary")
        gist = "; ".join(f"{m.type}: {_text(m.content)[:24]}" for m in msgs[:-2])
        summary = (f"{old}\n" if old else "") + f"Resumen ({len(msgs) - 2} mensajes): {gist}"
        return {
            "conversation_summary": summary,
            "messages": [RemoveMessage(id=m.id) for m in msgs[:-2]],
        }

    g = StateGraph(ChatState)
    g.add_node("chatbot", _chat_node(model))
    g.add_node("summarize", summarize)
    g.add_edge(START, "chatbot")
    g.add_conditional_edges("chatbot", should_summarize, ["summarize", END])
    g.add_edge("summarize", END)
    return g.compile(checkpointer=cp)


def build_trim(cp: Any):
    def keep_last_4(state: BotState) -> dict:
        return {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES), *state["messages"][-4:]]}

    return _react(ScriptedChatModel(), [lookup_order, store_hours], cp, pre_model_hook=keep_last_4)


def _last_human(state: ChatState) -> str:
    humans = [m for m in state["messages"] if isinstance(m, HumanMessage)]
    return _text(humans[-1].content)


def _chatbot_unless(cp: Any, model: Any, word: str, name: str, node: Any):
    """The chat bot, except for a turn whose user message says `word`: that turn goes to
    `node` (named `name`) instead."""

    def route(state: ChatState) -> str:
        return name if word in _last_human(state).lower() else "chatbot"

    g = StateGraph(ChatState)
    g.add_node("chatbot", _chat_node(model))
    g.add_node(name, node)
    g.add_conditional_edges(START, route, ["chatbot", name])
    g.add_edge("chatbot", END)
    g.add_edge(name, END)
    return g.compile(checkpointer=cp)


def build_remove(cp: Any):
    model = ScriptedChatModel(use_tools=False)

    def forget(state: ChatState) -> dict:
        target = next(
            m
            for m in state["messages"]
            if isinstance(m, HumanMessage) and "+34" in _text(m.content)
        )
        return {
            "messages": [
                RemoveMessage(id=target.id),
                AIMessage("Hecho: he borrado el mensaje con tu teléfono 🗑️"),
            ]
        }

    return _chatbot_unless(cp, model, "olvida", "forget", forget)


EDITED = "El envío a Canarias es gratis 🎉\n(respuesta corregida: «sin coste»)"


def build_edit(cp: Any):
    model = ScriptedChatModel(use_tools=False)

    def correct(state: ChatState) -> dict:
        msgs = state["messages"]
        target = next(m for m in reversed(msgs[:-1]) if isinstance(m, AIMessage))
        return {
            "messages": [
                AIMessage(id=target.id, content=EDITED),  # same id: replaced in place
                AIMessage("He corregido mi respuesta anterior ✏️"),
            ]
        }

    return _chatbot_unless(cp, model, "corrige", "correct", correct)


def build_react(cp: Any):
    return _react(ScriptedChatModel(), [lookup_order, store_hours], cp)


def build_interrupt(cp: Any):
    return _react(ScriptedChatModel(), [lookup_order, store_hours, request_refund], cp)


def build_subgraph(cp: Any):
    agent = _react(ScriptedChatModel(), [lookup_order, store_hours, request_refund])

    def intake(state: ChatState) -> dict:
        return {}  # a real bot would route or enrich here

    g = StateGraph(ChatState)
    g.add_node("intake", intake)
    g.add_node("support", agent)  # compiled subgraph; shares `messages`; inherits the saver
    g.add_edge(START, "intake")
    g.add_edge("intake", "support")
    g.add_edge("support", END)
    return g.compile(checkpointer=cp)


# --------------------------------------------------------------------------- scripts

IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
MULTIMODAL = [
    {"type": "text", "text": "Mira la foto del paquete 📦: llegó \"aplastado\"\n¿qué hago?"},
    {"type": "image_url", "image_url": {"url": IMAGE}},
]
GENERIC = (
    "¿Dónde está mi pedido ORD-{k}? 🙏",
    "Vale, gracias 😊. ¿Enviáis a 東京?",
    "Mi dirección es \"Calle Ñandú 7\"\n2º izquierda",
    "¿Cuál es el horario en Málaga? 🕘",
    "Perfecto — merci, ça marche ✨",
)
CHITCHAT = (
    "Hola 👋, soy Ana",
    "¿Enviáis a 東京? 🗼",
    "Mi dirección es \"Calle Ñandú 7\"\n2º izquierda",
    "¿Aceptáis devoluciones? «sin ticket»",
    "Vale 😊 — merci",
    "¿Y a Canarias?",
    "Perfecto, 谢谢！",
)
REFUND_TURN = "Quiero un reembolso del pedido ORD-31, llegó roto 💔. ¿Y el horario en Sevilla?"
RESUME = "sí, apruébalo ✅ «reembolso total»"


def _generic(i: int) -> str:
    return GENERIC[i % len(GENERIC)].format(k=100 + i)


def script(scenario: str, turns: int) -> list[Any]:
    """The user turns: a str or content list (one HumanMessage), or ("resume", value)."""
    if scenario == "react":
        fixed: list[Any] = [
            "Hola 👋, ¿dónde está mi pedido ORD-1234?",
            MULTIMODAL,
            "¿Y el horario en A Coruña? Y el pedido ORD-77 también",
            "Gracias, 谢谢！ \"perfecto\"\nAdiós",
        ]
        return fixed + [_generic(i) for i in range(max(0, turns - len(fixed)))]
    if scenario == "summarize":  # 4 turns at least: 8 messages > 6 start a summary
        return [CHITCHAT[i % len(CHITCHAT)] for i in range(max(turns, 4))]
    if scenario == "trim":
        return [_generic(i) for i in range(max(turns, 4))]
    if scenario == "remove":
        return [
            "Hola, soy Ana 👋",
            "Mi teléfono es +34 600 000 000 📞",
            "¿Me llamáis mañana?",
            "Olvida mi teléfono, por favor 🙏",
            "Gracias, ¿algo más que necesitéis?",
        ]
    if scenario == "edit":
        return [
            "¿Cuánto cuesta el envío a Canarias? 🏝️",
            "Corrige tu respuesta anterior: el envío a Canarias es gratis",
            "Gracias «de verdad»",
        ]
    if scenario == "interrupt_pending":
        return ["¿Dónde está mi pedido ORD-31? 🙏", REFUND_TURN]
    if scenario == "interrupt_resumed":
        return ["¿Dónde está mi pedido ORD-31? 🙏", REFUND_TURN, ("resume", RESUME),
                "¡Gracias! ¿Cuándo veré el dinero? 💶"]
    if scenario == "subgraph_interrupt":
        return ["¿Dónde está mi pedido ORD-58? 🙏", REFUND_TURN]
    if scenario in ("configurable", "configurable_meta"):
        return ["Hola, quiero saber mis puntos ⭐", "¿Y caducan? «pregunta seria»"]
    if scenario == "colon":
        return ["Hola: ¿qué tal? 🙂", "Adiós: 再见！"]
    raise ValueError(scenario)


BUILDERS = {
    "react": build_react,
    "summarize": build_summarize,
    "trim": build_trim,
    "remove": build_remove,
    "edit": build_edit,
    "interrupt_pending": build_interrupt,
    "interrupt_resumed": build_interrupt,
    "subgraph_interrupt": build_subgraph,
    "configurable": build_chat,
    "configurable_meta": build_chat,
    "colon": build_chat,
}


def thread_id_for(prefix: str, scenario: str) -> str:
    if scenario == "colon":
        return f"wa:ñ:{prefix}:colon:東京:ü:🙂:a:b"
    return f"wa:ñ:{prefix}:{scenario}"


# --------------------------------------------------------------------------- savers


def saver_class(saver: str) -> type:
    if saver not in SAVERS:
        raise ValueError(f"--saver must be one of {SAVERS}, not {saver!r}")
    with warnings.catch_warnings():  # langgraph 1.1: LangChainPendingDeprecationWarning
        warnings.simplefilter("ignore")
        if saver == "redis":
            from langgraph.checkpoint.redis import RedisSaver as cls
        elif saver == "async":
            from langgraph.checkpoint.redis.aio import AsyncRedisSaver as cls
        elif saver == "shallow":
            from langgraph.checkpoint.redis.shallow import ShallowRedisSaver as cls
        else:
            from langgraph.checkpoint.redis.ashallow import AsyncShallowRedisSaver as cls
    return cls


def metadata_saver_class(base: type) -> type:
    """The saver whose put()/aput() copy the configurable keys into the checkpoint metadata
    with LangGraph's own get_checkpoint_metadata, as its memory/sqlite/postgres savers do."""

    class MetadataSaver(base):  # type: ignore[misc, valid-type]
        def put(self, config, checkpoint, metadata, new_versions):
            metadata = get_checkpoint_metadata(config, metadata)
            return super().put(config, checkpoint, metadata, new_versions)

        async def aput(self, config, checkpoint, metadata, new_versions):
            metadata = get_checkpoint_metadata(config, metadata)
            return await super().aput(config, checkpoint, metadata, new_versions)

    MetadataSaver.__name__ = MetadataSaver.__qualname__ = f"Metadata{base.__name__}"
    return MetadataSaver


class Graph:
    """One compiled graph; sync and async savers behind the same awaitable calls."""

    def __init__(self, graph: Any, is_async: bool, durability: Optional[str] = None):
        self.graph, self.is_async = graph, is_async
        self.kwargs = {"durability": durability} if durability else {}

    async def invoke(self, inp: Any, config: dict) -> Any:
        if self.is_async:
            return await self.graph.ainvoke(inp, config, **self.kwargs)
        return self.graph.invoke(inp, config, **self.kwargs)

    async def state(self, config: dict, subgraphs: bool = False) -> Any:
        if self.is_async:
            return await self.graph.aget_state(config, subgraphs=subgraphs)
        return self.graph.get_state(config, subgraphs=subgraphs)

    async def history(self, config: dict) -> list:
        if self.is_async:
            return [s async for s in self.graph.aget_state_history(config)]
        return list(self.graph.get_state_history(config))


# --------------------------------------------------------------------------- messages


_LC_TYPES = {
    "HumanMessage": "human",
    "AIMessage": "ai",
    "ToolMessage": "tool",
    "SystemMessage": "system",
    "FunctionMessage": "function",
    "ChatMessage": "chat",
    "RemoveMessage": "remove",
}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def norm_message(m: Any) -> Optional[dict]:
    """A message as the archive holds it, from a message object or a serialized `lc` dict
    (the sync RedisSaver's history returns the latter)."""
    if isinstance(m, BaseMessage):
        kind, content, mid = m.type, m.content, m.id
        name = getattr(m, "name", None)
        calls = list(getattr(m, "tool_calls", None) or [])
        call_id = getattr(m, "tool_call_id", None)
    elif isinstance(m, dict) and m.get("lc") == 1 and isinstance(m.get("kwargs"), dict):
        kw = m["kwargs"]
        cls = m.get("id")[-1] if isinstance(m.get("id"), list) and m.get("id") else ""
        kind = kw.get("type") or _LC_TYPES.get(cls, cls)
        content, mid, name = kw.get("content", ""), kw.get("id"), kw.get("name")
        calls, call_id = list(kw.get("tool_calls") or []), kw.get("tool_call_id")
    else:
        return None
    return {
        "id": mid,
        "type": kind,
        "content": _jsonable(content),
        "name": name,
        "tool_calls": [
            {
                "name": tc.get("name"),
                "args": _jsonable(tc.get("args", {})),
                "id": tc.get("id"),
                "type": tc.get("type") or "tool_call",
            }
            for tc in calls
        ],
        "tool_call_id": call_id,
    }


def snap_messages(snapshot: Any) -> list[dict]:
    values = snapshot.values if isinstance(snapshot.values, dict) else {}
    out = [norm_message(m) for m in values.get("messages") or []]
    return [m for m in out if m is not None]


def snap_ns(snapshot: Any) -> str:
    ns = (snapshot.config or {}).get("configurable", {}).get("checkpoint_ns", "") or ""
    return "" if ns in ROOT_NS else ns


def snap_key(snapshot: Any) -> tuple:
    created = snapshot.created_at
    when = datetime.fromisoformat(created) if created else datetime.min
    cid = (snapshot.config or {}).get("configurable", {}).get("checkpoint_id") or ""
    return (when.timestamp() if created else float("-inf"), cid)


def _is_subsequence(small: list, big: list) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


def _task_states(snapshot: Any) -> list[Any]:
    """Subgraph task states (StateSnapshot or config) of a snapshot, nested ones too."""
    out = []
    for task in getattr(snapshot, "tasks", ()) or ():
        state = getattr(task, "state", None)
        if state is None:
            continue
        out.append(state)
        if not isinstance(state, dict):
            out.extend(_task_states(state))
    return out


def _state_ns(state: Any) -> str:
    cfg = state if isinstance(state, dict) else (state.config or {})
    return cfg.get("configurable", {}).get("checkpoint_ns", "") or ""


# --------------------------------------------------------------------------- expectation


async def expected_thread(g: Graph, thread_id: str, notes: list[str]) -> dict:
    """The ordered union of the thread's messages from LangGraph's public API (see top)."""
    root_cfg = {"configurable": {"thread_id": thread_id}}

    def ns_cfg(ns: str) -> dict:
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}

    async def chain(cfg: dict) -> list:
        """The namespace's checkpoints by parent links: pinned get_state from the newest."""
        out = []
        newest = await g.state(cfg)
        link = newest.config
        if not (link or {}).get("configurable", {}).get("checkpoint_id"):
            link = None  # no checkpoint in this namespace
        while link:
            snap = await g.state(link)
            out.append(snap)
            link = snap.parent_config
        return out

    async def history(cfg: dict) -> list:
        out = []
        try:
            listed = await g.history(cfg)
        except Exception as exc:  # e.g. 0.2.1 list() cannot decode base64 pending sends
            if isinstance(exc, ValueError) and str(exc).startswith("Subgraph "):
                raise  # langgraph 1.1: a namespace that names no subgraph of this graph
            key = f"{type(exc).__name__}: {str(exc)[:90]}"
            _Findings.history_failed[key] = _Findings.history_failed.get(key, 0) + 1
            listed = await chain(cfg)
        for s in listed:
            if not s.created_at:
                # AsyncShallowRedisSaver.alist() yields checkpoint["ts"] == "", no channel
                # values and metadata {score, source, step, writes}: the pinned get_state of
                # the same checkpoint (aget_tuple) has them all
                s = await g.state(s.config)
                _Findings.no_created_at += 1
            out.append(s)
        return out

    root_history = await history(root_cfg)
    found_by: dict[str, set] = {}
    snapshots: list[tuple[tuple, str, list[dict], Any]] = []
    for s in root_history:
        ns = snap_ns(s)
        if ns:
            found_by.setdefault(ns, set()).add("root history entry")
        else:
            snapshots.append((snap_key(s), "", snap_messages(s), s))
        for state in _task_states(s):
            if _state_ns(state):
                found_by.setdefault(_state_ns(state), set()).add("history task config")

    live_a = await g.state(root_cfg)
    live_b = await g.state(root_cfg)
    deep_a = await g.state(root_cfg, subgraphs=True)
    deep_b = await g.state(root_cfg, subgraphs=True)
    pending_states: dict[str, tuple[Any, Any]] = {}
    deep_b_states = {_state_ns(s): s for s in _task_states(deep_b)}
    for state in _task_states(deep_a):
        ns = _state_ns(state)
        if not ns:
            continue
        found_by.setdefault(ns, set()).add("get_state(subgraphs=True)")
        if not isinstance(state, dict):
            pending_states[ns] = (state, deep_b_states.get(ns))

    live_states: dict[str, tuple[Any, Any]] = {"": (live_a, live_b)}
    for ns in sorted(found_by):
        try:
            ns_snaps = [s for s in await history(ns_cfg(ns)) if snap_ns(s) == ns]
            if ns in pending_states:
                live = pending_states[ns]
            else:
                live = (await g.state(ns_cfg(ns)), await g.state(ns_cfg(ns)))
        except ValueError:  # langgraph 1.1: "Subgraph ... not found" for a made-up namespace
            ns_snaps, live = [], (None, None)
        if not ns_snaps and not (live[0] and live[0].values):
            # e.g. the sync ShallowRedisSaver lists the root checkpoint with checkpoint_ns
            # "__empty__", so the history snapshot derives task ids (and namespaces) that
            # were never used: "__empty__|support:<wrong task id>"
            notes.append(f"{thread_id}: namespace {ns!r} ({', '.join(sorted(found_by[ns]))}) "
                         "has no checkpoint and no state: ignored")
            del found_by[ns]
            continue
        snapshots.extend((snap_key(s), ns, snap_messages(s), s) for s in ns_snaps)
        live_states[ns] = live
    snapshots.sort(key=lambda item: item[0])

    # stable ids: compare two get_state calls message by message
    unstable: set[str] = set()
    live_msgs: dict[str, list[dict]] = {}
    for ns, (a, b) in live_states.items():
        ma = snap_messages(a)
        mb = snap_messages(b) if b is not None else ma
        if len(ma) != len(mb):
            raise AssertionError(f"get_state twice gave {len(ma)} then {len(mb)} messages ({ns!r})")
        for x, y in zip(ma, mb):
            if x["id"] != y["id"]:
                unstable.add(x["id"])
        live_msgs[ns] = ma

    # pseudo-snapshots: each namespace's live state right after its newest snapshot
    ordered: list[tuple[str, str, list[dict]]] = []  # (created_at, ns, messages)
    newest_index = {}
    for i, (_, ns, _, _) in enumerate(snapshots):
        newest_index[ns] = i
    for i, (_, ns, msgs, s) in enumerate(snapshots):
        ordered.append((s.created_at, ns, msgs))
        for live_ns, idx in newest_index.items():
            if idx == i:
                ordered.append((s.created_at, live_ns, live_msgs[live_ns]))
    for ns in live_msgs:  # a namespace with a live state but no checkpoint (should not happen)
        if ns not in newest_index and live_msgs[ns]:
            notes.append(f"{thread_id}: namespace {ns!r} has a live state but no history")
            ordered.append((live_states[ns][0].created_at, ns, live_msgs[ns]))

    union: dict[str, dict] = {}
    for created_at, ns, msgs in ordered:
        for m in msgs:
            mid = m["id"]
            entry = union.get(mid)
            if entry is None:
                entry = union[mid] = {"first_ts": created_at, "first_ns": ns, "root": False}
            entry["last"] = m
            entry["versions"] = entry.get("versions", 0) + (0 if m == entry.get("prev") else 1)
            entry["prev"] = m
            if ns == "":
                entry["root"] = True

    live_ids = {ns: [m["id"] for m in msgs] for ns, msgs in live_msgs.items()}
    messages = []
    for mid, entry in union.items():
        home = "" if entry["root"] else entry["first_ns"]
        msg = dict(entry["last"])
        msg.update(
            first_ts=entry["first_ts"],
            checkpoint_ns=home,
            in_state=mid in live_ids.get(home, []),
            stable_id=mid not in unstable,
        )
        msg["_key"], msg["_versions"] = mid, entry["versions"]
        if mid in unstable:
            msg["id"] = None
        messages.append(msg)

    values = live_a.values or {}
    namespaces = {
        ns: {
            "found_by": sorted(found_by.get(ns, {"root"})),
            "checkpoints": sum(1 for s in snapshots if s[1] == ns),
            "live_messages": len(live_msgs.get(ns, [])),
            "next": list(live_states[ns][0].next or ()),
            "interrupts": len(live_states[ns][0].interrupts or ()),
        }
        for ns in [""] + sorted(found_by)
    }
    metadata = live_a.metadata or {}
    return {
        "messages": messages,
        "customer_id": values.get("customer_id"),
        "conversation_id": values.get("conversation_id"),
        "summary": values.get("conversation_summary"),
        "next": list(live_a.next or ()),
        "interrupts": [
            _jsonable(i.get("value") if isinstance(i, dict) else getattr(i, "value", i))
            for i in live_a.interrupts or ()
        ],
        "namespaces": namespaces,
        "metadata_customer_id": metadata.get("customer_id"),
        "metadata_user_id": metadata.get("user_id"),
        "_live_ids": live_ids,
        "_root_history": [s for s in root_history if not snap_ns(s)],
    }


# --------------------------------------------------------------------------- Redis search


def _glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?\\])", r"\\\1", text)


def search_redis(url: str, thread_id: str, needles: dict[str, str]) -> dict:
    """Where each needle (a plain value) occurs in the thread's Redis keys: key names, JSON
    documents (every string, and base64 `blob`s decoded), strings, zsets and hashes."""
    import redis

    r = redis.Redis.from_url(url)
    found: dict[str, list[str]] = {name: [] for name in needles}
    # "*{thread}:*": every key of the thread (a shallow root checkpoint key ends with
    # "{thread}:"), not those of a thread whose id merely starts with this one's
    keys = sorted(r.scan_iter(match=("*" + _glob_escape(thread_id) + ":*").encode(), count=1000))

    def check(where: str, data: Any) -> None:
        raw = data.encode() if isinstance(data, str) else data
        for name, needle in needles.items():
            if needle.encode() in raw:
                found[name].append(where)

    def walk(key: str, node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(key, v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(key, v, f"{path}[{i}]")
        elif isinstance(node, str):
            check(f"{key} {path}", node)
            if len(node) >= 8 and len(node) % 4 == 0:
                try:
                    check(f"{key} {path} (base64)", base64.b64decode(node, validate=True))
                except (binascii.Error, ValueError):
                    pass

    checked = 0
    for raw_key in keys:
        key = raw_key.decode()
        kind = r.type(raw_key).decode()
        doc = json.loads(r.execute_command("JSON.GET", raw_key)) if kind == "ReJSON-RL" else None
        if isinstance(doc, dict) and doc.get("thread_id") not in (None, thread_id):
            continue  # another thread's key ("{thread}:..." of a longer thread id)
        checked += 1
        check(f"{key} (key name)", raw_key)
        if kind == "ReJSON-RL":
            walk(key, doc, "$")
        elif kind == "string":
            check(key, r.get(raw_key))
        elif kind == "zset":
            for member in r.zrange(raw_key, 0, -1):
                check(f"{key} (member)", member)
        elif kind == "hash":
            for field, value in r.hgetall(raw_key).items():
                check(f"{key} {field.decode(errors='replace')}", value)
    return {"keys": checked, **{name: sorted(set(w)) for name, w in found.items()}}


# --------------------------------------------------------------------------- checks


def check_thread(scenario: str, saver: str, t: dict, problems: list[str], notes: list[str],
                 tid: str, turns: int):
    """Consistency of the union with LangGraph's views and with the scenario's design."""
    msgs = t["messages"]
    keys = [m["_key"] for m in msgs]
    full = saver in ("redis", "async")  # shallow savers keep only the newest checkpoint

    def fail(text: str) -> None:
        problems.append(f"{tid} [{saver}]: {text}")

    if len(set(keys)) != len(keys):
        fail("duplicate ids in the union")
    for ns, ids in t["_live_ids"].items():
        if not _is_subsequence(ids, keys):
            fail(f"live state of {ns!r} is not a subsequence of the union")
    root_live = t["_live_ids"][""]
    for m in msgs:
        if m["checkpoint_ns"] == "" and (m["_key"] in root_live) != m["in_state"]:
            fail(f"in_state wrong for {m['_key']}")
        if m["_versions"] > 1 and scenario != "edit":
            fail(f"message {m['_key']} changed between snapshots: {m['content']!r}")
    # the root history is one parent chain, newest first
    hist = t["_root_history"]
    if full:
        for newer, older in zip(hist, hist[1:]):
            parent = (newer.parent_config or {}).get("configurable", {}).get("checkpoint_id")
            if parent != older.config["configurable"]["checkpoint_id"]:
                fail("root history is not one parent chain")
                break
    elif len(hist) != 1:
        fail(f"shallow saver history has {len(hist)} root checkpoints")

    by_type = lambda kind: [m for m in msgs if m["type"] == kind]  # noqa: E731
    removed = [m for m in msgs if not m["in_state"]]
    unstable = [m for m in msgs if not m["stable_id"]]
    if scenario not in ("interrupt_pending", "subgraph_interrupt") and unstable:
        fail(f"unexpected messages without stored id: {len(unstable)}")
    if scenario == "summarize":
        n_live = len(root_live)
        if not t["summary"] or "Resumen" not in t["summary"]:
            fail("no conversation_summary")
        if full and len(msgs) != 2 * max(turns, 4):
            fail(f"summarize union has {len(msgs)} messages, expected {2 * max(turns, 4)}")
        if n_live > 6 or (full and len(removed) != len(msgs) - n_live):
            fail(f"summarize live state has {n_live} messages")
    if scenario == "trim":
        if len(root_live) > 6:
            fail(f"trim live state has {len(root_live)} messages")
        if full and not removed:
            fail("trim removed nothing")
    if scenario == "remove":
        phone = [m for m in by_type("human") if "+34" in _text(m["content"])]
        if full and (len(phone) != 1 or phone[0]["in_state"]):
            fail("the removed phone message is not in the union as removed")
        if any(m["in_state"] for m in phone):
            fail("the phone message is still in the live state")
    if scenario == "edit":
        edited = [m for m in msgs if m["content"] == EDITED]
        if len(edited) != 1 or not edited[0]["in_state"]:
            fail("the edited AI message is missing")
        elif full and edited[0]["_versions"] < 2:
            fail("the edited message shows only one version in history")
        elif keys.index(edited[0]["_key"]) != 1:
            fail("the edited message moved from its place")
    if scenario in ("interrupt_pending", "subgraph_interrupt"):
        home = [m for m in msgs if m["checkpoint_ns"] != ""]
        if scenario == "interrupt_pending":
            where = ""
        else:
            where = next((ns for ns, info in t["namespaces"].items() if ns and info["next"]), "")
            if t["next"] != ["support"] or not t["interrupts"]:
                fail(f"subgraph_interrupt: root next={t['next']}, interrupts={t['interrupts']}")
            if any(m["_key"] in root_live for m in home):
                fail("subgraph_interrupt: the root state shows subgraph messages")
        seen = t["namespaces"][where]
        if seen["next"] != ["tools"] or seen["interrupts"] != 1:
            # LangGraph does not see all pending writes of the interrupted step: the saver's
            # put() of the checkpoint ran after put_writes() (durability="async") and reset
            # has_writes (full savers) or deleted the registered writes (shallow savers
            # before 0.3.6). The writes may still be in Redis; the expectation is what
            # LangGraph shows.
            notes.append(f"{tid} [{saver}]: LangGraph sees next={seen['next']} and "
                         f"{seen['interrupts']} interrupt(s) in {where or 'the root'}: pending "
                         "writes of the interrupted step are hidden or lost")
            if [m for m in unstable if m["type"] != "tool"]:
                fail("messages other than tool results without stored id")
        elif len(unstable) != 1 or unstable[0]["type"] != "tool" or not unstable[0]["in_state"]:
            fail(f"{scenario}: the finished tool's pending message is not the one without id")
        elif unstable[0]["checkpoint_ns"] != where:
            fail(f"{scenario}: the pending tool message is not in namespace {where!r}")
        elif scenario == "subgraph_interrupt" and sorted(m["type"] for m in home) != ["ai", "tool"]:
            fail(f"subgraph_interrupt: subgraph-only messages are {[m['type'] for m in home]}")
        if scenario == "interrupt_pending" and (t["next"] and t["next"][0] != "tools" or home):
            fail(f"interrupt_pending: next={t['next']}, subgraph messages={len(home)}")
    if scenario == "interrupt_resumed" and t.get("resume", "").startswith("failed"):
        notes.append(f"{tid} [{saver}]: could not resume; the expectation is the thread as it is")
    elif scenario == "interrupt_resumed":
        if t["next"] or removed:
            fail(f"interrupt_resumed: next={t['next']}, removed={len(removed)}")
        if not any("apruébalo" in _text(m["content"]) for m in by_type("tool")):
            fail("interrupt_resumed: the resumed tool's answer is missing")
    if scenario in ("react", "colon", "configurable", "configurable_meta"):
        if removed:
            fail(f"{len(removed)} messages are not in the live state")
    if scenario == "react":
        if not any(isinstance(m["content"], list) and m["type"] == "human" for m in msgs):
            fail("react: no multimodal human message")
        if not any(len(m["tool_calls"]) == 2 for m in msgs):
            fail("react: no parallel tool calls")
    if scenario in ("configurable", "configurable_meta") and t["customer_id"] is not None:
        fail("customer_id reached the state")
    if scenario not in ("configurable", "configurable_meta") and t["customer_id"] is None:
        fail("customer_id missing from the state")


def signature(t: dict) -> list:
    """The id- and time-free shape of a thread (for comparing runs)."""
    return [
        [m["type"], m["content"], [(c["name"], c["args"]) for c in m["tool_calls"]],
         m["checkpoint_ns"] != "", m["in_state"], m["stable_id"]]
        for m in t["messages"]
    ]


# --------------------------------------------------------------------------- driver


def user_id_for(customer_id: str) -> str:
    """configurable scenarios: "cfgcust-X" -> "cfguser-X" (neither contains the other)."""
    return "cfguser-" + customer_id.split("-", 1)[1]


async def run_scenario(cp: Any, is_async: bool, scenario: str, tid: str, turns: int,
                       customer_id: str, conversation_id: str,
                       durability: Optional[str]) -> tuple[Graph, Optional[str]]:
    g = Graph(BUILDERS[scenario](cp), is_async, durability)
    configurable: dict[str, Any] = {"thread_id": tid}
    in_state: dict[str, Any] = {"customer_id": customer_id, "conversation_id": conversation_id}
    if scenario in ("configurable", "configurable_meta"):
        configurable.update(customer_id=customer_id, user_id=user_id_for(customer_id))
        in_state = {}
    config = {"configurable": configurable}
    if (await g.state(config)).values:
        raise SystemExit(f"thread {tid!r} already has checkpoints: use another --prefix")
    resumed = None
    for turn in script(scenario, turns):
        if isinstance(turn, tuple) and turn[0] == "resume":
            resumed = await resume(g, config, turn[1])
        else:
            await g.invoke({"messages": [HumanMessage(content=turn)], **in_state}, config)
        if STEP:
            await step(g, tid)
    return g, resumed


# --step: after every turn, print what LangGraph shows of the thread now and wait for a line
# on stdin (a test runs the archiver between two turns of the bot).
STEP = False


async def step(g: Graph, tid: str) -> None:
    view = await expected_thread(g, tid, [])
    messages = [
        {k: m[k] for k in ("id", "stable_id", "type", "content", "in_state", "checkpoint_ns")}
        for m in view["messages"]
    ]
    print("STEP " + json.dumps(messages, ensure_ascii=False, default=str), flush=True)
    sys.stdin.readline()


def _interrupt_ids(snapshot: Any) -> list[str]:
    ids = []
    for i in snapshot.interrupts or ():
        iid = i.get("id") if isinstance(i, dict) else getattr(i, "id", None)
        if iid:
            ids.append(iid)
    return ids


async def resume(g: Graph, config: dict, value: Any) -> str:
    """Command(resume=value); if LangGraph cannot read the stored interrupt back (0.1.3
    stores it as a plain dict), Command(resume={interrupt_id: value}). Returns how it went."""
    try:
        await g.invoke(Command(resume=value), config)
        return "Command(resume=value)"
    except Exception as exc:
        first = f"{type(exc).__name__}: {exc}"
    ids = _interrupt_ids(await g.state(config))
    if not ids:
        return f"failed: Command(resume=value) raised {first}; no interrupt id in get_state"
    try:
        await g.invoke(Command(resume={iid: value for iid in ids}), config)
    except Exception as exc:
        return (f"failed: Command(resume=value) raised {first}; Command(resume={{id: value}}) "
                f"raised {type(exc).__name__}: {exc}")
    return f"Command(resume={{interrupt_id: value}}) (Command(resume=value) raised {first})"


async def run_all(args: argparse.Namespace) -> dict:
    base = saver_class(args.saver)
    is_async = args.saver.startswith("async")
    notes: list[str] = []
    problems: list[str] = []
    threads: dict[str, dict] = {}
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    versions["python"] = sys.version.split()[0]

    for index, scenario in enumerate(args.scenarios, 1):
        started = time.monotonic()
        tid = thread_id_for(args.prefix, scenario)
        customer_id = f"cust-{index:04d}"
        conversation_id = f"conv-{args.prefix}-{scenario}"  # unique per thread, like thread ids
        cls = base
        if scenario == "configurable_meta":
            if get_checkpoint_metadata is None:
                notes.append("configurable_meta: langgraph.checkpoint.base has no "
                             "get_checkpoint_metadata in this version; skipped")
                continue
            cls = metadata_saver_class(base)
        if scenario.startswith("configurable"):
            customer_id = f"cfgcust-{index:04d}-{args.prefix}"  # neither contains the other
        if is_async:
            async with cls.from_conn_string(args.redis_url) as cp:  # __aenter__ runs asetup()
                g, resumed = await run_scenario(cp, True, scenario, tid, args.turns, customer_id,
                                                conversation_id, args.durability)
                t = await expected_thread(g, tid, notes)
        else:
            with cls.from_conn_string(args.redis_url) as cp:
                cp.setup()
                g, resumed = await run_scenario(cp, False, scenario, tid, args.turns, customer_id,
                                                conversation_id, args.durability)
                t = await expected_thread(g, tid, notes)
        t["scenario"], t["saver"] = scenario, cls.__name__
        if resumed is not None:
            t["resume"] = resumed
            if resumed != "Command(resume=value)":
                notes.append(f"{tid} [{cls.__name__}]: resume: {resumed}")
        if scenario.startswith("configurable"):
            needles = {"customer_id": customer_id, "user_id": user_id_for(customer_id)}
            where = search_redis(args.redis_url, tid, needles)
            t["config_in_redis"] = where
            notes.append(
                f"{scenario} [{cls.__name__}]: customer_id from config found in "
                f"{len(where['customer_id'])} places, user_id in {len(where['user_id'])} "
                f"(of {where['keys']} keys of the thread); metadata_customer_id="
                f"{t['metadata_customer_id']!r}"
            )
        check_thread(scenario, args.saver, t, problems, notes, tid, args.turns)
        for m in t["messages"]:
            del m["_key"], m["_versions"]
        del t["_live_ids"], t["_root_history"]
        threads[tid] = t
        print(
            f"{scenario:20s} {cls.__name__:28s} {len(t['messages']):3d} messages, "
            f"{sum(m['in_state'] for m in t['messages']):3d} in state, "
            f"{len(t['namespaces']) - 1} subgraph ns, next={t['next']} "
            f"({time.monotonic() - started:.2f}s)",
            flush=True,
        )
    if _Findings.raw_dict:
        notes.append(
            f"get_state_history: {_Findings.raw_dict} pending Send packets came back as raw "
            "dicts and were left out of the history snapshots' tasks (messages are unaffected)"
        )
    for failure, count in _Findings.history_failed.items():
        notes.append(f"get_state_history failed for {count} namespace(s) ({failure}); their "
                     "checkpoints were read by walking parent_config with get_state")
    if _Findings.no_created_at:
        notes.append(
            f"get_state_history: {_Findings.no_created_at} entries had no created_at and no "
            "values (list() returns an empty checkpoint); each was read with a pinned get_state"
        )
    if _Findings.unknown_node:
        notes.append(
            f"get_state_history: {_Findings.unknown_node} pending sends to a subgraph's node "
            "were ignored while the root graph read the subgraph checkpoints its history lists"
        )
    run = {"saver": args.saver, "prefix": args.prefix, "turns": args.turns,
           "durability": args.durability, "scenarios": args.scenarios}
    return {"threads": threads, "versions": versions, "notes": notes, "problems": problems,
            "run": run}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redis-url", required=True, help="redis://HOST:PORT/0 (DB 0: RediSearch)")
    p.add_argument("--saver", required=True, choices=SAVERS)
    p.add_argument("--prefix", required=True, help="part of every thread id of this run")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated, default all: {','.join(SCENARIOS)}")
    p.add_argument("--turns", type=int, default=7,
                   help="user turns of react, summarize and trim (default 7, at least 4)")
    p.add_argument("--durability", choices=("sync", "async"), default="sync",
                   help="passed to invoke() (default sync: with LangGraph's default, async, "
                        "the savers race put() against put_writes() and sometimes hide or "
                        "lose the pending writes of an interrupted step)")
    p.add_argument("--step", action="store_true",
                   help="after every turn, print 'STEP <messages LangGraph shows>' and wait for a line on stdin")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    global STEP
    STEP = args.step
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenarios {unknown}; choose from {','.join(SCENARIOS)}")
    if args.turns < 1:
        p.error("--turns must be at least 1")
    # a command-line run: keep the output readable
    warnings.simplefilter("ignore")  # deprecation notices from langgraph and langchain_core
    logging.getLogger("langgraph.checkpoint.redis").setLevel(logging.ERROR)  # "Invalid ULID"
    logging.getLogger("langgraph").addFilter(_Findings())
    started = time.monotonic()
    result = asyncio.run(run_all(args))
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, ensure_ascii=False, indent=1)
    for note in result["notes"]:
        print("note:", note)
    for problem in result["problems"]:
        print("PROBLEM:", problem, file=sys.stderr)
    print(f"{len(result['threads'])} threads -> {args.out} ({time.monotonic() - started:.1f}s)")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
