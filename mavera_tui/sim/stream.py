"""The simulator's event streams: ``POST /responses`` with ``"stream": true`` answered as
the Responses API's server-sent events (``response.created`` ... ``response.output_text.delta``
... ``response.completed``, whose response carries the ``usage``), the deltas spread over
the request's latency, the stream ended early when the client goes away.

:meth:`~mavera_tui.sim.answers.Answering._stream` charges the work and builds the final
response; this module turns that response into events and sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

Event = dict[str, Any]


def response_events(
    final: dict[str, Any], index: int
) -> tuple[list[Event], list[Event], list[Event]]:
    """The events of one streamed response: those sent at once (created, in progress, the
    message and its part added), the text deltas (one per word), and the closing ones
    (text, part and item done; completed with ``final``). ``final`` gets its completed
    message item, as the API's last event carries it."""
    text = final["output"][0]["content"][0]["text"]
    words = [w + " " for w in text.split(" ")]
    words[-1] = words[-1].rstrip()
    msg_id = f"msg_{index}"
    at = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    pending = {**final, "status": "in_progress", "output": [], "usage": None}
    head: list[Event] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {
                "id": msg_id,
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        },
        {
            "type": "response.content_part.added",
            **at,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
    ]
    deltas: list[Event] = [{"type": "response.output_text.delta", **at, "delta": w} for w in words]
    item = {**final["output"][0], "id": msg_id, "status": "completed"}
    item["content"] = [{"type": "output_text", "text": text, "annotations": []}]
    final["output"] = [item]
    tail: list[Event] = [
        {"type": "response.output_text.done", **at, "text": text},
        {"type": "response.content_part.done", **at, "part": item["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]
    return head, deltas, tail


async def send_events(
    send: Any,
    receive: Any,
    headers: list[tuple[bytes, bytes]],
    events: tuple[list[Event], list[Event], list[Event]],
    latency: float,
) -> bool:
    """Send ``events`` (head, deltas, tail) as one ``text/event-stream`` answer, the deltas
    spread over ``latency`` seconds. False when the client went away first (the stream is
    then left unfinished, as a closed connection leaves it)."""
    head, deltas, tail = events
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            msg = await receive()
            if msg.get("type") == "http.disconnect":
                gone.set()
                return

    watcher = asyncio.get_running_loop().create_task(watch())
    seq = itertools.count()

    def frame(ev: Event) -> bytes:
        ev["sequence_number"] = next(seq)
        return f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n".encode()

    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    *headers,
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"".join(map(frame, head)), "more_body": True}
        )
        step = latency / max(1, len(deltas))
        for ev in deltas:
            if step > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), step)
            if gone.is_set():
                return False
            await send({"type": "http.response.body", "body": frame(ev), "more_body": True})
        await send({"type": "http.response.body", "body": b"".join(map(frame, tail))})
        return True
    finally:
        watcher.cancel()
