"""Prices on Plan and Status: from the mock Billing Catalog's SKUs, checked against sums
computed by hand; unknown (never a number) without a catalog; a running VM's cost so far."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import kgenv
from conftest import gce_env
from kgenv.testing import MockWorld


def sku(sku_id: str, description: str, family: str, unit: str, nanos: int, usage: str = "OnDemand") -> dict[str, Any]:
    """A SKU in the Cloud Billing Catalog API's shape, offered in us-central1."""
    return {
        "name": f"services/6F81-5844-456A/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {"serviceDisplayName": "Compute Engine", "resourceFamily": family, "resourceGroup": "X", "usageType": usage},
        "serviceRegions": ["us-central1"],
        "pricingInfo": [
            {
                "pricingExpression": {
                    "usageUnit": unit,
                    "tieredRates": [{"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": nanos}}],
                }
            }
        ],
    }


SKUS = [
    sku("A", "N1 Predefined Instance Core running in Americas", "Compute", "h", 31_611_000),
    sku("B", "N1 Predefined Instance Ram running in Americas", "Compute", "GiBy.h", 4_237_000),
    sku("C", "Nvidia Tesla T4 GPU running in Americas", "Compute", "h", 350_000_000),
    sku("D", "Balanced PD Capacity", "Storage", "GiBy.mo", 100_000_000),
]


def priced_env(world: MockWorld) -> kgenv.Env:
    inst = kgenv.Instance(
        project="my-project",
        zones=["us-central1-a"],
        machine_type="n1-standard-8",
        gpu_type="nvidia-tesla-t4",
        gpu_count=1,
        disk_size_gb=200,
        disk_type="pd-balanced",
    )
    return gce_env(world, instance=inst)


def test_without_a_catalog_the_price_is_unknown(world: MockWorld) -> None:
    cost = priced_env(world).plan().cost
    assert cost is not None and cost.machine_type == "n1-standard-8" and cost.region == "us-central1"
    assert cost.date is None
    amounts = [cost.vm_on_demand, cost.vm_spot, cost.total_on_demand, cost.total_spot, cost.per_hour]
    amounts += [d.per_month for d in cost.disks] + [d.per_hour for d in cost.disks]
    assert amounts and all(a is None for a in amounts), amounts
    assert any("no price catalog" in r for r in cost.reasons), cost.reasons
    assert "unknown on demand" in str(cost) and "$" not in str(cost)


def test_plan_prices_match_sums_computed_by_hand(world: MockWorld) -> None:
    world.set_price_catalog(SKUS)
    plan = priced_env(world).plan()
    cost = plan.cost
    assert cost is not None
    # 8 vCPU × 0.031611 = 0.252888; 30 GiB × 0.004237 = 0.12711; T4 0.35 → 0.729998
    assert cost.vm_on_demand == Decimal("0.729998")
    # No spot SKUs in this catalog: unknown, with the reason.
    assert cost.vm_spot is None and any("Preemptible" in r for r in cost.reasons)
    boot, data = cost.disks
    assert (boot.role, boot.size_gb, data.role) == ("boot", 200, "data")
    # 200 GiB × $0.10 = $20 a month → 20 / 730 = 0.027397260274 an hour (to the pico-dollar)
    assert boot.per_month == Decimal("20") and boot.per_hour == Decimal("0.027397260274")
    assert data.per_month == Decimal(data.size_gb) * Decimal("0.1")
    assert cost.total_on_demand == cost.vm_on_demand + boot.per_hour + data.per_hour
    assert cost.per_hour == cost.total_on_demand, "the spec is on demand"
    assert "$0.7300/h on demand" in str(plan)
    assert "$20.00/month" in cost._repr_html_()


def test_status_shows_the_running_vms_cost_so_far(world: MockWorld) -> None:
    world.set_price_catalog(SKUS)
    env = priced_env(world)
    env.up()
    status = env.status()
    assert status.cost is not None and status.cost.vm_on_demand == Decimal("0.729998")
    running = status.running
    assert running is not None and running.per_hour == Decimal("0.729998")
    # The mock's VM started moments ago: so far is the hourly price for those seconds.
    assert running.so_far == (Decimal("0.729998") * running.seconds / 3600).quantize(Decimal("1e-12"))
    assert "running since" in str(status)
    env.stop()
    assert env.status().running is None
