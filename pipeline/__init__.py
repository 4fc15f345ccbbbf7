"""cellcast: time series in, recurrent forecasters out. The library: no orchestration in here."""
import os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting made a 2-thread LSTM step up to 80x slower on a 2-core machine
# shared with the Prefect and MLflow servers (bench/README.md). Passive waiting costs little when the
# machine is quiet. Set before torch is imported; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
