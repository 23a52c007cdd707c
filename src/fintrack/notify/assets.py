"""The dashboard's static files, served from a fixed list.

Only the files shipped in ``static/`` exist under ``/static``; a request never reaches the
file system with a name it chose (no traversal, no odd names making ``stat`` fail).
"""

from __future__ import annotations

from typing import Final

from litestar import get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import File

from fintrack.notify.routes import STATIC_DIR

_MEDIA_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
_ASSETS: Final = {
    path.name: path
    for path in STATIC_DIR.iterdir()
    if path.is_file() and path.suffix in _MEDIA_TYPES
}


@get("/static/{file_path:str}", include_in_schema=False)
async def asset(file_path: FromPath[str]) -> File:
    """One of the dashboard's files, or 404."""
    path = _ASSETS.get(file_path)
    if path is None:
        raise NotFoundException(f"no asset {file_path[:80]!r}")
    return File(
        path,
        media_type=_MEDIA_TYPES[path.suffix],
        content_disposition_type="inline",
        headers={"Cache-Control": "no-cache"},
    )
