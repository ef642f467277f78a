"""``cnnlab serve``: a web page (draw a digit, or give an image) and a JSON prediction API for a trained run.

The app lives in :mod:`cnnlab.serve.app` (FastAPI), the model side in :mod:`cnnlab.serve.service`, the
command and its listening checks in :mod:`cnnlab.serve.cli`;
images become model input through the run's own preprocessing (:mod:`cnnlab.preprocess`), as with
``cnnlab predict``. FastAPI, uvicorn and torch are imported only when the command runs.

``serve`` is a local tool. It checks that it can listen on ``--host:--port`` before saying so; bound
to loopback it answers only loopback ``Host`` names (no DNS rebinding); ``--token`` (or ``CNNLAB_TOKEN``)
makes the API require a bearer token; idle connections are closed after a few seconds and at most
``LIMIT_CONCURRENCY`` are open at once. For anything beyond one machine, put a reverse proxy in front.
"""
