"""cellcast: time series in, recurrent forecasters out. The library: no orchestration in here."""

__version__ = "0.1.0"
