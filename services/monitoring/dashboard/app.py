"""The dashboard's HTTP routes: one page per view, its JSON under /api, the Evidently reports, and the same
authentication as the gRPC API when it is on (an `x-api-key` or `authorization: Bearer` header, or, for a
browser, the same credential given once on /login and kept in an HttpOnly cookie)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from recsys.common.auth import API_KEY_HEADER, AUTHORIZATION_HEADER, Authenticator, AuthError, PermissionDenied
from recsys.monitoring.dashboard.views import VIEWS, DashboardData

HERE = Path(__file__).parent
SCOPE = "read_monitoring"
COOKIE = "recsys_dashboard_credential"
OPEN_PATHS = ("/healthz", "/login", "/static/")
TITLES = {"overview": "Overview", "experiments": "Experiments", "drift": "Drift", "models": "Models",
          "alerts": "Alerts"}


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """Plotly's own bundle from the installed package: the page needs nothing from the internet."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _credentials(request: Request) -> list[tuple[str, str]]:
    """The request's credentials as gRPC-style metadata (headers first, then the login cookie)."""
    out = [(k, request.headers[k]) for k in (API_KEY_HEADER, AUTHORIZATION_HEADER) if k in request.headers]
    cookie = request.cookies.get(COOKIE, "")
    if not out and cookie:
        out = [(AUTHORIZATION_HEADER, cookie)] if cookie.lower().startswith("bearer ") else [(API_KEY_HEADER, cookie)]
    return out


def create_app(data: DashboardData, authenticator: Authenticator | None = None, secure_cookie: bool = False,
               refresh_s: float = 5.0) -> FastAPI:
    """The dashboard application (read-only)."""
    app = FastAPI(title="recsys monitoring dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        path = request.url.path
        if authenticator is None or any(path == p or (p.endswith("/") and path.startswith(p)) for p in OPEN_PATHS):
            return await call_next(request)
        try:
            authenticator.check(_credentials(request), SCOPE)
        except AuthError as exc:
            status = 403 if isinstance(exc, PermissionDenied) else 401
            if path.startswith("/api/") or path.startswith("/reports/"):
                return JSONResponse({"error": "permission denied" if status == 403 else "unauthenticated",
                                     "reason": exc.reason}, status_code=status)
            return RedirectResponse(f"{request.scope.get('root_path', '')}/login", status_code=303)
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.get("/static/plotly.min.js")
    def plotly() -> Response:
        return Response(plotly_js(), media_type="application/javascript",
                        headers={"cache-control": "public, max-age=86400"})

    @app.get("/static/dashboard.js")
    def dashboard_js() -> FileResponse:
        return FileResponse(HERE / "static" / "dashboard.js", media_type="application/javascript")

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, failed: int = 0) -> Response:
        return templates.TemplateResponse(request, "login.html", {"failed": bool(failed), "views": TITLES,
                                                                  "view": "login"})

    @app.post("/login")
    async def login(request: Request) -> Response:
        # a urlencoded form of one field, read without python-multipart (not otherwise needed)
        credential = parse_qs((await request.body()).decode("utf-8", "replace")).get("credential", [""])[0].strip()
        meta = ([(AUTHORIZATION_HEADER, credential)] if credential.lower().startswith("bearer ")
                else [(API_KEY_HEADER, credential)])
        try:
            if authenticator is not None:
                authenticator.check(meta, SCOPE)
        except AuthError:
            return RedirectResponse("login?failed=1", status_code=303)
        response = RedirectResponse("overview", status_code=303)
        response.set_cookie(COOKIE, credential, httponly=True, samesite="strict", secure=secure_cookie)
        return response

    @app.get("/logout")
    def logout() -> Response:
        response = RedirectResponse("login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> Response:
        return page(request, "overview")

    @app.get("/api/{view}")
    def api(view: str, window_s: int = 3600, limit: int = 100) -> dict[str, Any]:
        if view not in VIEWS:
            raise HTTPException(404, f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
        params: dict[str, Any] = {}
        if view == "experiments":
            params["window_s"] = window_s
        elif view in ("drift", "alerts"):
            params["limit"] = limit
        return data.view(view, **params)

    @app.get("/reports/{report_id}")
    def report(report_id: str) -> FileResponse:
        path = data.report_path(report_id)
        if path is None:
            raise HTTPException(404, f"no drawn report {report_id!r}")
        return FileResponse(path, media_type="text/html")

    @app.get("/{view}", response_class=HTMLResponse)
    def page(request: Request, view: str) -> Response:
        if view not in VIEWS:
            raise HTTPException(404, f"unknown page {view!r}")
        return templates.TemplateResponse(request, "page.html", {
            "view": view, "title": TITLES[view], "views": TITLES, "refresh_ms": int(refresh_s * 1000),
            "auth": authenticator is not None,
        })

    return app
