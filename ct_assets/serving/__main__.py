"""Serve the champion (and the challenger at a traffic share) of adverse-event-predictor.

    python -m ct_assets.serving [--port 8000] [--challenger-share 0.1] [--reload-seconds 5]

Binds 127.0.0.1 unless --host says otherwise. The registry is $MLFLOW_TRACKING_URI or the
SQLite store under $CT_HOME.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ct_assets.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--challenger-share", type=float, default=0.1, help="share of subjects routed to the challenger")
    parser.add_argument("--reload-seconds", type=float, default=5.0, help="how often the aliases are re-read")
    parser.add_argument("--model-name", default=None)
    args = parser.parse_args(argv)
    import uvicorn

    from ct_assets import settings
    from ct_assets.serving.server import create_app

    app = create_app(args.model_name or settings.MODEL_NAME, challenger_share=args.challenger_share,
                     reload_seconds=args.reload_seconds)
    print(f"serving {args.model_name or settings.MODEL_NAME} on http://{args.host}:{args.port} "
          f"(POST /predict, GET /ready /models /metrics); registry {settings.mlflow_tracking_uri()}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
