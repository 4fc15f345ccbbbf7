"""Registered models in use: forecast (batch forecasts from a registry alias) and the HTTP service that follows
the champion alias, one job a module: service (the app assembled, what starts and stops with it), launch
(`cellcast serve` under uvicorn), models (the models served, loaded, polled), context (what every route shares:
token, body, request id, refusal), routes_health / routes_models / routes_forecast (the routers), predict (a
version's forecast of a request), canary (canary and shadow), openapi (the per-model schema); requests and
timestamps (a request checked), problems (the 4xx it answers), swap (which version serves, and the swap), livelog
(every answer logged for the live monitor), metrics (Prometheus).

May import: everything else in the library. Must not import: flows or the CLI.
"""
