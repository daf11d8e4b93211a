"""Serve the champion (and the challenger at a traffic share) of adverse-event-predictor.

    python -m ct_assets.serving [--port 8000] [--challenger-share 0.1] [--reload-seconds 5]
                                [--max-body-bytes 1048576] [--require-auth] [--feature-log-share 0.05]

Binds 127.0.0.1 unless --host says otherwise. The registry is $MLFLOW_TRACKING_URI or the
SQLite store under $CT_HOME. /models and /reload (and /predict with --require-auth) need the bearer
token: $CT_SERVING_TOKEN, else $CT_HOME/secrets/serving.token (generated once, mode 0600).
The URL is printed once /ready answers true. A request with a subject key and no features is scored
from the online feature store ($CT_REDIS_URL, else the SQLite store under $CT_HOME).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.error
import urllib.request


def _announce_when_ready(url: str, line: str, stop: threading.Event) -> None:
    """Print ``line`` when the server answers /ready true (and once why not, while it is not)."""
    said_why = False
    while not stop.wait(0.2):
        try:
            with urllib.request.urlopen(url + "/ready", timeout=2) as resp:
                if json.loads(resp.read()).get("ready") is True:
                    print(line, flush=True)
                    return
        except urllib.error.HTTPError as err:  # 503: listening, no champion yet
            if not said_why:
                reason = json.loads(err.read() or b"{}").get("reason", "not ready")
                print(f"listening on {url}, not ready yet: {reason}", flush=True)
                said_why = True
        except (OSError, ValueError):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ct_assets.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--challenger-share", type=float, default=0.1, help="share of subjects routed to the challenger")
    parser.add_argument("--reload-seconds", type=float, default=5.0, help="how often the aliases are re-read")
    parser.add_argument("--model-name", default=None)
    parser.add_argument("--max-body-bytes", type=int, default=None, help="larger request bodies get a 413 (1 MiB)")
    parser.add_argument("--require-auth", action="store_true", help="/predict needs the bearer token too")
    parser.add_argument("--feature-log-share", type=float, default=0.05,
                        help="share of feature vectors fetched online that the prediction log keeps (skew check)")
    args = parser.parse_args(argv)
    import uvicorn

    from ct_assets import settings
    from ct_assets.serving.server import MAX_BODY_BYTES, create_app

    settings.ct_home()  # owner-only state before anything is written
    from ct_assets.core.privacy import SecretError

    try:
        app = create_app(args.model_name or settings.MODEL_NAME, challenger_share=args.challenger_share,
                         reload_seconds=args.reload_seconds, max_body_bytes=args.max_body_bytes or MAX_BODY_BYTES,
                         require_auth=args.require_auth, feature_log_share=args.feature_log_share)
    except SecretError as err:  # an empty token would let anyone in: refuse to start, in one line
        print(f"python -m ct_assets.serving: {err}", file=sys.stderr)
        return 2
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    line = (f"serving {args.model_name or settings.MODEL_NAME} on http://{args.host}:{args.port} "
            f"(POST /predict, GET /ready /models /metrics /openapi.json); registry {settings.mlflow_tracking_uri()}")
    stop = threading.Event()
    threading.Thread(target=_announce_when_ready, args=(url, line, stop), daemon=True).start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", log_level="warning",
                    access_log=False)
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
