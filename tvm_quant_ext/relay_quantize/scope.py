"""The relay-style qconfig object: immutable, a context manager, one stack per thread.

``qconfig(**keys)`` checks every key at once (unknown key: TypeError; a value that cannot run
as relay ran it: ValueError; one that runs differently: RelayDifferenceWarning) and keeps the
QConfig fields it maps to; ``with`` makes it ``current_qconfig()`` until the block ends, as
relay's scope did (nested blocks restore the outer one, also on an exception).
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List

from ..config import QConfig
from .keys import DEFAULTS, RelayValues, qconfig_fields


class RelayQConfig:
    """relay.quantize's QConfig: read keys as attributes (``cfg.calibrate_mode``); ``.config`` is
    the QConfig it maps to, less the layer names (those need the model: ``to_qconfig``)."""

    def __init__(self, **keys):
        unknown = sorted(set(keys) - set(DEFAULTS))
        if unknown:
            raise TypeError(f"relay_quantize.qconfig: unknown key(s) {unknown} (relay ignored "
                            f"unknown keys silently); known keys: {sorted(DEFAULTS)}")
        values = RelayValues({**DEFAULTS, **keys}, given=keys)
        if isinstance(values["skip_conv_layers"], list):
            values["skip_conv_layers"] = tuple(values["skip_conv_layers"])
        fields = qconfig_fields(values)
        object.__setattr__(self, "values", dict(values))
        object.__setattr__(self, "given", values.given)
        object.__setattr__(self, "config", QConfig(**fields))

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"relay qconfig has no key {name!r}; keys: {sorted(DEFAULTS)}")

    def __setattr__(self, name, value):
        raise AttributeError(f"relay qconfig is immutable ({name!r}): make a new qconfig(...)")

    def __enter__(self) -> "RelayQConfig":
        _stack().append(self)
        return self

    def __exit__(self, *exc) -> None:
        _stack().pop()

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.values)

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={self.values[k]!r}" for k in sorted(self.given))
        return f"relay_quantize.qconfig({given})"


_local = threading.local()


def _stack() -> List[RelayQConfig]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


_DEFAULT: List[RelayQConfig] = []  # relay's defaults, made on first use


def current_qconfig() -> RelayQConfig:
    """The qconfig of the innermost ``with qconfig(...)`` block, else relay's defaults."""
    stack = _stack()
    if stack:
        return stack[-1]
    if not _DEFAULT:
        _DEFAULT.append(RelayQConfig())
    return _DEFAULT[0]


def qconfig(**keys) -> RelayQConfig:
    """relay.quantize.qconfig: every relay 0.19 key, with relay's defaults (see the package
    docstring and docs/relay_migration.md for what each maps to)."""
    return RelayQConfig(**keys)
