"""Storage: one protocol (:mod:`.base`), two implementations (SQLite, MongoDB)."""

from __future__ import annotations

from pathlib import Path

from fhir_server.store.base import Store


def open_store(url: str | None, data_dir: Path) -> Store:
    """``TELEIMG_STORE_URL``: empty/``sqlite:///path`` -> embedded; ``mongodb://…`` -> MongoDB."""
    if url and url.startswith(("mongodb://", "mongodb+srv://", "mongomock://")):
        from fhir_server.store.mongo import MongoStore

        return MongoStore(url)
    from fhir_server.store.sqlite import SqliteStore

    if url and url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.parent.is_dir():  # said once, in one line, not as each child's traceback
            raise ValueError(f"TELEIMG_STORE_URL {url!r}: the directory {path.parent} does "
                             "not exist")
        return SqliteStore(path)
    if url:
        raise ValueError(f"unsupported TELEIMG_STORE_URL {url!r} (sqlite:/// or mongodb://)")
    data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(data_dir / "teleimagerie.db")
