"""RFC 9457 problem details: every error of the API, naming the field and the bad value."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import StoreUnavailableError, TransientError
from shared.logging import get_logger

log = get_logger("mailintake.api")
PROBLEM_TYPE = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Invalid value",
    429: "Too many requests",
    502: "Bad gateway",
    503: "Service unavailable",
}


class FieldError(BaseModel):
    """One bad value: where it was (`body.port`, `query.limit`), what it was, what is wrong."""

    field: str
    value: Any = None
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []


class ProblemError(Exception):
    """Raised by a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[FieldError] | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors or []
        self.retry_after = retry_after  # seconds, sent as Retry-After


def not_found(what: str, ident: object) -> ProblemError:
    return ProblemError(404, f"no {what} {ident!r}")


def _safe(value: Any) -> Any:
    try:
        return jsonable_encoder(value)
    except (TypeError, ValueError):
        return repr(value)


RETRY_UNAVAILABLE_SECONDS = 5  # what a 503 asks a client to wait before it tries again
SECRET_FIELDS = frozenset(
    {"password", "secret", "client_secret", "refresh_token", "token", "code", "state"}
)


def field_errors(
    exc: ValidationError | RequestValidationError, prefix: str = ""
) -> list[FieldError]:
    """One FieldError per error pydantic found, with the value it refused."""
    found = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        name = ".".join([prefix, *loc] if prefix else loc) or prefix or "body"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        secret = bool(loc) and loc[-1] in SECRET_FIELDS
        value = "***" if secret else _safe(err.get("input"))  # a secret is never echoed
        found.append(FieldError(field=name, value=value, message=message))
    return found


def problem_response(
    status: int,
    detail: str,
    errors: list[FieldError] | None = None,
    *,
    retry_after: int | None = None,
) -> JSONResponse:
    body = Problem(
        title=TITLES.get(status, "Error"), status=status, detail=detail, errors=errors or []
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(retry_after, 1))
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status, media_type=PROBLEM_TYPE, headers=headers
    )


def _detail(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.field}: {e.value!r}: {e.message}" for e in errors)


def install(app: FastAPI) -> None:
    """Answer every error (raised, invalid input, unknown route, store down) as a problem."""

    @app.exception_handler(ProblemError)
    async def _problem(_request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.detail, exc.errors, retry_after=exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc)
        return problem_response(422, _detail(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, str(exc.detail))

    @app.exception_handler(TransientError)
    async def _unavailable(_request: Request, exc: TransientError) -> JSONResponse:
        log.warning("api_service_unavailable", error=str(exc))
        if isinstance(exc, StoreUnavailableError):
            detail = "the store is not reachable; try again"
            return problem_response(503, detail, retry_after=RETRY_UNAVAILABLE_SECONDS)
        return problem_response(503, f"{exc}; try again", retry_after=RETRY_UNAVAILABLE_SECONDS)


def _content() -> dict[str, Any]:
    return {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of the problems a route may answer with."""
    return {
        code: {"model": Problem, "description": TITLES.get(code, "Error"), "content": _content()}
        for code in codes
    }
