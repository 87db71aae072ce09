"""What a build asks of tuning, checked where it is made: the database, the trials, where
candidates are timed."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class RPCTracker:
    """Where candidates are measured remotely: a TVM RPC tracker and the key of its devices."""

    host: str
    port: int
    key: str

    @staticmethod
    def parse(address: str, key: str) -> RPCTracker:
        """`HOST:PORT` (the `--rpc-tracker` option) and a device key."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--rpc-tracker must be HOST:PORT, got {address!r}")
        if not key:
            raise ValueError("--rpc-tracker needs --rpc-key (the key the device registered)")
        return RPCTracker(host, int(port), key)


@dataclass
class TuningReport:
    """What tuning did for one build."""

    kernels: int  # structurally unique kernels in the module
    reused: int  # of them, tuned in the database before this build
    trials: int  # candidates measured in this build
    seconds: float  # tuning (0 when the database only applies)
    database_bytes: int
    scheduled: int = 0  # kernels built with a schedule from the database
    kept_default: int = 0  # kernels whose tuned schedule did not beat the default by the margin


@dataclass(frozen=True)
class TuningOptions:
    """MetaSchedule tuning for `wv.build`: kernels get their best schedule from the database in
    `database` (a folder), after `trials` measured candidates per kernel it has none for yet
    (0: apply the database only), timed here or on the device behind `rpc`."""

    database: str
    trials: int = 0
    rpc: RPCTracker | None = None

    def __post_init__(self) -> None:
        if self.trials < 0:
            raise ValueError(f"tuning trials must be at least 0, got {self.trials}")
        if self.rpc is not None and not self.trials:
            raise ValueError("an RPC device measures tuning trials: give trials > 0")
        if not self.trials and not os.path.isdir(self.database):
            raise ValueError(
                f"no tuning database at '{self.database}': tune into it first (trials > 0)"
            )

    @staticmethod
    def from_flags(
        trials: int,
        database: str | None,
        rpc_tracker: str | None,
        rpc_key: str | None,
        target: str | dict | None = None,
    ) -> TuningOptions | None:
        """From `wvirt build`'s --tune, --tuning-db, --rpc-tracker and --rpc-key (None: no
        tuning); a problem is named by the flags given. Without --tuning-db, the `target`'s
        default database (see `default_database_folder`): tuned into with --tune, applied
        when it exists."""
        if database is None and target is not None:
            from .database import default_database, default_database_folder

            database = default_database_folder(target) if trials else default_database(target)
        if not (trials or database or rpc_tracker or rpc_key):
            return None
        if trials < 0:
            raise ValueError(f"--tune {trials}: trials must be at least 0")
        if rpc_key and not rpc_tracker:
            raise ValueError("--rpc-key names a device of an RPC tracker: give --rpc-tracker too")
        if rpc_tracker and not trials:
            raise ValueError("--rpc-tracker measures tuning trials: give --tune TRIALS too")
        if database is None:
            raise ValueError("--tune needs --tuning-db: the folder tuning records go to")
        if not trials and not os.path.isdir(database):
            raise ValueError(f"no tuning database at '{database}': tune into it first (--tune)")
        rpc = RPCTracker.parse(rpc_tracker, rpc_key or "") if rpc_tracker else None
        return TuningOptions(database, trials, rpc)
