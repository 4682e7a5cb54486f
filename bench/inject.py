"""mitmproxy addon for bench/run: sets the Authorization header on every request, the
counterpart of an airlockd inject rule (the value is a fixed dummy, not a secret)."""


def request(flow):
    flow.request.headers["Authorization"] = "Bearer " + "x" * 40
