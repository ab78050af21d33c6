"""Azure Functions entry point: declares the triggers and hands each to `sync/`."""

import typing
from collections.abc import Awaitable, Callable

import azure.functions as func

from sync import admin_api, ingress
from sync.budget import BACKFILL, priority
from sync.nightly import run_nightly
from sync.services import get_services
from sync.settings import Settings
from sync.sweep import run_sweep
from sync.work import BACKFILL_QUEUE, NIGHTLY_SCHEDULE, SWEEP_SCHEDULE, WORK_QUEUE, encode
from sync.worker import Worker

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
STORAGE = "AzureWebJobsStorage"
# The Functions worker accepts only `typing` generics inside `func.Out[...]`: `list[str]` makes it
# refuse the function ("invalid non-type annotation"; Azure/azure-functions-python-worker#1034).
WorkOut = func.Out[typing.List[str]]  # noqa: UP006
Handler = Callable[[func.HttpRequest, Settings, ingress.IngressTables], Awaitable[ingress.Answer]]


async def _ingress(handler: Handler, req: func.HttpRequest, work: WorkOut) -> func.HttpResponse:
    services = await get_services()
    answer = await handler(req, services.settings, ingress.IngressTables(services.processed, services.subscriptions))
    work.set(answer.messages)
    return answer.response


async def _graph_ingress(handler: Handler, req: func.HttpRequest, work: WorkOut) -> func.HttpResponse:
    handshake = ingress.graph_handshake(req)
    return handshake.response if handshake is not None else await _ingress(handler, req, work)


@app.route(route="anny/webhook", methods=["POST"])
@app.queue_output(arg_name="work", queue_name=WORK_QUEUE, connection=STORAGE)
async def anny_webhook(req: func.HttpRequest, work: WorkOut) -> func.HttpResponse:
    return await _ingress(ingress.anny_webhook, req, work)


@app.route(route="graph/notify", methods=["POST"])
@app.queue_output(arg_name="work", queue_name=WORK_QUEUE, connection=STORAGE)
async def graph_notify(req: func.HttpRequest, work: WorkOut) -> func.HttpResponse:
    return await _graph_ingress(ingress.graph_notify, req, work)


@app.route(route="graph/lifecycle", methods=["POST"])
@app.queue_output(arg_name="work", queue_name=WORK_QUEUE, connection=STORAGE)
async def graph_lifecycle(req: func.HttpRequest, work: WorkOut) -> func.HttpResponse:
    return await _graph_ingress(ingress.graph_lifecycle, req, work)


@app.queue_trigger(arg_name="msg", queue_name=WORK_QUEUE, connection=STORAGE)
@app.queue_output(arg_name="work", queue_name=WORK_QUEUE, connection=STORAGE)
async def sync_worker(msg: func.QueueMessage, work: WorkOut) -> None:
    follow_up = await Worker(await get_services()).handle_message(msg.get_body(), msg.id or "",
                                                                  dequeue_count=msg.dequeue_count or 1)
    work.set([encode(w) for w in follow_up])


@app.queue_trigger(arg_name="msg", queue_name=BACKFILL_QUEUE, connection=STORAGE)
@app.queue_output(arg_name="work", queue_name=BACKFILL_QUEUE, connection=STORAGE)
async def sync_backfill(msg: func.QueueMessage, work: WorkOut) -> None:
    follow_up = await Worker(await get_services()).handle_message(msg.get_body(), msg.id or "", BACKFILL_QUEUE,
                                                                  msg.dequeue_count or 1)
    work.set([encode(w) for w in follow_up])


@app.timer_trigger(schedule=NIGHTLY_SCHEDULE, arg_name="timer", run_on_startup=False)
async def nightly(timer: func.TimerRequest) -> None:
    with priority(BACKFILL):  # after live changes, within anny's budget
        await run_nightly(Worker(await get_services()))


@app.timer_trigger(schedule=SWEEP_SCHEDULE, arg_name="timer", run_on_startup=False)
async def sweep(timer: func.TimerRequest) -> None:
    with priority(BACKFILL):
        await run_sweep(Worker(await get_services()))


@app.route(route=f"{admin_api.ROUTE_PREFIX}/{{*path}}", methods=["GET", "POST", "DELETE"],
           auth_level=func.AuthLevel.ADMIN)
async def manage(req: func.HttpRequest) -> func.HttpResponse:
    return await admin_api.handle(req, Worker(await get_services()))
