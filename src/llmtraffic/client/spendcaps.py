"""Spend caps at the client's gateway, per API key (several features), feature or user: the
books of one ``spend_caps`` entry (its meters, and what it refused), shared by the clients of
the features it covers.

A cap is judged when an attempt is sent, on the cost billed so far in the period (the gateway
sees a bill when the response comes back), so attempts already in flight finish and are billed:
the spend may overshoot the cap by them, as LiteLLM's budgets and a provider's own cap do.
"""

from __future__ import annotations

from llmtraffic.config.levers import SpendCap
from llmtraffic.provider.quota import SpendMeter
from llmtraffic.results.recorder import Recorder


class CapBook:
    """One spend cap: a meter per tenant (the key, or each user of each feature), and per
    tenant the requests it refused and the spend it prevented (their baseline cost)."""

    def __init__(self, name: str, cfg: SpendCap, recorder: Recorder) -> None:
        self.name = name
        self.usd = cfg.usd
        self.period = cfg.period
        self.per_user = cfg.per == "user"
        self.recorder = recorder
        self.meters: dict[str, SpendMeter] = {}
        self.refused = 0
        self.prevented = 0.0
        self.spent = 0.0
        self.by_tenant: dict[str, list[float]] = {}  # tenant: [refused, prevented USD]

    def tenant(self, feature: str, user: int) -> str:
        """Whose budget a request of ``feature`` and ``user`` spends: the key's, or the
        user's (named feature/user-N)."""
        return f"{feature}/user-{user}" if self.per_user else self.name

    def meter(self, tenant: str) -> SpendMeter:
        """The meter of ``tenant``, made at its first request."""
        meter = self.meters.get(tenant)
        if meter is None:
            label = f"spend_caps.{self.name}" + (f"/{tenant}" if self.per_user else "")

            def reached(now: float, spent: float) -> None:
                self.recorder.event(now, "quota_exhausted", "", label, "spend_cap", spent)

            def reset(now: float, spent: float) -> None:
                self.recorder.event(now, "quota_reset", "", label, "spend_cap", spent)

            meter = self.meters[tenant] = SpendMeter(self.usd, self.period, reached, reset)
        return meter

    def charge(self, tenant: str, cost: float, now: float) -> None:
        """``tenant``'s request was billed ``cost`` at ``now``."""
        self.spent += cost
        self.meter(tenant).add(cost, now)

    def refuses(self, tenant: str, now: float) -> bool:
        """Whether an attempt of ``tenant`` sent at ``now`` is refused."""
        return self.meter(tenant).exhausted(now)

    def count_refused(self, tenant: str, baseline: float) -> None:
        """A request of ``tenant`` ended failed because this cap refused it: the spend it
        prevented is what the request would have cost on its first attempt (its baseline)."""
        self.refused += 1
        self.prevented += baseline
        row = self.by_tenant.setdefault(tenant, [0, 0.0])
        row[0] += 1
        row[1] += baseline

    def summary(self) -> dict[str, object]:
        """The cap's figures for the run summary (docs/metrics.md, "Cost levers")."""
        return {
            "usd": self.usd,
            "period": self.period,
            "billed_cost": self.spent,
            "refused": self.refused,
            "prevented_cost": self.prevented,
            "tenants": len(self.meters),
            # A list (one entry per tenant it refused), not columns: a per-user cap may have
            # thousands of tenants, which summary.csv leaves out.
            "tenants_refused": [
                {"tenant": t, "refused": int(r[0]), "prevented_cost": r[1]}
                for t, r in sorted(self.by_tenant.items())
            ],
        }
