"""Serve the web app with waitress (a production WSGI server, not Flask's development server).

    python -m webapp [--host 127.0.0.1] [--port 5000] [--inference-url http://127.0.0.1:8080]
                     [--management-url http://127.0.0.1:8081] [--token-file logs/key_file.json]
                     [--inference-protocol kserve-v1 --models emnist-cnn,emnist-rcnn]

Flags override the environment (EMNIST_WEB_HOST, EMNIST_WEB_PORT, EMNIST_INFERENCE_URL,
EMNIST_MANAGEMENT_URL, EMNIST_TOKEN_FILE, EMNIST_INFERENCE_PROTOCOL, EMNIST_MODELS,
EMNIST_INFERENCE_HOST_HEADER), which overrides the defaults.
"""

from __future__ import annotations

import argparse
import logging
import os

import waitress

from webapp import create_app
from webapp.kserve_client import PROTOCOLS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m webapp",
        description="serve the EMNIST drawing page and JSON API with waitress",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default=env("EMNIST_WEB_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("EMNIST_WEB_PORT", "5000")))
    parser.add_argument(
        "--inference-url", default=env("EMNIST_INFERENCE_URL", "http://127.0.0.1:8080")
    )
    parser.add_argument(
        "--management-url", default=env("EMNIST_MANAGEMENT_URL", "http://127.0.0.1:8081")
    )
    parser.add_argument(
        "--token-file",
        default=env("EMNIST_TOKEN_FILE"),
        help="TorchServe's key_file.json, when it runs with token authorization",
    )
    parser.add_argument(
        "--inference-protocol",
        choices=PROTOCOLS,
        default=env("EMNIST_INFERENCE_PROTOCOL", "torchserve"),
        help="kserve-v1: --inference-url is a KServe endpoint (no management URL used)",
    )
    parser.add_argument(
        "--models",
        default=env("EMNIST_MODELS", ""),
        help="kserve-v1: comma-separated model names, for an endpoint without GET /v1/models",
    )
    parser.add_argument(
        "--inference-host-header",
        default=env("EMNIST_INFERENCE_HOST_HEADER"),
        help="kserve-v1 through an ingress IP: the InferenceService's host name",
    )
    parser.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    app = create_app(
        {
            "INFERENCE_URL": args.inference_url,
            "MANAGEMENT_URL": args.management_url,
            "TOKEN_FILE": args.token_file,
            "INFERENCE_PROTOCOL": args.inference_protocol,
            "MODELS": args.models,
            "INFERENCE_HOST_HEADER": args.inference_host_header,
        }
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.warning("listening on %s: reachable from other machines", args.host)
    served_by = "KServe v1" if args.inference_protocol == "kserve-v1" else "TorchServe"
    print(f"web app on http://{args.host}:{args.port} ({served_by} at {args.inference_url})")
    # waitress reads a whole body (up to 1 GB by default) before the app can refuse it: cut
    # far larger ones off at the socket (413); those just over the limit get the app's JSON 400.
    body_limit = 2 * app.config["MAX_CONTENT_LENGTH"]
    waitress.serve(
        app,
        host=args.host,
        port=args.port,
        threads=args.threads,
        ident="emnist",
        max_request_body_size=body_limit,
    )


if __name__ == "__main__":
    main()
