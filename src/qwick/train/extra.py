"""The optional `train` extra: import it on demand and say how to install it when it is missing."""

from __future__ import annotations

import importlib

# Import names of the `train` extra in pyproject.toml that the training code uses.
TRAIN_MODULES = ("transformers", "peft", "accelerate", "tqdm")
INSTALL_HINT = "pip install qwick[train]"


class MissingExtraError(ImportError):
    """A package of the `qwick[train]` extra is not installed."""


def require_train_extra(what: str = "training") -> None:
    """Raise MissingExtraError naming every missing package and the install command."""
    missing = []
    for name in TRAIN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(f"{what} needs the optional training packages ({', '.join(missing)} not installed); "
                                f"install them with: {INSTALL_HINT}")
