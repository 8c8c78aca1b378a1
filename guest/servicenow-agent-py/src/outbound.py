"""A small blocking HTTP client over `wasi:http/outgoing-handler@0.2` (the Python twin of
guest/sdk/src/http.rs).

WASI p2 is poll-based: `handle` returns a future-incoming-response, which is waited on through
its pollable; bodies are streams read and written in chunks. Child resources (streams, header
fields) are dropped before their parents, as the component model requires, by closing them
with `with` blocks instead of leaving them to the garbage collector.

Requests carry no credentials: the host matches each against the operator's egress rules,
attaches the user's delegated token where a rule says so and refuses everything else
(`HttpError("denied")`). Setting `authorization`, `cookie` or `host` yourself is refused.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

from componentize_py_types import Err, Ok
from snow import HttpError
from wit_world.imports import outgoing_handler
from wit_world.imports import wasi_http_types as t
from wit_world.imports.streams import StreamError_Closed

_METHODS = {
    "GET": t.Method_Get,
    "HEAD": t.Method_Head,
    "POST": t.Method_Post,
    "PUT": t.Method_Put,
    "DELETE": t.Method_Delete,
    "OPTIONS": t.Method_Options,
    "PATCH": t.Method_Patch,
}


@dataclass
class Response:
    status: int
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """The first header named `name` (case-insensitive)."""
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)


def _code_name(code: object) -> str:
    """`ErrorCode_ConnectionRefused()` → `ConnectionRefused`, like the Rust agent's `{:?}`."""
    name = type(code).__name__
    name = name[len("ErrorCode_") :] if name.startswith("ErrorCode_") else name
    value = getattr(code, "value", None)
    return f"{name}({value!r})" if value is not None else name


def _map_code(code: object) -> HttpError:
    if isinstance(code, t.ErrorCode_HttpRequestDenied):
        return HttpError("denied")
    return HttpError("transport", _code_name(code))


def _split_url(url: str) -> Tuple[t.Scheme, str, str]:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise HttpError("invalid_url", url)
    if scheme.lower() == "http":
        s: t.Scheme = t.Scheme_Http()
    elif scheme.lower() == "https":
        s = t.Scheme_Https()
    else:
        raise HttpError("invalid_url", url)
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=-1)
    authority, path = (rest, "/") if cut < 0 else (rest[:cut], rest[cut:])
    if not authority:
        raise HttpError("invalid_url", url)
    if path.startswith("?"):
        path = "/" + path
    return s, authority, path


def send(method: str, url: str, headers: List[Tuple[str, str]], body: bytes = b"") -> Response:
    """Sends one request and reads the whole response; raises HttpError."""
    scheme, authority, path = _split_url(url)
    try:
        fields = t.Fields.from_list([(k, v.encode()) for k, v in headers])
    except Err as e:
        raise HttpError("header", type(e.value).__name__.replace("HeaderError_", "")) from None
    request = t.OutgoingRequest(fields)
    m = _METHODS.get(method)
    try:
        request.set_method(m() if m is not None else t.Method_Other(method))
        request.set_scheme(scheme)
        request.set_authority(authority)
        request.set_path_with_query(path)
    except Err:
        raise HttpError("invalid_url", f"rejected: {url}") from None
    out_body = request.body()
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        out_body.__exit__(None, None, None)
        raise _map_code(e.value) from None
    with future:
        with out_body.write() as stream:
            for i in range(0, len(body), 4096):
                try:
                    stream.blocking_write_and_flush(body[i : i + 4096])
                except Err as e:
                    raise HttpError("transport", f"writing request body: {e.value!r}") from None
        try:
            t.OutgoingBody.finish(out_body, None)
        except Err as e:
            raise _map_code(e.value) from None
        with future.subscribe() as pollable:
            pollable.block()
        got = future.get()
    if not isinstance(got, Ok) or not isinstance(got.value, Ok):
        if isinstance(got, Ok) and isinstance(got.value, Err):
            raise _map_code(got.value.value)
        raise HttpError("transport", "response unavailable")
    with got.value.value as incoming:
        status = incoming.status()
        with incoming.headers() as fields_in:
            resp_headers = [(k, v.decode("utf-8", "replace")) for k, v in fields_in.entries()]
        incoming_body = incoming.consume()
        chunks = []
        with incoming_body.stream() as stream_in:
            while True:
                try:
                    chunks.append(stream_in.blocking_read(64 * 1024))
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    raise HttpError("transport", e.value.value.to_debug_string()) from None
        t.IncomingBody.finish(incoming_body).__exit__(None, None, None)
    return Response(status, resp_headers, b"".join(chunks))
