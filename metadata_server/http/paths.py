"""How the guest API reads a request's path: as AWS IMDS does, by its non-empty segments.

Real IMDS ignores empty segments (`//latest/meta-data/instance-id`, `/latest//user-data`,
`GET ///`) and serves a file asked for with a trailing slash (`placement/availability-zone/`),
and widely used clients send both: the AWS JS SDK v3 (`//latest/...`), botocore's region
fetcher, the `ec2-metadata` tools. aiohttp keeps such a request target as it came (its
parser builds the URL with `URL.build(path=target, encoded=True)`, so `//latest/...` stays
an origin-form path and never becomes an authority) and its router matches that path as
it is, where an empty segment counts: `{version}` cannot match one, so `//latest/...` ended
in the router's own 404 before any guest handler ran, and `/latest//meta-data/...` reached
the EC2 view with a path no tree holds.

So the guest app matches canonical paths only: the non-empty segments joined by single
slashes, no trailing slash. Routes with an exact path stay in the app's own router (the
hot path, `GET /v1/config`, remains aiohttp's dictionary lookup; an exact path can only
ever equal a canonical one). Routes with variables, which would match any path, live
in an inner router behind one resource at the root, `CanonicalPaths`, where every walk
of aiohttp's router ends: it resolves a canonical path in the inner router, and any other
path by resolving its canonical form in the whole router again (a cloned request; only
clients that send odd paths pay for it). The views only ever see canonical paths.

Traversal stays closed: `.` and `..` (also spelled `%2e`) remain segments that no tree or
route has, since nothing resolves them; an encoded slash (`%2F`) would become a separator
inside a route variable once aiohttp decodes it, so a path holding one matches nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn

from aiohttp import web
from yarl import URL

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aiohttp.web_urldispatcher import _InfoDict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def canonical_path(raw_path: str) -> str | None:
    """`raw_path` (still percent-encoded) as IMDS reads it, or None when it holds an
    encoded slash: `//latest//meta-data/` → `/latest/meta-data`, `///` → `/`."""
    if "%2" in raw_path and ("%2f" in raw_path or "%2F" in raw_path):
        return None
    if "//" not in raw_path and (raw_path[-1:] != "/" or raw_path == "/"):
        return raw_path
    return "/" + "/".join(segment for segment in raw_path.split("/") if segment)


class CanonicalPaths(web.AbstractResource):
    """The resource at the root of the guest app's router: every path not matched exactly
    before it, resolved canonically (see the module's docstring)."""

    def __init__(self, router: web.UrlDispatcher) -> None:
        super().__init__()
        self._router = router
        self.routes = web.UrlDispatcher()  # the guest routes with variables

    @property
    def canonical(self) -> str:
        return "/"  # indexed at the root, where the router's walk of every path ends

    async def resolve(
        self, request: web.Request
    ) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        raw = request.rel_url.raw_path
        path = canonical_path(raw)
        if path is None:
            return None, set()
        if path == raw:
            match = await self.routes.resolve(request)  # exact routes were tried already
        else:
            # URL.build, not a string: `URL("//latest/x")` would read `latest` as a host.
            url = URL.build(path=path, query_string=request.rel_url.raw_query_string, encoded=True)
            match = await self._router.resolve(request.clone(rel_url=url))
        error = match.http_exception
        if error is None:
            return match, set()
        if isinstance(error, web.HTTPMethodNotAllowed):
            return None, error.allowed_methods
        return None, set()

    def freeze(self) -> None:
        self.routes.freeze()

    def url_for(self, **kwargs: str) -> URL:
        raise NotImplementedError("guest routes are not reversed into URLs")

    def add_prefix(self, prefix: str) -> NoReturn:
        raise RuntimeError("the guest app is not mounted under a prefix")

    def get_info(self) -> _InfoDict:
        return {"prefix": "/"}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.routes.routes())

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        return iter(self.routes.routes())


class GuestRoutes:
    """Where guest routes are added, `app[GUEST_ROUTES]`: an exact path into the app's
    router, a path with variables into the canonical resource."""

    def __init__(self, app: web.Application) -> None:
        self._exact = app.router
        self._canonical = CanonicalPaths(app.router)
        app.router.register_resource(self._canonical)

    def _router(self, path: str) -> web.UrlDispatcher:
        if canonical_path(path) != path:
            raise ValueError(f"a guest route's path must be canonical: {path!r}")
        return self._canonical.routes if "{" in path else self._exact

    def add_get(self, path: str, handler: Handler) -> None:
        self._router(path).add_get(path, handler)

    def add_put(self, path: str, handler: Handler) -> None:
        self._router(path).add_put(path, handler)

    def add_post(self, path: str, handler: Handler) -> None:
        self._router(path).add_post(path, handler)


GUEST_ROUTES = web.AppKey("guest_routes", GuestRoutes)


def install(app: web.Application) -> GuestRoutes:
    """Make `app` match canonical paths; returns (and keeps as `app[GUEST_ROUTES]`) where
    its guest routes go."""
    app[GUEST_ROUTES] = routes = GuestRoutes(app)
    return routes
