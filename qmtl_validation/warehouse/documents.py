"""Documents the pipeline reads from the landing zone: world policies and model cards.

Policies are parsed once per run.

A world without a policy, or whose policy does not parse, gets None: its runs are evaluated with
no policy and can only be ``backtest_only`` (fail closed). The parse error is kept in ``errors``.
A transient read error (timeout, dropped connection, S3 throttling or 5xx) is not a bad document:
it propagates rather than making the world look policy-less.
"""

from __future__ import annotations

from typing import NamedTuple

from qmtl_validation.core.model_cards import ModelCard, ModelCardError, ModelCardRegistry
from qmtl_validation.core.policy import Policy, PolicyError, load_policy
from qmtl_validation.warehouse.landing import LandingZone, is_transient_io_error, list_policies

POLICY_MAX_BYTES = 1024 * 1024
CARD_MAX_BYTES = 1024 * 1024
DEFAULT_PERIODS_PER_YEAR = 252.0


class LoadedPolicy(NamedTuple):
    world_id: str
    version: str
    policy: Policy


class WorldPolicies:
    """Each world's current policy (or the version ``pinned_version`` for ``pinned_world``)."""

    def __init__(self, zone: LandingZone, *, pinned_world: str | None = None, pinned_version: str | None = None):
        self.zone = zone
        self.pinned_world = pinned_world
        self.pinned_version = pinned_version
        self.errors: dict[str, str] = {}
        self._loaded: dict[str, LoadedPolicy | None] = {}

    def versions(self, world_id: str) -> list[str]:
        return [p.policy_version for p in list_policies(self.zone, world_id).policies]

    def get(self, world_id: str) -> LoadedPolicy | None:
        if world_id not in self._loaded:
            self._loaded[world_id] = self._load(world_id)
        return self._loaded[world_id]

    def _load(self, world_id: str) -> LoadedPolicy | None:
        scan = list_policies(self.zone, world_id)
        if world_id == self.pinned_world and self.pinned_version:
            chosen = next((p for p in scan.policies if p.policy_version == self.pinned_version), None)
            if chosen is None:
                self.errors[world_id] = f"world {world_id} has no policy version {self.pinned_version}"
                return None
        else:
            chosen = scan.current().get(world_id)
            if chosen is None:
                self.errors[world_id] = f"world {world_id} has no policy"
                return None
        try:
            text = self.zone.read_bytes(chosen.key, POLICY_MAX_BYTES).decode("utf-8")
            policy = load_policy(text, version=chosen.policy_version)
        except (PolicyError, UnicodeDecodeError, ValueError, OSError) as error:
            if is_transient_io_error(error):
                raise  # a timeout is not a bad policy: fail now, read it again next time
            self.errors[world_id] = f"{chosen.key}: {error}"
            return None
        return LoadedPolicy(world_id, chosen.policy_version, policy)

    def periods_per_year(self, world_id: str) -> float:
        loaded = self.get(world_id)
        return float(loaded.policy.annualization.periods_per_year) if loaded else DEFAULT_PERIODS_PER_YEAR

    def risk_free_rate(self, world_id: str) -> float:
        loaded = self.get(world_id)
        return float(loaded.policy.annualization.risk_free_rate) if loaded else 0.0


class ModelCards:
    """Model cards from the landing zone (``model_cards/<strategy_id>.yaml``).

    A card that does not parse is treated as absent for reports (cards are documentation; a bad
    one must not block validation) and its error is kept in ``errors``.

    Each strategy's card is read once per instance (one asset step): a backfill reports thousands
    of runs of a few dozen strategies, and on S3 every read is a request.
    """

    def __init__(self, zone: LandingZone):
        self.zone = zone
        self.errors: dict[str, str] = {}
        self._registry = ModelCardRegistry("", read_text=self._read_text)
        self._cards: dict[str, ModelCard | None] = {}

    def _read_text(self, relative: str) -> str | None:
        if not self.zone.exists(relative):
            return None
        return self.zone.read_bytes(relative, CARD_MAX_BYTES).decode("utf-8")

    def get(self, strategy_id: str) -> ModelCard | None:
        if strategy_id not in self._cards:
            try:
                self._cards[strategy_id] = self._registry.get(strategy_id)
            except (ModelCardError, UnicodeDecodeError, OSError) as error:
                if is_transient_io_error(error):
                    raise
                self.errors[strategy_id] = str(error)
                self._cards[strategy_id] = None
        return self._cards[strategy_id]
