"""A trivial FunctionApp that exercises every trigger kind the local runner supports."""

from __future__ import annotations

import asyncio
import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
seen: dict[str, list] = {"queue": [], "timer": [], "attempts": []}
gates: dict[str, asyncio.Event] = {}  # a message named "hold-…" runs until its gate opens


@app.route(route="echo/{name}", methods=["POST"])
@app.queue_output(arg_name="out", queue_name="%TRIVIAL_QUEUE%", connection="AzureWebJobsStorage")
async def echo(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    name = req.route_params["name"]
    out.set([json.dumps({"name": name, "body": req.get_body().decode()}), json.dumps({"name": name + "-2"})])
    return func.HttpResponse(f"hello {name}", status_code=202, mimetype="text/plain")


@app.route(route="open", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def open_route(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(dict(req.params)), mimetype="application/json")


@app.route(route="secret", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_route(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin only")


@app.queue_trigger(arg_name="msg", queue_name="%TRIVIAL_QUEUE%", connection="AzureWebJobsStorage")
async def consume(msg: func.QueueMessage) -> None:
    payload = json.loads(msg.get_body())
    seen["attempts"].append((payload["name"], msg.dequeue_count))
    if payload["name"] == "fail-me":
        raise RuntimeError("this message always fails")
    if payload["name"].startswith("hold-"):
        await gates.setdefault(payload["name"], asyncio.Event()).wait()
    seen["queue"].append(payload["name"])


@app.timer_trigger(schedule="*/1 * * * * *", arg_name="timer", run_on_startup=False)
def tick(timer: func.TimerRequest) -> None:
    seen["timer"].append(timer.past_due)
