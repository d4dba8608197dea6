"""The ``teleimagerie`` command line (``serve``; later issues add subcommands)."""

from __future__ import annotations

import argparse
import logging
import sys

from fhir_server.config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env()
    host = args.host or settings.http_host
    port = args.port or settings.http_port
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = settings.store_url or f"embedded SQLite in {settings.data_dir.resolve()}"
    logging.getLogger("teleimagerie").info("FHIR base http://%s:%s/fhir, store: %s",
                                           host, port, store)
    uvicorn.run("fhir_server.http.app:create_asgi", factory=True, host=host, port=port,
                workers=args.workers, log_level=settings.log_level, access_log=args.access_log)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="teleimagerie", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the FHIR server (TELEIMG_* configure it)")
    serve.add_argument("--host", help="override TELEIMG_HTTP_HOST")
    serve.add_argument("--port", type=int, help="override TELEIMG_HTTP_PORT")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false")
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
