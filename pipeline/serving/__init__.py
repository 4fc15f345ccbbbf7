"""Registered models in use: forecast (batch forecasts from a registry alias) and service (the HTTP
service that follows the champion alias).

May import: everything else in the library. Must not import: flows or the CLI.
"""
