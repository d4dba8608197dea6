"""``/console/``: to the signed-in user's home (the first page of their navigation)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from adapters.console.web import SignedIn, console

router = APIRouter()


@router.get("", name="console-root")
@router.get("/", name="console-home")
def home(request: Request, user: SignedIn) -> Response:
    return RedirectResponse(console(request).home(user), status_code=303)
