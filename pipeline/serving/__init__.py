"""Registered models in use: forecast (batch forecasts from a registry alias) and service (the HTTP
service that follows the champion alias), with what the service is made of: requests and timestamps (a request
checked), problems (the 4xx it answers), swap (which version serves, and the swap), livelog (every answer
logged for the live monitor), metrics (Prometheus).

May import: everything else in the library. Must not import: flows or the CLI.
"""
