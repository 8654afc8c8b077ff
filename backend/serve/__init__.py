"""Scale-out on Ray Serve: STT, chat and TTS as separate deployments, the FastAPI app as the ingress.

`backend.serve.app:build_app` is the application builder that `serve run backend/serve/config.yaml`
(or `serve deploy`) imports; the same app, routes and services as `python -m backend.app`, with
each model in its own replicas. Needs `ray[serve]` (requirements-serve.txt).
"""
