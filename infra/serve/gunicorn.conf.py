"""gunicorn settings for several forecasting-service workers behind one port (docs/operations.md):

    PROMETHEUS_MULTIPROC_DIR=/var/run/cellcast-metrics CELLCAST_SERVE='{"dataset": "elecdemand"}' \
        gunicorn -c infra/serve/gunicorn.conf.py 'cellcast.pipeline.serving.service:app_from_env()'

Each worker loads the champion and polls the alias on its own. PROMETHEUS_MULTIPROC_DIR must be an empty folder
that exists before the workers start (gunicorn: clear it in the start script); /metrics then adds up every
worker's counts, and this file drops a dead worker's live gauges.
"""

import os

bind = os.environ.get("CELLCAST_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CELLCAST_WORKERS", "2"))
worker_class = "uvicorn.workers.UvicornWorker"
graceful_timeout = 30  # SIGTERM: requests in flight get this long (params.yaml serve.graceful_shutdown_s)
timeout = 120  # a worker silent this long is restarted (loading a model takes seconds)
accesslog = None  # /metrics counts the requests


def child_exit(server, worker):
    from cellcast.pipeline.serving.metrics import worker_exited

    worker_exited(worker.pid)
