"""What Ray itself prints into a run's output: only what a user acts on, unless --verbose.

By default a run's terminal (or `ray job logs`) holds our lines and Ray's warnings and errors
from this process, and the errors Ray reports about workers (a worker killed for memory, a node
lost: Ray's error channel, shown whatever `log_to_driver` says). Quieted, through Ray's
documented settings: the workers' own output (`log_to_driver`: Ray Data's per-execution lines
in every training epoch's split coordinator, Ray Train's controller and worker INFO lines, and
its placement-group cleaner, which asks the state API every second and warns when an embedded
Ray, started without a dashboard, has none); Ray Data's INFO lines in this process
(RAY_DATA_LOGGING_CONFIG, ray_data_logging.yaml). Everything still goes to the Ray session's log
files. `--verbose` (`ray.verbose: true`) restores Ray's defaults.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

RAY_DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")

# Ray loggers of this process told to say less
_QUIET_LOGGERS = {
    # "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt
    # out": said at every start of an embedded Ray, which only this machine's processes reach
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
}


def ray_init_options(verbose: bool) -> dict:
    """The logging arguments of ray.init."""
    return {"logging_level": logging.INFO if verbose else logging.WARNING,
            "log_to_driver": verbose}


def quiet_ray(verbose: bool) -> None:
    """Before ray.init in the driver: Ray Data's and Ray's own loggers at the levels above."""
    if verbose:
        return
    if "RAY_DATA_LOGGING_CONFIG" not in os.environ:  # the user's own config wins
        os.environ["RAY_DATA_LOGGING_CONFIG"] = str(RAY_DATA_LOGGING)
        if "ray.data" in sys.modules:
            # Ray Data read its config when it was imported (by the caller, before us)
            from ray.data._internal.logging import configure_logging

            configure_logging()
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    # Ray Train builds its own ExecutionOptions with a field Ray Data deprecated: nothing for
    # our user to change
    warnings.filterwarnings("ignore", message=r"`ExecutionOptions\.exclude_resources` is deprecated")
