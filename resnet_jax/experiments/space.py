"""What a search or a sweep may vary: config keys, each with its values, checked before anything
runs.

    --space learning_rate=loguniform:0.01:1   a float, sampled on a log scale
    --space label_smoothing=uniform:0:0.2     a float, sampled on a linear scale
    --space warmup_epochs=int:0:5             an integer (for integer keys)
    --space model=resnet20,resnet32           a choice, typed as the config's value

Every key must be in the config (resnet_jax/configs/default.py lists them); the ends of every
range and every choice are put into the config and checked as a run would check them, so a
value the training would refuse is refused here, in one line.
"""

from __future__ import annotations

from resnet_jax.errors import UserError


class SpaceError(UserError):
    """A searched or swept key, or its values, that cannot be used."""


def typed_value(flag: str, key: str, text: str, default):
    """`text` as a value of the config key `key`, whose current value is `default`."""
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise SpaceError(f"{flag} {key}: {text!r} is not a boolean")
    if isinstance(default, (int, float)):
        try:
            value = float(text)
        except ValueError:
            raise SpaceError(f"{flag} {key}: {text!r} is not a number") from None
        if isinstance(default, int) and value.is_integer():
            return int(value)
        return value
    if isinstance(default, str):
        return text
    raise SpaceError(f"{flag} {key}: keys of type {type(default).__name__} cannot be varied")


def check_key(flag: str, key: str, config) -> None:
    if key not in config:
        raise SpaceError(f"{flag} {key}: not a config key (every key is listed in "
                         f"resnet_jax/configs/default.py)")


def parse_space(specs: list[str], config) -> dict:
    """['learning_rate=loguniform:0.01:1', ...] -> {key: optuna distribution}, checked."""
    from resnet_jax.experiments.trials import optuna

    distributions = optuna().distributions
    space = {}
    for item in specs:
        key, separator, spec = (part.strip() for part in item.partition("="))
        if not separator or not spec:
            raise SpaceError(f"--space {item!r}: expected KEY=SPEC (loguniform:LOW:HIGH, "
                             f"uniform:LOW:HIGH, int:LOW:HIGH or a comma list of choices)")
        check_key("--space", key, config)
        if key in space:
            raise SpaceError(f"--space {key} is given twice")
        kind, _, bounds = spec.partition(":")
        if kind in ("loguniform", "uniform", "int"):
            space[key] = _range(key, kind, bounds, config[key], distributions)
        else:
            choices = [typed_value("--space", key, v.strip(), config[key])
                       for v in spec.split(",")]
            repeated = sorted({str(c) for i, c in enumerate(choices) if c in choices[:i]})
            if repeated:
                raise SpaceError(f"--space {key}: {', '.join(repeated)} is given twice among "
                                 f"the choices (its trials would train alike)")
            space[key] = distributions.CategoricalDistribution(choices)
    if not space:
        raise SpaceError("give at least one --space KEY=SPEC")
    for key, distribution in space.items():
        check_values(key, _extremes(distribution), config)
    return space


def _range(key: str, kind: str, bounds: str, default, distributions):
    parts = bounds.split(":")
    if len(parts) != 2:
        raise SpaceError(f"--space {key}={kind}:{bounds}: expected {kind}:LOW:HIGH")
    number = (lambda text: typed_value("--space", key, text, 0)) if kind == "int" else float
    try:
        low, high = (number(part) for part in parts)
    except ValueError:
        raise SpaceError(f"--space {key}={kind}:{bounds}: LOW and HIGH must be numbers") from None
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise SpaceError(f"--space {key}: a {kind} range needs a numeric key; {key} is "
                         f"{default!r} (give a comma list of choices)")
    if kind == "int" and not (isinstance(default, int) and isinstance(low, int)
                              and isinstance(high, int)):
        raise SpaceError(f"--space {key}=int:{bounds}: int ranges are for integer keys with "
                         f"integer ends; use uniform: or loguniform: for {key}")
    if kind != "int" and isinstance(default, int):
        raise SpaceError(f"--space {key}: an integer key; use int:LOW:HIGH")
    if not low < high:
        raise SpaceError(f"--space {key}={kind}:{bounds}: LOW must be below HIGH")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"--space {key}={kind}:{bounds}: a log scale needs LOW > 0")
    if kind == "int":
        return distributions.IntDistribution(low, high)
    return distributions.FloatDistribution(low, high, log=kind == "loguniform")


def _extremes(distribution) -> list:
    if hasattr(distribution, "choices"):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def check_values(key: str, values: list, config) -> None:
    """Each value of `key`, put into the config, passes the training's own checks."""
    from resnet_jax.plan import validate_config

    for value in values:
        trial_config = config.copy_and_resolve_references()
        try:
            trial_config[key] = value
            validate_config(trial_config)
        except (TypeError, ValueError) as error:  # a UserError is a ValueError
            raise SpaceError(f"{key}={value!r}: {str(error).splitlines()[0]}") from None
