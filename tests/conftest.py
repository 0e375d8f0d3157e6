"""Test session setup. Daft and Ray must only ever talk to 127.0.0.1: the settings are made
before either is imported (see hypernodes_daft/_local_only.py)."""

from hypernodes_daft._local_only import keep_local

keep_local()  # DO_NOT_TRACK=1, RAY_USAGE_STATS_ENABLED=0, report URL on 127.0.0.1, HOME
