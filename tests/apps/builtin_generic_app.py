"""An app the Functions worker refuses: a builtin generic inside `func.Out[...]`.

See Azure/azure-functions-python-worker#1034.
"""

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="refused", methods=["POST"])
@app.queue_output(arg_name="work", queue_name="work", connection="AzureWebJobsStorage")
def refused(req: func.HttpRequest, work: func.Out[list[str]]) -> func.HttpResponse:
    work.set(["x"])
    return func.HttpResponse("ok")
